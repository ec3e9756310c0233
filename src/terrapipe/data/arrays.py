"""Array helpers for the stores: ``.npy`` files written sample by sample, matrices as Arrow list columns."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class NpyRows:
    """A sample-major ``.npy`` written and rewritten one row (sample) at a time through plain file I/O.

    A writable memmap would do the same, but its touched pages count in the process's resident memory;
    with file I/O, peak memory is one sample whatever the store's size.
    """

    def __init__(self, path: Path, dtype, shape: tuple):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), tuple(shape)
        self.row_items = int(np.prod(shape[1:]))
        self.file = open(path, "w+b")
        np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                         "fortran_order": False, "shape": self.shape})
        self.offset = self.file.tell()
        self.file.truncate(self.offset + self.row_items * self.dtype.itemsize * shape[0])

    def __setitem__(self, row: int, value: np.ndarray) -> None:
        self.file.seek(self.offset + row * self.row_items * self.dtype.itemsize)
        np.ascontiguousarray(value, self.dtype).tofile(self.file)

    def write_rows(self, first: int, block: np.ndarray) -> None:
        """Rows ``first .. first + len(block)`` at once (one seek, one write)."""
        self[first] = block

    def __getitem__(self, row: int) -> np.ndarray:
        self.file.seek(self.offset + row * self.row_items * self.dtype.itemsize)
        return np.fromfile(self.file, self.dtype, self.row_items).reshape(self.shape[1:])

    def close(self) -> None:
        self.file.close()


def fixed_lists(matrix: np.ndarray):
    """A [n, d] float32 matrix as an arrow list<float32> column without going through Python lists."""
    import pyarrow as pa

    n, d = matrix.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * d)
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, np.float32).ravel()))
