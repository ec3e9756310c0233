"""Named random streams and the BLAS-free arithmetic every sample-world generator uses.

A stream is keyed by the seed and names (a dataset, a site, a purpose), so datasets never share or
shift each other's draws and the order in which sites are generated does not matter. Generators
never call BLAS (``@``, ``np.dot``): OpenBLAS picks its kernel by CPU and different kernels sum in
different orders, so the same seed would give different bytes on different machines.
"""
from __future__ import annotations

import zlib

import numpy as np


def rng(seed: int, *names: str) -> np.random.Generator:
    """A stream keyed by ``seed`` and ``names``."""
    return np.random.default_rng([seed, *(zlib.crc32(str(n).encode()) for n in names)])


def unit_vectors(seed: int, stream: str, names, dim: int) -> np.ndarray:
    """One fixed random unit vector per name (float32 [len(names), dim]), independent of list order."""
    vectors = np.array([rng(seed, stream, str(n)).standard_normal(dim) for n in names]).reshape(-1, dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a [..., K] and b [K, M] in a fixed order of elementwise operations (no BLAS).

    One multiply-add per k in turn, so the result is the same bits on every CPU and BLAS build.
    """
    a, b = np.asarray(a), np.asarray(b)
    out = np.zeros(a.shape[:-1] + b.shape[1:], np.result_type(a, b))
    for k in range(a.shape[-1]):
        out += a[..., k, None] * b[k]
    return out
