"""Figure for issue 2: reading a batch of 64 multimodal training samples, hot.

    python benchmarks/bench_training_reads.py [--sites-per-aoi 5] [--batches 20]

Builds the processed store for 27 AOIs x sites-per-aoi sites (default 135) in a throwaway copy of the
repository, then measures, in one process:
  - the time per batch of 64 random samples (S2 + S1 + Landsat chips, ERA5 series, WorldCover + SRTM
    maps, timestamps) from the memory-mapped store, after one warm-up pass (hot page cache);
  - the achieved bytes per second as a fraction of this machine's memory-copy bandwidth: np.copyto of a
    buffer of the batch's size with the same number of threads as the reader, timed in rounds
    interleaved with the batch reads so both see the same machine load; target >= 0.5;
  - the speed-up over reading the same samples from the raw GeoTIFFs with rioxarray (and the raw
    ERA5 NetCDF with xarray) and normalizing them with the same statistics; target >= 10x.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
from _common import repo_copy, report, run_measured

BATCH = 64


def memcpy(nbytes: int, threads: int):
    """A plain memory copy of ``nbytes`` split over ``threads`` (the machine's copy bandwidth)."""
    from concurrent.futures import ThreadPoolExecutor
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    pool = ThreadPoolExecutor(threads)
    step = -(-nbytes // threads)
    parts = [slice(k * step, min((k + 1) * step, nbytes)) for k in range(threads)]
    return lambda: list(pool.map(lambda part: np.copyto(dst[part], src[part]), parts))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_raw_batch(repo: Path, sites, indices, stats: dict, months: int, chip: int, era5_stats: dict) -> dict:
    """The baseline: the same samples straight from data/raw with rioxarray / xarray, normalized."""
    import pandas as pd
    import rioxarray
    import xarray as xr

    from terrapipe.data.normalize import MISSING_VALUE, normalize
    from terrapipe.modalities import store_modalities
    from terrapipe.study import site_months

    raw = repo / "data" / "raw" / "sentinel"
    scenes = pd.read_csv(raw / "scenes.csv", parse_dates=["date"])
    out = {}
    for mod in store_modalities(["s2", "s1", "landsat"], stats["s2"]["bands"].keys()):
        t = months if mod.multitemporal else 1
        batch = np.full((len(indices), chip, chip, t, len(mod.bands)), MISSING_VALUE, np.float32)
        for b, i in enumerate(indices):
            site = sites.iloc[i]
            month_of = {(m.year, m.month): k for k, m in enumerate(site_months(site.start_date, months))}
            files = ([(0, raw / site.site_id / f"{mod.key}.tif")] if not mod.multitemporal else
                     [(month_of[(r.date.year, r.date.month)], raw / r.path)
                      for r in scenes[(scenes.site_id == site.site_id) & (scenes.sensor == mod.key)].itertuples()])
            for k, path in files:
                with warnings.catch_warnings():  # "scales differ across bands": expected for Landsat
                    warnings.simplefilter("ignore")
                    da = rioxarray.open_rasterio(path, masked=True)
                n = da.shape[0]
                scales = np.array(da.attrs.get("scales", [da.attrs.get("scale_factor", 1.0)] * n))[:, None, None]
                offsets = np.array(da.attrs.get("offsets", [da.attrs.get("add_offset", 0.0)] * n))[:, None, None]
                values = da.values * scales + offsets
                batch[b, :, :, k, :] = np.moveaxis(np.nan_to_num(values * mod.unit_scale, nan=MISSING_VALUE), 0, -1)
        band_stats = stats[mod.key]["bands"]
        out[mod.key] = normalize(batch, [band_stats[n]["mean"] for n in mod.band_order],
                                 [band_stats[n]["std"] for n in mod.band_order])
    series = []
    for i in indices:
        site = sites.iloc[i]
        ds = xr.open_dataset(next((repo / "data" / "raw" / "era5").glob(f"era5_{site.aoi_id}_*.nc")))
        cell = ds.sel(latitude=site.latitude, longitude=site.longitude, method="nearest")
        series.append(np.stack([cell[v].values for v in ("t2m", "d2m", "sp", "u10", "v10", "tp")], axis=-1))
        ds.close()
    bands = era5_stats["bands"].values()
    out["era5"] = normalize(np.stack(series), [b["mean"] for b in bands], [b["std"] for b in bands])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites-per-aoi", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()

    from terrapipe.data.store import TrainingStore
    from terrapipe.study import load_study

    repo = repo_copy({"study": {"sites_per_aoi": args.sites_per_aoi}})
    run_measured(["dvc", "pull", "-q", "data.dvc"], repo)
    build, _ = run_measured(["dvc", "repro", "normalize_sentinel", "normalize_era5"], repo)
    store = TrainingStore(repo / "data/processed/sentinel", repo / "data/processed/era5")
    n = len(store)
    print(f"built the store for {n} sites in {build:.1f} s ({repo})")
    rng = np.random.default_rng(0)
    batches = [np.sort(rng.choice(n, BATCH, replace=n < BATCH)) for _ in range(args.batches)]
    for arr in store.arrays.values():  # warm-up: page cache and this process's page tables
        np.asarray(arr).sum()
    nbytes = sum(a.nbytes for a in store.batch(batches[0]).values())
    copy = memcpy(nbytes, store.threads)
    copy()
    times, copy_times = [], []
    for idx in batches:  # interleaved: the load of this shared machine drifts within seconds
        times.append(_timed(lambda idx=idx: store.batch(idx)))
        copy_times.append(_timed(copy))
    per_batch, per_copy = statistics.median(times), statistics.median(copy_times)
    bandwidth = nbytes / per_copy
    print(f"batch of {BATCH}: {nbytes / 2**20:.1f} MiB, {per_batch * 1e3:.1f} ms median over {len(times)} batches "
          f"({store.threads} threads); memcpy of the same bytes {per_copy * 1e3:.1f} ms = {bandwidth / 2**30:.2f} GiB/s")
    report("store read bytes/s as fraction of memcpy bandwidth", nbytes / per_batch / bandwidth, "x", 0.5, "higher")

    stats = json.loads((repo / "data/processed/sentinel/stats.json").read_text())
    era5_stats = json.loads((repo / "data/processed/era5/stats.json").read_text())
    sites = load_study(repo / "data/inputs", args.sites_per_aoi).sites
    assert sites["site_id"].tolist() == store.sites["site_id"].tolist()
    manifest = store.manifest
    read_raw_batch(repo, sites, batches[0][:4], stats, manifest["months"], manifest["chip_size"], era5_stats)  # warm
    raw_times = [_timed(lambda idx=idx: read_raw_batch(repo, sites, idx, stats, manifest["months"],
                                                       manifest["chip_size"], era5_stats)) for idx in batches[:2]]
    raw = read_raw_batch(repo, sites, batches[0], stats, manifest["months"], manifest["chip_size"], era5_stats)
    stored = store.batch(batches[0])
    for name in raw:  # the baseline computes the same numbers
        np.testing.assert_allclose(raw[name], stored[name], rtol=1e-4, atol=1e-4)
    raw_per_batch = statistics.median(raw_times)
    print(f"raw GeoTIFF + NetCDF path: {raw_per_batch * 1e3:.0f} ms per batch of {BATCH}")
    report("speed-up of the store over raw GeoTIFFs (rioxarray)", raw_per_batch / per_batch, "x", 10.0, "higher")


if __name__ == "__main__":
    main()
