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
    quality.json                  per modality: missing shares, saturated pixels, fully missing sites and AOIs,
                                  the warnings logged (terrapipe.data.quality)
    raw_files.parquet             one row per (raw file, band): its CRS, origin, pixel size and value summary
                                  (FILE_SCHEMA, BAND_SCHEMA), for the Great Expectations suites

Channels C are in the order of the modality registry (terrapipe.modalities: OlmoEarth's band_order,
the band sets concatenated), whatever order params.yaml lists sources.sentinel.s2_bands in.

Values before normalization are physical: S2 as L2A reflectance x 10000 harmonized to the
pre-04.00 baseline (the +1000 offset removed), S1 sigma0 dB, Landsat reflectance fraction and
thermal K, SRTM metres, WorldCover class code. Every raster must lie on its site's chip grid
(terrapipe.grid.site_grid: CRS, origin and 10 m pixels are checked); nodata and saturated pixels (the
registry's ``Modality.saturated``, 65535 for S2 L2A) are read as missing.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from terrapipe.data.arrays import NpyRows
from terrapipe.data.normalize import MISSING_VALUE, RunningStats, normalize, stats_to_json
from terrapipe.data.quality import VALUE_COLUMNS, FileRows, missing_report, value_summary, write_quality
from terrapipe.errors import InputDataError
from terrapipe.grid import PIXEL_M, SiteGrid
from terrapipe.modalities import Modality, store_modalities
from terrapipe.parallel import ordered_map, process_pool
from terrapipe.sources.landscape import LAND_USE_FILE

log = logging.getLogger("terrapipe.imagery")

REFETCH = "Re-fetch it: `dvc repro -f fetch_sentinel` (or delete the file and run fetch_sentinel)"
GRID_FIX = ("Re-fetch it onto the site grid: `dvc repro -f fetch_sentinel`; a backend must write every raster on "
            "its site's 10 m UTM grid (terrapipe.grid.site_grid), never reprojected or relabelled")
PIXEL_TOLERANCE_M = 1e-6
# raw_files.parquet: one row per (file, band), what the reader saw (see terrapipe.data.quality).
FILE_SCHEMA = {"file": "str", "site_id": "str", "aoi_id": "str", "sensor": "str", "date": "str", "epsg": "int64",
               "expected_epsg": "int64", "x0": "float64", "y0": "float64", "expected_x0": "float64",
               "expected_y0": "float64", "pixel_size_x": "float64", "pixel_size_y": "float64", "height": "int64",
               "width": "int64"}
BAND_SCHEMA = {"band": "str", "units": "str", **{name: "float64" for name in VALUE_COLUMNS},
               "missing_share": "float64", "saturated_share": "float64"}


@dataclass(frozen=True)
class Chip:
    """One raster as read: its values and what the per-file table reports about the file."""
    data: np.ndarray        # float32 (C, H, W) physical units, MISSING_VALUE where nodata, saturated or non-finite
    saturated: np.ndarray   # int64 (C,) saturated pixels per band
    epsg: int | None        # the file's (None: no EPSG code, possible only when read without a site grid)
    x0: float
    y0: float
    pixel_size_x: float
    pixel_size_y: float


def _epsg(crs) -> int | None:
    """The CRS's EPSG code if it has one. Identifying a CRS is a search of PROJ's database, about a tenth of
    a chip's read, so it runs once per distinct WKT rather than once per file."""
    return _epsg_of_wkt(crs.wkt)


@functools.lru_cache(maxsize=256)
def _epsg_of_wkt(wkt: str) -> int | None:
    from rasterio.crs import CRS

    authority = CRS.from_wkt(wkt).to_authority()
    return int(authority[1]) if authority and authority[0] == "EPSG" else None


def _grid_problems(src, epsg: int | None, expected: SiteGrid) -> list[str]:
    """How the file's CRS and transform differ from its site grid (none: it lies on it)."""
    t = src.transform
    if epsg != expected.epsg:  # the origin in another CRS's units says nothing more
        return [f"CRS {src.crs.to_string()}, the site grid's is EPSG:{expected.epsg} (its UTM zone)"]
    problems = []
    if t.b or t.d or abs(t.a - PIXEL_M) > PIXEL_TOLERANCE_M or abs(t.e + PIXEL_M) > PIXEL_TOLERANCE_M:
        problems.append(f"pixels {t.a:g} x {-t.e:g} m (rotation {t.b:g}, {t.d:g}), the site grid's are north-up "
                        f"{PIXEL_M:g} x {PIXEL_M:g} m")
    dx, dy = t.c - expected.x0, t.f - expected.y0
    if max(abs(dx), abs(dy)) > PIXEL_M / 2:
        problems.append(f"origin ({t.c:.1f}, {t.f:.1f}), the site grid's is ({expected.x0:.1f}, {expected.y0:.1f}), "
                        f"{dx:+.0f} m east and {dy:+.0f} m north of it")
    return problems


def _check_grid(src, path: Path, expected: SiteGrid | int) -> int | None:
    """Refuse a raster off its chip grid (it would put other ground under the site's pixels, silently);
    return its EPSG code.

    ``expected`` is the site grid; a bare size checks only the size (rasters compared on grids of their own).
    """
    if src.crs is None:
        raise InputDataError(path, "has no CRS", REFETCH)
    size = expected if isinstance(expected, int) else expected.size
    if (src.height, src.width) != (size, size):
        raise InputDataError(path, f"is {src.height}x{src.width} pixels, expected {size}x{size} "
                             "(sources.sentinel.chip_size)", REFETCH)
    epsg = _epsg(src.crs)
    problems = [] if isinstance(expected, int) else _grid_problems(src, epsg, expected)
    if problems:
        raise InputDataError(path, "is not on its site's grid: " + "; ".join(problems), GRID_FIX)
    return epsg


def load_chip(path: Path, modality: Modality, expected: SiteGrid | int) -> Chip:
    """A raw GeoTIFF in physical units, nodata and saturated pixels -> MISSING_VALUE, with its georeferencing.

    Refuses files without a CRS, off the site grid ``expected``, or with other bands than expected:
    each would silently misplace or mislabel pixels downstream.
    """
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as src:
            names = tuple(src.descriptions)
            missing = [b for b in modality.band_order if b not in names]
            if missing:
                raise InputDataError(path, f"band(s) {missing} missing (band descriptions are {list(names)})", REFETCH)
            epsg = _check_grid(src, path, expected)
            index = [names.index(b) + 1 for b in modality.band_order]
            data = src.read(index).astype(np.float32)
            nodata, t = src.nodata, src.transform
            scales = np.array([src.scales[i - 1] for i in index], np.float32)[:, None, None]
            offsets = np.array([src.offsets[i - 1] for i in index], np.float32)[:, None, None]
    except RasterioError as exc:
        raise InputDataError(path, f"is not a readable GeoTIFF ({exc})", REFETCH) from None
    missing_px = ~np.isfinite(data) if nodata is None or np.isnan(nodata) else (data == nodata) | ~np.isfinite(data)
    saturated = data == modality.saturated if modality.saturated is not None else np.zeros_like(missing_px)
    data = (data * scales + offsets) * modality.unit_scale
    data[missing_px | saturated] = MISSING_VALUE
    return Chip(data, saturated.sum(axis=(1, 2)), epsg, t.c, t.f, abs(t.a), abs(t.e))


def read_chip(path: Path, modality: Modality, expected: SiteGrid | int) -> np.ndarray:
    """A raw GeoTIFF as float32 (C, H, W) in physical units, missing = MISSING_VALUE (see ``load_chip``)."""
    return load_chip(path, modality, expected).data


def read_labels(path: Path, expected: SiteGrid | int) -> np.ndarray:
    """A single-band class raster (uint8 (H, W)), refused if it is not on the chip grid."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as src:
            if src.count != 1:
                raise InputDataError(path, f"has {src.count} bands, expected 1 (class codes)", REFETCH)
            _check_grid(src, path, expected)
            return src.read(1).astype(np.uint8)
    except RasterioError as exc:
        raise InputDataError(path, f"is not a readable GeoTIFF ({exc})", REFETCH) from None


DAY_SOURCES = ("s2", "landsat", "s1")  # whose acquisition day a timestep carries, in order of preference
MID_MONTH = 15


def acquisition_days(months: list, by_site_sensor: dict, site_id: str) -> list[tuple[int, int, int]]:
    """(day, month, year) per timestep: the day a sensor really looked, else mid-month."""
    days = {}
    for sensor in reversed(DAY_SOURCES):  # preferred sensors overwrite
        for scene in by_site_sensor.get((site_id, sensor), []):
            days[(scene.date.year, scene.date.month)] = scene.date.day
    return [(days.get((m.year, m.month), MID_MONTH), m.month, m.year) for m in months]


@dataclass(frozen=True)
class SiteJob:
    """What a worker needs to read one site: plain picklable values (no registry entries, which hold proxies)."""
    raw_dir: Path
    site_id: str
    aoi_id: str
    grid: SiteGrid
    selection: tuple            # (sensors, s2_bands): the modalities, rebuilt in the worker
    scenes: dict                # modality key -> the site's acquisitions (date, path)
    months: list
    with_labels: bool


@dataclass(frozen=True)
class SiteRead:
    """One site as read: its samples, land-use labels, and what the quality reports count."""
    samples: dict               # modality key -> (H, W, T, C) float32
    labels: np.ndarray | None
    missing: dict               # modality key -> (C,) missing values in the sample
    saturated: dict             # modality key -> (C,) saturated pixels in the site's files
    files: FileRows             # raw_files.parquet rows of the site's files


def add_file_rows(files: FileRows, job: SiteJob, modality: Modality, file: str, date: str, chip: Chip) -> None:
    """The rows of one file: its georeferencing and each band's value summary, on the array already read."""
    n_bands, height, width = chip.data.shape
    values = chip.data.reshape(n_bands, -1)
    valid = values != MISSING_VALUE
    grid = job.grid
    files.add({"file": file, "site_id": job.site_id, "aoi_id": job.aoi_id, "sensor": modality.key, "date": date,
               "epsg": chip.epsg, "expected_epsg": grid.epsg, "x0": chip.x0, "y0": chip.y0, "expected_x0": grid.x0,
               "expected_y0": grid.y0, "pixel_size_x": chip.pixel_size_x, "pixel_size_y": chip.pixel_size_y,
               "height": height, "width": width},
              {"band": modality.band_order, "units": [b.unit for b in modality.bands],
               **dict(zip(VALUE_COLUMNS, value_summary(values, valid).T)),
               "missing_share": 1.0 - valid.mean(axis=1), "saturated_share": chip.saturated / (height * width)})


def site_sample(job: SiteJob, modality: Modality, files: FileRows) -> tuple[np.ndarray, np.ndarray]:
    """One site's (H, W, T, C) array, each acquisition placed at its month, cloud-lost months missing, and
    its files' saturated pixels per band; the files' rows go to ``files``."""
    size = job.grid.size
    if modality.multitemporal:
        month_index = {(m.year, m.month): t for t, m in enumerate(job.months)}
        placed = [(month_index.get((s.date.year, s.date.month)), s.path, f"{s.date:%Y-%m-%d}")
                  for s in job.scenes[modality.key]]
        placed = [p for p in placed if p[0] is not None]  # drop acquisitions outside the study window
    else:
        placed = [(0, f"{job.site_id}/{modality.key}.tif", "")]
    out = np.full((size, size, len(job.months) if modality.multitemporal else 1, len(modality.bands)),
                  MISSING_VALUE, np.float32)
    saturated = np.zeros(len(modality.bands), np.int64)
    for t, path, date in placed:
        chip = load_chip(job.raw_dir / path, modality, job.grid)
        out[:, :, t, :] = np.moveaxis(chip.data, 0, -1)
        saturated += chip.saturated
        add_file_rows(files, job, modality, str(path), date, chip)
    return out, saturated


def _read_site(job: SiteJob) -> SiteRead:
    """One site's samples per modality (and its land-use labels), read inside one GDAL environment."""
    import rasterio

    files = FileRows(FILE_SCHEMA, BAND_SCHEMA)
    samples, saturated = {}, {}
    with rasterio.Env():
        for mod in store_modalities(*job.selection):
            samples[mod.key], saturated[mod.key] = site_sample(job, mod, files)
        labels = read_labels(job.raw_dir / job.site_id / LAND_USE_FILE, job.grid) if job.with_labels else None
    missing = {key: (sample == MISSING_VALUE).sum(axis=(0, 1, 2)) for key, sample in samples.items()}
    return SiteRead(samples, labels, missing, saturated, files)


def _read_scenes(raw_dir: Path, sites, split_of: dict[str, str]) -> dict:
    """scenes.csv, checked against the selected sites and their split: (site_id, sensor) -> acquisitions."""
    import pandas as pd

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
    return {key: [SimpleNamespace(date=r.date, path=r.path) for r in g.itertuples()]  # picklable rows
            for key, g in scenes.groupby(["site_id", "sensor"])}


def _quality_section(mod: Modality, sites, missing: np.ndarray, saturated: np.ndarray, per_band: int,
                     empty: np.ndarray) -> dict:
    """quality.json's entry for one modality from per-site (N, C) counts; ``per_band`` values per site and band."""
    section = missing_report(mod.key, "every month" if mod.multitemporal else "every pixel", missing.sum(axis=1),
                             per_band * len(mod.bands), sites["site_id"], sites["aoi_id"])
    section["bands"] = {band: {"missing_share": float(missing[:, b].sum() / (per_band * len(missing))),
                               "max_site_missing_share": float(missing[:, b].max() / per_band),
                               "saturated_pixels": int(saturated[:, b].sum())}
                        for b, band in enumerate(mod.band_order)}
    section["saturated_pixels"] = int(saturated.sum())
    if saturated.any():
        counts = ", ".join(f"{band} {int(c)}" for band, c in zip(mod.band_order, saturated.sum(axis=0)) if c)
        section["warnings"].append(f"{mod.key}: saturated pixels (raw value {mod.saturated:g}) read as missing: {counts}")
    if empty.any():  # e.g. Landsat Collection 2 Level-2 has no B8, B9, B11
        section["warnings"].append(f"{mod.key} band(s) {[b for b, e in zip(mod.band_order, empty) if e]} have no "
                                   "valid pixel in any train site: they stay missing (-99999)")
    return section


def build_store(raw_dir: Path, sites, split_of: dict[str, str], sensors, s2_bands, chip_size: int,
                months: int, std_multiplier: float, out_dir: Path, compute=None) -> dict:
    """Write the store, quality.json and raw_files.parquet into ``out_dir``; return the stats document.

    Two streaming passes: (1) raw physical values into the memory-mapped arrays while accumulating
    per-band stats over train sites, in site order (worker processes decode the GeoTIFFs, a few sites
    ahead, and summarise each file on the array they read); (2) normalize in place, one site at a time.
    """
    import pandas as pd
    from tqdm import tqdm

    from terrapipe.grid import site_grid
    from terrapipe.study import site_months

    by_site_sensor = _read_scenes(raw_dir, sites, split_of)
    mods = store_modalities(sensors, s2_bands)
    n = len(sites)
    arrays, stats, missing, saturated = {}, {}, {}, {}
    for mod in mods:
        t = months if mod.multitemporal else 1
        arrays[mod.key] = NpyRows(out_dir / f"{mod.key}.npy", np.float32, (n, chip_size, chip_size, t, len(mod.bands)))
        stats[mod.key] = RunningStats(len(mod.bands))
        missing[mod.key], saturated[mod.key] = np.zeros((2, n, len(mod.bands)), np.int64)
    classes = NpyRows(out_dir / "worldcover_class.npy", np.uint8, (n, chip_size, chip_size))
    with_land_use = all((raw_dir / site_id / LAND_USE_FILE).exists() for site_id in sites["site_id"])
    land_use = NpyRows(out_dir / "land_use_class.npy", np.uint8, (n, chip_size, chip_size)) if with_land_use else None
    timestamps = np.zeros((n, months, 3), np.int32)
    rows, files = [], FileRows(FILE_SCHEMA, BAND_SCHEMA)
    site_list = list(sites.itertuples(index=False))
    grids = [site_grid(site.latitude, site.longitude, chip_size) for site in site_list]
    jobs = (SiteJob(raw_dir, site.site_id, site.aoi_id, grid, (tuple(sensors), tuple(s2_bands)),  # made as the
                    {m.key: by_site_sensor.get((site.site_id, m.key), []) for m in mods},     # pool asks: flat memory
                    site_months(site.start_date, months), land_use is not None)
            for site, grid in zip(site_list, grids))
    with process_pool(compute) as pool:  # decoding ~30 small GeoTIFFs per site is the work: one process per core
        reads = ordered_map(pool, _read_site, jobs)
        for i, (site, grid, read) in enumerate(tqdm(zip(site_list, grids, reads), total=n,
                                                    desc="normalize_sentinel", unit="site", mininterval=2)):
            timestamps[i] = acquisition_days(site_months(site.start_date, months), by_site_sensor, site.site_id)
            if land_use is not None:
                land_use[i] = read.labels
            is_train = split_of[site.site_id] == "train"
            for mod in mods:
                sample = read.samples[mod.key]
                arrays[mod.key][i] = sample
                missing[mod.key][i], saturated[mod.key][i] = read.missing[mod.key], read.saturated[mod.key]
                if is_train:
                    stats[mod.key].update(sample)
                if mod.key == "worldcover":
                    codes = sample[:, :, 0, 0]
                    classes[i] = np.where(codes == MISSING_VALUE, 0, codes)
            files.extend(read.files)
            rows.append({"row": i, "site_id": site.site_id, "aoi_id": site.aoi_id, "split": split_of[site.site_id],
                         "latitude": site.latitude, "longitude": site.longitude, "epsg": grid.epsg, "x0": grid.x0,
                         "y0": grid.y0})
    if not any(split == "train" for split in map(split_of.get, sites["site_id"])):
        raise InputDataError("data/processed/splits/sites/assignments.parquet", "has no train site",
                             "Hold out fewer sites (split.sites.num_regions / region_size_km)")
    results = {mod.key: stats[mod.key].result() for mod in mods}
    quality = {}
    for mod in mods:  # pass 2: normalize in place, one site at a time
        empty = results[mod.key]["count"] == 0
        per_band = chip_size * chip_size * (months if mod.multitemporal else 1)
        quality[mod.key] = _quality_section(mod, sites, missing[mod.key], saturated[mod.key], per_band, empty)
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
    files.write(out_dir / "raw_files.parquet")
    write_quality(out_dir / "quality.json", quality, log, n_sites=n)
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
