"""Raw chips (data/raw/sentinel) -> the imagery training store (data/processed/sentinel).

Store layout, one ``.npy`` per modality, memory-mappable, sample-major so that one sample is one
contiguous read per modality (OlmoEarth's per-sample shapes):

    s2.npy, s1.npy, landsat.npy   float32 [N, H, W, T, C]  normalized, missing = -99999
    worldcover.npy, srtm.npy      float32 [N, H, W, 1, 1]  normalized
    worldcover_class.npy          uint8   [N, H, W]        ESA class codes (labels for later tasks)
    land_use_class.npy            uint8   [N, H, W]        land-use class codes, where the raw data has them
                                                           (the sample world's ground truth, land_use.tif)
    timestamps.npy                int32   [N, T, 3]        (day, month, year) of each timestep: the day of
                                                           the S2 (else Landsat, else S1) acquisition, else 15
    sites.parquet                 row, site_id, aoi_id, split, epsg, x0, y0, latitude, longitude
    stats.json                    per-band mean/std/count from TRAIN sites only, with units
    store.json                    manifest: files, shapes, OlmoEarth names, bands and band sets

Channels C are in the order of the modality registry (terrapipe.modalities: OlmoEarth's band_order,
the band sets concatenated), whatever order params.yaml lists sources.sentinel.s2_bands in.

Values before normalization are physical: S2 as L2A reflectance x 10000 harmonized to the
pre-04.00 baseline (the +1000 offset removed), S1 sigma0 dB, Landsat reflectance fraction and
thermal K, SRTM metres, WorldCover class code.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from terrapipe.data.arrays import NpyRows
from terrapipe.data.normalize import MISSING_VALUE, RunningStats, normalize, stats_to_json
from terrapipe.errors import InputDataError
from terrapipe.modalities import Modality, store_modalities
from terrapipe.parallel import ordered_map, process_pool
from terrapipe.sources.landscape import LAND_USE_FILE

log = logging.getLogger("terrapipe.imagery")


def read_chip(path: Path, modality: Modality, size: int) -> np.ndarray:
    """A raw GeoTIFF as float32 (C, H, W) in physical units, nodata -> MISSING_VALUE.

    Refuses files without a CRS, with other bands than expected or of the wrong size: each would
    silently misplace or mislabel pixels downstream.
    """
    import rasterio
    from rasterio.errors import RasterioError

    fix = "Re-fetch it: `dvc repro -f fetch_sentinel` (or delete the file and run fetch_sentinel)"
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputDataError(path, "has no CRS", fix)
            names = tuple(src.descriptions)
            missing = [b for b in modality.band_order if b not in names]
            if missing:
                raise InputDataError(path, f"band(s) {missing} missing (band descriptions are {list(names)})", fix)
            if (src.height, src.width) != (size, size):
                raise InputDataError(path, f"is {src.height}x{src.width} pixels, expected {size}x{size} "
                                     "(sources.sentinel.chip_size)", fix)
            index = [names.index(b) + 1 for b in modality.band_order]
            data = src.read(index).astype(np.float32)
            nodata = src.nodata
            scales = np.array([src.scales[i - 1] for i in index], np.float32)[:, None, None]
            offsets = np.array([src.offsets[i - 1] for i in index], np.float32)[:, None, None]
    except RasterioError as exc:
        raise InputDataError(path, f"is not a readable GeoTIFF ({exc})", fix) from None
    missing_px = ~np.isfinite(data) if nodata is None or np.isnan(nodata) else (data == nodata) | ~np.isfinite(data)
    data = (data * scales + offsets) * modality.unit_scale
    data[missing_px] = MISSING_VALUE
    return data


def read_labels(path: Path, size: int) -> np.ndarray:
    """A single-band class raster (uint8 (H, W)), refused if it is not on the chip grid."""
    import rasterio
    from rasterio.errors import RasterioError

    fix = "Re-fetch it: `dvc repro -f fetch_sentinel`"
    try:
        with rasterio.open(path) as src:
            if (src.height, src.width) != (size, size) or src.count != 1:
                raise InputDataError(path, f"is {src.count} x {src.height}x{src.width}, expected 1 x {size}x{size}", fix)
            return src.read(1).astype(np.uint8)
    except RasterioError as exc:
        raise InputDataError(path, f"is not a readable GeoTIFF ({exc})", fix) from None


DAY_SOURCES = ("s2", "landsat", "s1")  # whose acquisition day a timestep carries, in order of preference
MID_MONTH = 15


def acquisition_days(months: list, by_site_sensor: dict, site_id: str) -> list[tuple[int, int, int]]:
    """(day, month, year) per timestep: the day a sensor really looked, else mid-month."""
    days = {}
    for sensor in reversed(DAY_SOURCES):  # preferred sensors overwrite
        for scene in by_site_sensor.get((site_id, sensor), []):
            days[(scene.date.year, scene.date.month)] = scene.date.day
    return [(days.get((m.year, m.month), MID_MONTH), m.month, m.year) for m in months]


def site_sample(raw_dir: Path, site_id: str, modality: Modality, scenes, months: list, size: int) -> np.ndarray:
    """One site's (H, W, T, C) array: each acquisition placed at its month, cloud-lost months missing."""
    if not modality.multitemporal:
        chip = read_chip(raw_dir / site_id / f"{modality.key}.tif", modality, size)
        return np.moveaxis(chip, 0, -1)[:, :, None, :]
    out = np.full((size, size, len(months), len(modality.bands)), MISSING_VALUE, np.float32)
    month_index = {(m.year, m.month): t for t, m in enumerate(months)}
    for scene in scenes:
        date = scene.date
        t = month_index.get((date.year, date.month))
        if t is None:
            continue  # an acquisition outside the study window
        out[:, :, t, :] = np.moveaxis(read_chip(raw_dir / scene.path, modality, size), 0, -1)
    return out


def _read_site(job) -> tuple[dict, np.ndarray | None]:
    """One site's samples per modality (and its land-use labels), read inside one GDAL environment."""
    import rasterio

    raw_dir, site_id, selection, scenes, site_month_list, chip_size, with_labels = job
    mods = store_modalities(*selection)  # rebuilt here: registry entries hold mapping proxies, which do not pickle
    with rasterio.Env():
        samples = {m.key: site_sample(raw_dir, site_id, m, scenes[m.key], site_month_list, chip_size) for m in mods}
        labels = read_labels(raw_dir / site_id / LAND_USE_FILE, chip_size) if with_labels else None
    return samples, labels


def build_store(raw_dir: Path, sites, split_of: dict[str, str], sensors, s2_bands, chip_size: int,
                months: int, std_multiplier: float, out_dir: Path) -> dict:
    """Write the store into ``out_dir``; return the stats document.

    Two streaming passes: (1) raw physical values into the memory-mapped arrays while accumulating
    per-band stats over train sites, in site order (worker processes decode the GeoTIFFs, a few sites
    ahead); (2) normalize in place, one site at a time.
    """
    import pandas as pd
    from tqdm import tqdm

    from terrapipe.grid import site_grid
    from terrapipe.study import site_months

    scenes_path = raw_dir / "scenes.csv"
    try:
        scenes = pd.read_csv(scenes_path, parse_dates=["date"])
    except (FileNotFoundError, ValueError, pd.errors.ParserError) as exc:
        raise InputDataError(scenes_path, f"unreadable ({exc})", "Re-run fetch_sentinel") from None
    for column in ("site_id", "sensor", "date", "path"):
        if column not in scenes.columns:
            raise InputDataError(scenes_path, f"missing column '{column}'", "Re-run fetch_sentinel")
    missing_sites = sorted(set(sites["site_id"]) - set(scenes["site_id"]))
    if missing_sites:
        raise InputDataError(scenes_path, f"has no scenes for site(s) {missing_sites[:5]}",
                             "Re-run fetch_sentinel so that it covers the selected sites (study.sites_per_aoi)")
    unknown = sorted(set(sites["site_id"]) - set(split_of))
    if unknown:
        raise InputDataError("data/processed/splits/sites/assignments.parquet", f"no split for site(s) {unknown[:5]}",
                             "Re-run the split@sites stage")
    by_site_sensor = {key: [SimpleNamespace(date=r.date, path=r.path) for r in g.itertuples()]  # picklable rows
                      for key, g in scenes.groupby(["site_id", "sensor"])}
    mods = store_modalities(sensors, s2_bands)
    n = len(sites)
    arrays, stats = {}, {}
    for mod in mods:
        t = months if mod.multitemporal else 1
        arrays[mod.key] = NpyRows(out_dir / f"{mod.key}.npy", np.float32, (n, chip_size, chip_size, t, len(mod.bands)))
        stats[mod.key] = RunningStats(len(mod.bands))
    classes = NpyRows(out_dir / "worldcover_class.npy", np.uint8, (n, chip_size, chip_size))
    with_land_use = all((raw_dir / site_id / LAND_USE_FILE).exists() for site_id in sites["site_id"])
    land_use = NpyRows(out_dir / "land_use_class.npy", np.uint8, (n, chip_size, chip_size)) if with_land_use else None
    timestamps = np.zeros((n, months, 3), np.int32)
    rows = []
    site_list = list(sites.itertuples(index=False))
    jobs = ((raw_dir, site.site_id, (tuple(sensors), tuple(s2_bands)),  # made as the pool asks: flat memory
             {m.key: by_site_sensor.get((site.site_id, m.key), []) for m in mods},
             site_months(site.start_date, months), chip_size, land_use is not None) for site in site_list)
    with process_pool() as pool:  # decoding ~30 small GeoTIFFs per site is the work: one process per core
        samples = ordered_map(pool, _read_site, jobs)
        for i, (site, (site_samples, labels)) in enumerate(tqdm(zip(site_list, samples), total=n,
                                                                  desc="normalize_sentinel", unit="site", mininterval=2)):
            timestamps[i] = acquisition_days(site_months(site.start_date, months), by_site_sensor, site.site_id)
            if land_use is not None:
                land_use[i] = labels
            is_train = split_of[site.site_id] == "train"
            for mod in mods:
                sample = site_samples[mod.key]
                arrays[mod.key][i] = sample
                if is_train:
                    stats[mod.key].update(sample)
                if mod.key == "worldcover":
                    codes = sample[:, :, 0, 0]
                    classes[i] = np.where(codes == MISSING_VALUE, 0, codes)
            grid = site_grid(site.latitude, site.longitude, chip_size)
            rows.append({"row": i, "site_id": site.site_id, "aoi_id": site.aoi_id, "split": split_of[site.site_id],
                         "latitude": site.latitude, "longitude": site.longitude, "epsg": grid.epsg, "x0": grid.x0,
                         "y0": grid.y0})
    if not any(split == "train" for split in map(split_of.get, sites["site_id"])):
        raise InputDataError("data/processed/splits/sites/assignments.parquet", "has no train site",
                             "Hold out fewer sites (split.sites.num_regions / region_size_km)")
    results = {mod.key: stats[mod.key].result() for mod in mods}
    for mod in mods:  # pass 2: normalize in place, one site at a time
        empty = results[mod.key]["count"] == 0
        if empty.any():  # e.g. Landsat Collection 2 Level-2 has no B8, B9, B11
            log.warning("%s band(s) %s have no valid pixel in any train site: they stay missing (-99999)",
                        mod.key, [b for b, e in zip(mod.band_order, empty) if e])
        arr = arrays[mod.key]
        for i in range(n):
            sample = normalize(arr[i], results[mod.key]["mean"], results[mod.key]["std"], std_multiplier)
            sample[..., empty] = MISSING_VALUE
            arr[i] = sample
        arr.close()
    classes.close()
    if land_use is not None:
        land_use.close()
    np.save(out_dir / "timestamps.npy", timestamps)
    pd.DataFrame(rows).to_parquet(out_dir / "sites.parquet", index=False)
    document = {mod.key: stats_to_json(mod.band_order, results[mod.key], units=mod.units,
                                        std_multiplier=std_multiplier, computed_on="train sites")
                for mod in mods}
    manifest = {"layout": "N,H,W,T,C", "missing_value": MISSING_VALUE, "n_samples": n, "chip_size": chip_size,
                "months": months,
                "modalities": {mod.key: {"file": f"{mod.key}.npy", "shape": list(arrays[mod.key].shape),
                                         "olmoearth_name": mod.olmoearth_name, "bands": list(mod.band_order),
                                         "band_sets": [[b.name for b in s.bands] for s in mod.band_sets],
                                         "units": mod.units} for mod in mods}}
    (out_dir / "stats.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "store.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return document
