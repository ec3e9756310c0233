"""Reading the processed training store: batches of multimodal samples straight from memory maps.

One sample is one contiguous slice per modality, so a batch is ``len(batch) x modalities`` memcpy-
speed reads from the page cache into reusable buffers: no decoding, no per-file opens.

``modalities`` holds each stored modality as the registry describes it (terrapipe.modalities), cut to
the bands the store has: its ``band_order`` is the channel order of the array and its
``bandsets_as_indices()`` the token groups. A store written with another band order is refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from terrapipe import paths
from terrapipe.errors import InputDataError
from terrapipe.modalities import ERA5, Modality, modality

SENTINEL_DIR = paths.processed("sentinel")
ERA5_DIR = paths.processed("era5")


class TrainingStore:
    """The imagery store (+ the ERA5 site series, aligned by site) as memory-mapped arrays."""

    def __init__(self, sentinel_dir: str | Path = SENTINEL_DIR, era5_dir: str | Path | None = ERA5_DIR,
                 threads: int = 2):
        import pandas as pd

        sentinel_dir = Path(sentinel_dir)
        manifest_path = sentinel_dir / "store.json"
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise InputDataError(manifest_path, "missing", "Run `dvc repro normalize_sentinel`") from None
        self.sites = pd.read_parquet(sentinel_dir / "sites.parquet")
        self.modalities = {name: _registered(manifest_path, name, spec["bands"])
                           for name, spec in self.manifest["modalities"].items()}
        self.arrays = {name: np.load(sentinel_dir / spec["file"], mmap_mode="r")
                       for name, spec in self.manifest["modalities"].items()}
        self.arrays["timestamps"] = np.load(sentinel_dir / "timestamps.npy", mmap_mode="r")
        if era5_dir is not None:
            era5_dir = Path(era5_dir)
            era5_sites = pd.read_parquet(era5_dir / "sites.parquet")["site_id"].tolist()
            if era5_sites != self.sites["site_id"].tolist():
                raise InputDataError(era5_dir / "sites.parquet", "lists other sites (or another order) than the "
                                     f"imagery store {sentinel_dir}", "Re-run `dvc repro` so both stores are current")
            stats_path = era5_dir / "stats.json"
            variables = list(json.loads(stats_path.read_text())["bands"])
            self.modalities[ERA5.key] = _registered(stats_path, ERA5.key, variables)
            self.arrays[ERA5.key] = np.load(era5_dir / "series.npy", mmap_mode="r")
        self._buffers: dict[tuple, dict[str, np.ndarray]] = {}
        self.threads = max(1, threads)
        self._pool = None

    def __len__(self) -> int:
        return len(self.sites)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Sample indices of one split ('train' / 'test'), or all."""
        rows = self.sites["row"].to_numpy()
        return rows if split is None else rows[(self.sites["split"] == split).to_numpy()]

    def batch(self, indices) -> dict[str, np.ndarray]:
        """Gather samples into per-modality arrays [B, ...]; buffers are reused between equal-size calls.

        The returned arrays are overwritten by the next call of the same size: copy what you keep.
        """
        indices = np.asarray(indices, dtype=np.int64)
        key = (len(indices),)
        if key not in self._buffers:
            self._buffers[key] = {name: np.empty((len(indices),) + arr.shape[1:], arr.dtype)
                                  for name, arr in self.arrays.items()}
        out = self._buffers[key]

        def copy(part: int) -> None:  # numpy releases the GIL while copying, so threads share the work
            for name, arr in self.arrays.items():
                buffer = out[name]
                for j in range(part, len(indices), self.threads):
                    buffer[j] = arr[indices[j]]  # one contiguous slice per sample: ~4x np.take on a memmap

        if self.threads == 1:
            copy(0)
        else:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="store-read")
            list(self._pool.map(copy, range(self.threads)))
        return out

    def iter_batches(self, split: str, batch_size: int, seed: int, *, drop_last: bool = True):
        """Shuffled batches of one split; the order depends only on ``seed`` (deterministic)."""
        idx = np.random.default_rng(seed).permutation(self.indices(split))
        stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self.batch(np.sort(idx[start:start + batch_size]))


def _registered(path: Path, name: str, bands: list[str]) -> Modality:
    """The registry's modality ``name`` cut to ``bands``; refuses unknown names and another band order."""
    fix = "Re-run `dvc repro` to rebuild the stores with the current band registry"
    try:
        mod = modality(name).subset(bands)
    except ValueError as exc:
        raise InputDataError(path, str(exc), fix) from None
    if list(mod.band_order) != list(bands):
        raise InputDataError(path, f"{name} bands {bands} are not in registry order {list(mod.band_order)}", fix)
    return mod
