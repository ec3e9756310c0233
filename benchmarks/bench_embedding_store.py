"""Figure for the DeepEarth embedding store: one batch of 64 random observations, vision (1408-D) and
language (7168-D) as float32, hot and cold, beside a naive reader of the same rows.

    python benchmarks/bench_embedding_store.py [--dtype float16] [--hot 500] [--cold 30] [--naive 5]

Builds a fresh store (in a temporary folder) from data/processed/deepearth and the deepearth split
(`dvc repro split@deepearth` makes them), then measures in one process:
  - hot: median time of ``store.read(rows)`` over --hot batches after 50 warm-up batches; target <= 1 ms
    (the original targeted 50 ms). With torch on one thread, as the deepearth_classify stage reads (its
    training runs single-threaded for reproducibility), and again with torch's default thread count;
  - cold: before each of --cold batches the store is reopened (dropping this process's mappings) and
    os.posix_fadvise(POSIX_FADV_DONTNEED) asks the kernel to drop vision.bin and language.bin from the page
    cache (dropping it all needs root). mincore(2) then counts the files' pages still resident, printed
    beside the figure, so a kernel that ignored the advice shows, and again after the read: readahead
    makes a cold batch of a small store read most of vision.bin, so its time is close to reading the file;
  - naive: the same rows read as a first script would: pandas.read_parquet of observations.parquet, np.load
    of both .npy files, then a Python loop with one boolean filter per observation id.
Each batch of the store is checked against the naive reader's (equal up to float16 rounding).
"""
from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO, report

BATCH = 64
TARGET_MS = 1.0


def resident_share(array: np.ndarray) -> float:
    """Share of ``array``'s pages (a file mapping) in the page cache, by mincore(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    length = array.nbytes
    pages = -(-length // page)
    vector = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(length), vector) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(v & 1 for v in vector) / pages


def drop_cache(*paths: Path) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def naive_batch(processed: Path, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: whole files read per batch, then one filter per id (row by row)."""
    import pandas as pd

    observations = pd.read_parquet(processed / "observations.parquet")
    vision = np.load(processed / "vision_embeddings.npy")
    language = np.load(processed / "language_embeddings.npy")
    vision_rows, language_rows = [], []
    for observation_id in ids:
        row = observations[observations["observation_id"] == observation_id].iloc[0]
        vision_rows.append(vision[row["vision_row"]])
        language_rows.append(language[row["species_index"]])
    return np.stack(vision_rows), np.stack(language_rows)


def main() -> None:
    from terrapipe import paths

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--hot", type=int, default=500, help="timed hot batches (after 50 warm-up ones)")
    parser.add_argument("--cold", type=int, default=30, help="timed cold batches")
    parser.add_argument("--naive", type=int, default=5, help="timed batches of the naive reader")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    processed = REPO / paths.processed("deepearth")
    assignments = REPO / paths.split_dir("deepearth") / "assignments.parquet"
    if not assignments.exists():
        raise SystemExit(f"{assignments} is missing: run `dvc repro split@deepearth` first")
    with tempfile.TemporaryDirectory(prefix="terrapipe-bench-store-") as scratch:
        measure(args, processed, assignments, Path(scratch) / "embedding_store")


def measure(args, processed: Path, assignments: Path, store_dir: Path) -> None:
    import torch

    from terrapipe.data.embedding_store import LANGUAGE_FILE, VISION_FILE, EmbeddingStore, build_store

    started = time.perf_counter()
    manifest = build_store(processed, assignments, store_dir, dtype=args.dtype)
    print(f"built a {args.dtype} store of {manifest['counts']['observations']} observations "
          f"({manifest['vision']['rows']} vision rows x {manifest['vision']['dim']}, {manifest['language']['rows']} "
          f"language rows x {manifest['language']['dim']}) in {time.perf_counter() - started:.1f} s", flush=True)

    store = EmbeddingStore.open(store_dir)
    with_vision = np.flatnonzero(store.vision_offset >= 0)
    rng = np.random.default_rng(args.seed)
    draw = lambda: rng.choice(with_vision, BATCH, replace=False)  # noqa: E731

    default_threads = torch.get_num_threads()
    hot = {}
    for threads in (1, default_threads):
        torch.set_num_threads(threads)
        for _ in range(50):
            store.read(draw())
        hot[threads] = []
        for _ in range(args.hot):
            rows = draw()
            start = time.perf_counter()
            store.read(rows)
            hot[threads].append(time.perf_counter() - start)
    torch.set_num_threads(1)

    files = (store_dir / VISION_FILE, store_dir / LANGUAGE_FILE)
    cold, resident, after = [], [], []
    for _ in range(args.cold):
        store.close()
        drop_cache(*files)
        store = EmbeddingStore.open(store_dir)
        resident.append(max(resident_share(store.vision), resident_share(store.language)))
        rows = draw()
        start = time.perf_counter()
        store.read(rows)
        cold.append(time.perf_counter() - start)
        after.append(resident_share(store.vision))

    naive, tolerance = [], 1e-3 if args.dtype == "float16" else 0.0
    for _ in range(args.naive):
        rows = draw()
        ids = [str(store.index["observation_id"][r]) for r in rows]
        start = time.perf_counter()
        vision, language = naive_batch(processed, ids)
        naive.append(time.perf_counter() - start)
        batch = store.read(rows)
        assert np.allclose(batch.vision, vision, rtol=tolerance, atol=tolerance)
        assert np.allclose(batch.language, language, rtol=tolerance, atol=tolerance)

    hot_ms, cold_ms, naive_ms = (1e3 * statistics.median(t) for t in (hot[1], cold, naive))
    batch_mb = BATCH * (manifest["vision"]["dim"] + manifest["language"]["dim"]) * 4 / 1e6
    print(f"batch of {BATCH}: {batch_mb:.2f} MB of float32 out; hot p90 {1e3 * np.percentile(hot[1], 90):.3f} ms; "
          f"with {default_threads} torch threads: median {1e3 * statistics.median(hot[default_threads]):.3f} ms, "
          f"p90 {1e3 * np.percentile(hot[default_threads], 90):.3f} ms; cold: page-cache share still resident "
          f"after fadvise, median {statistics.median(resident):.2f}; vision.bin resident after one cold batch "
          f"{statistics.median(after):.2f} (kernel readahead)")
    report("hot batch read (1 torch thread)", hot_ms, "ms", TARGET_MS, "lower")
    report("cold batch read (fadvise DONTNEED)", cold_ms, "ms", TARGET_MS, "lower")
    print(f"naive reader (pandas read + row by row), same rows, same run: {naive_ms:.1f} ms per batch = "
          f"{naive_ms / hot_ms:.0f}x the hot store read, {naive_ms / cold_ms:.0f}x the cold one")


if __name__ == "__main__":
    main()
