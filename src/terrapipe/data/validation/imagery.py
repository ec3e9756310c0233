"""validate, imagery group: raw GeoTIFF / NetCDF summaries, the imagery store, the ERA5 site series, the site split.

Ranges are in the physical units the readers deliver (reference/earth-observation-facts.md): a hard
range that no real value leaves (a value outside is a unit or decoding error) and a typical range that
almost every file's median lies in. Missing and saturated shares come from quality.* in params.yaml.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from terrapipe import paths
from terrapipe.data.era5 import PLAUSIBLE
from terrapipe.data.normalize import MISSING_VALUE
from terrapipe.data.validation.checks import (
    FLOAT,
    INT,
    TEXT,
    Table,
    a_at_least_b,
    between,
    equal_pair,
    in_set,
    rows_at_least,
    schema_table,
    unique,
)
from terrapipe.data.validation.split_checks import split_tables
from terrapipe.grid import PIXEL_M
from terrapipe.modalities import ERA5_VARIABLES, WORLDCOVER_CODES, store_modalities

# (modality key, unit) -> (hard low, hard high, typical low, typical high) of a pixel value
IMAGERY_RANGES = {
    ("s2", "reflectance x 10000"): (-1000.0, 20000.0, 0.0, 9000.0),   # L2A, harmonized to the pre-04.00 baseline
    ("s1", "dB"): (-50.0, 30.0, -35.0, 5.0),
    ("landsat", "reflectance"): (-0.2, 1.6, 0.0, 0.9),              # Collection 2 Level-2 scale limits
    ("landsat", "K"): (180.0, 360.0, 220.0, 330.0),                 # surface temperature
    ("srtm", "m"): (-500.0, 9000.0, -100.0, 6000.0),
}
# ERA5 short name -> (hard low, hard high, typical low, typical high), in ERA5 units;
# the hard limits are the reader's (terrapipe.data.era5.PLAUSIBLE, per unit): one source for both checks
ERA5_TYPICAL = {"t2m": (220.0, 315.0), "d2m": (210.0, 305.0), "sp": (50000.0, 105000.0), "u10": (-15.0, 15.0),
                "v10": (-15.0, 15.0), "tp": (0.0, 0.05)}
ERA5_RANGES = {v.short: (*PLAUSIBLE[v.units], *ERA5_TYPICAL[v.short]) for v in ERA5_VARIABLES}
MAX_ORIGIN_OFFSET_M = PIXEL_M / 2  # every raw chip band is on the site's 10 m grid (terrapipe.grid)
TYPICAL_SHARE = 0.95          # share of file medians that must lie in the typical range


RANGE_COLUMNS = ("hard_low", "hard_high", "typical_low", "typical_high")


def with_ranges(frame: pd.DataFrame, ranges: dict, keys: list[str]) -> pd.DataFrame:
    """``frame`` with each row's physical range (looked up by ``keys``) and whether its median is typical.

    Rows of a key without a range get an unbounded one. Per-row columns keep the checks unconditional:
    GX's row conditions cost a pandas query each, 20 of them over 70k rows take seconds.
    """
    table = pd.DataFrame([(*np.atleast_1d(key), *bounds) for key, bounds in ranges.items()], columns=[*keys, *RANGE_COLUMNS])
    out = frame.merge(table, on=keys, how="left", sort=False)
    out.index = frame.index
    out[["hard_low", "typical_low"]] = out[["hard_low", "typical_low"]].fillna(-np.inf)
    out[["hard_high", "typical_high"]] = out[["hard_high", "typical_high"]].fillna(np.inf)
    out["median_typical"] = out["p50"].between(out["typical_low"], out["typical_high"]) | out["p50"].isna()
    return out


def range_checks(what: str) -> tuple:
    """Hard limits on every row's min and max, typical range on almost every row's median."""
    return (a_at_least_b("min", "hard_low", f"{what}: no value below its physical range"),
            a_at_least_b("hard_high", "max", f"{what}: no value above its physical range"),
            in_set("median_typical", {True}, f"{what}: medians in the typical range", mostly=TYPICAL_SHARE))


def sentinel_raw_tables(params) -> list[Table]:
    """Per file and band: CRS and grid against the site grid, value ranges, missing and saturated shares."""
    path = paths.processed("sentinel") / "raw_files.parquet"
    frame = pd.read_parquet(path)
    frame["origin_offset_m"] = np.hypot(frame["x0"] - frame["expected_x0"], frame["y0"] - frame["expected_y0"])
    is_map = frame["sensor"] == "worldcover"
    codes = list(WORLDCOVER_CODES)
    frame["class_codes_valid"] = ~is_map | (frame["min"].isin(codes) & frame["max"].isin(codes))
    frame = with_ranges(frame, IMAGERY_RANGES, ["sensor", "units"])
    size = params.sources.sentinel.chip_size
    types = {"file": TEXT, "site_id": TEXT, "sensor": TEXT, "band": TEXT, "units": TEXT, "epsg": INT,
             "expected_epsg": INT, "x0": FLOAT, "y0": FLOAT, "pixel_size_x": FLOAT, "pixel_size_y": FLOAT,
             "height": INT, "width": INT, "min": FLOAT, "max": FLOAT, "p01": FLOAT, "p50": FLOAT, "p99": FLOAT,
             "missing_share": FLOAT, "saturated_share": FLOAT}
    quality = params.quality
    checks = (equal_pair("epsg", "expected_epsg", "the file's CRS is its site's UTM zone"),
              between("origin_offset_m", 0, MAX_ORIGIN_OFFSET_M, "the file's origin is its site grid's (half a pixel)"),
              in_set("pixel_size_x", {PIXEL_M}, "chips are on the 10 m site grid"),
              in_set("pixel_size_y", {PIXEL_M}, "chips are on the 10 m site grid"),
              in_set("height", {size}, "sources.sentinel.chip_size pixels per side"),
              in_set("width", {size}, "sources.sentinel.chip_size pixels per side"),
              between("missing_share", 0, 1, "a share"),
              between("saturated_share", 0, quality.max_saturated_share, "quality.max_saturated_share"),
              in_set("class_codes_valid", {True}, "WorldCover maps hold ESA WorldCover class codes only"),
              *range_checks("per sensor and unit (terrapipe.data.validation.imagery.IMAGERY_RANGES)"),
              rows_at_least(1, "raw files were read"))
    return [schema_table("sentinel_raw_files", str(path), frame, types),
            Table("sentinel_raw_files", str(path), frame, ("file", "band"), checks)]


SITES_PER_CHUNK = 16  # store rows read at a time: bounded memory whatever the store's size


def _scan_modality(array: np.ndarray, is_train: np.ndarray) -> dict:
    """One pass over a store array (N, H, W, T, C): per site the missing share and non-finite count; per
    channel over the train sites the valid count, mean, std, min and max (float64 sums, chunk by chunk)."""
    channels = array.shape[-1]
    chunk_pixels = int(np.prod(array.shape[1:-1]))
    missing, nonfinite = np.zeros(len(array)), np.zeros(len(array), np.int64)
    count, total, squares = np.zeros(channels), np.zeros(channels), np.zeros(channels)
    low, high = np.full(channels, np.inf), np.full(channels, -np.inf)
    for start in range(0, len(array), SITES_PER_CHUNK):
        chunk = np.asarray(array[start:start + SITES_PER_CHUNK]).reshape(-1, chunk_pixels, channels)  # (n, H*W*T, C)
        rows = slice(start, start + len(chunk))
        unusable = chunk == MISSING_VALUE
        missing[rows] = unusable.mean(axis=(1, 2))
        if not np.isfinite(chunk.sum(dtype=np.float64)):  # rare: find the NaN / inf only when there is one
            bad = ~np.isfinite(chunk)
            nonfinite[rows] = bad.sum(axis=(1, 2))
            unusable |= bad
        train = chunk[is_train[rows]].reshape(-1, channels)                       # (train pixels, C)
        skip = unusable[is_train[rows]].reshape(-1, channels)
        values = np.where(skip, np.float32(0), train)
        count += (~skip).sum(0)
        total += values.sum(0, dtype=np.float64)
        squares += np.square(values).sum(0, dtype=np.float64)
        low = np.minimum(low, np.where(skip, np.inf, train).min(0, initial=np.inf))
        high = np.maximum(high, np.where(skip, -np.inf, train).max(0, initial=-np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0))
    empty = count == 0
    return {"missing": missing, "nonfinite": nonfinite, "count": count, "mean": mean, "std": std,
            "min": np.where(empty, np.nan, low), "max": np.where(empty, np.nan, high)}


def store_tables(params) -> list[Table]:
    """The normalized store: per site and modality missing share; per band the train statistics."""
    folder = paths.processed("sentinel")
    sites = pd.read_parquet(folder / "sites.parquet")
    stats = json.loads((folder / "stats.json").read_text())
    manifest = json.loads((folder / "store.json").read_text())
    sentinel = params.sources.sentinel
    is_train = (sites["split"] == "train").to_numpy()
    site_rows, band_rows, array_rows = [], [], []
    mods = store_modalities(sentinel.sensors, sentinel.s2_bands)
    arrays = [np.load(folder / f"{mod.key}.npy", mmap_mode="r") for mod in mods]    # (N, H, W, T, C) each
    with ThreadPoolExecutor(2) as pool:                                              # numpy releases the GIL
        scans = list(pool.map(lambda array: _scan_modality(array, is_train), arrays))
    for mod, array, scan in zip(mods, arrays, scans):
        array_rows.append((f"{mod.key}.npy", list(array.shape), manifest["modalities"][mod.key]["shape"]))
        site_rows += [(site, mod.key, float(m), int(k))
                      for site, m, k in zip(sites["site_id"], scan["missing"], scan["nonfinite"])]
        for c, band in enumerate(mod.band_order):
            band_rows.append((mod.key, band, int(stats[mod.key]["bands"][band]["count"]), float(scan["count"][c]),
                              scan["mean"][c], scan["std"][c], scan["min"][c], scan["max"][c]))
    site_frame = pd.DataFrame(site_rows, columns=["site_id", "modality", "missing_share", "nonfinite_values"])
    band_frame = pd.DataFrame(band_rows, columns=["modality", "band", "stats_count", "train_valid_count",
                                                  "norm_train_mean", "norm_train_std", "norm_min", "norm_max"])
    shape_frame = pd.DataFrame([(name, str(shape), str(want)) for name, shape, want in array_rows],
                               columns=["file", "shape", "manifest_shape"])
    source = str(folder)
    k = params.normalize.std_multiplier
    limits = params.quality.max_missing_share
    site_frame["max_missing_share"] = site_frame["modality"].map(lambda key: getattr(limits, key))
    site_checks = (a_at_least_b("max_missing_share", "missing_share", "quality.max_missing_share.<modality>"),
                   between("nonfinite_values", 0, 0, "missing is -99999, never NaN or inf"),
                   in_set("site_id", set(sites["site_id"]), "the store's own sites"))
    # OlmoEarth's rule maps the train mean to 1/2 and the train std to 1/(2k): a store and stats.json that
    # disagree (a corrupted array, stats from other data) move these
    band_checks = (equal_pair("stats_count", "train_valid_count", "stats.json counts what the store holds"),
                   between("norm_train_mean", 0.5 - 0.01, 0.5 + 0.01, "normalized train mean is 1/2"),
                   between("norm_train_std", 0.5 / k * 0.98, 0.5 / k * 1.02, "normalized train std is 1/(2 k)"),
                   between("norm_min", -0.5 * k * 10, None, "no value 20 train std below the mean"),
                   between("norm_max", None, 0.5 + 10.0, "no value 40 train std above the mean (k = 2)"))
    return [Table("sentinel_store_sites", source, site_frame, ("site_id", "modality"), site_checks),
            Table("sentinel_store_bands", source, band_frame, ("modality", "band"), band_checks),
            Table("sentinel_store_arrays", source, shape_frame, ("file",),
                  (equal_pair("shape", "manifest_shape", "store.json describes the arrays"),))]


def era5_tables(params) -> list[Table]:
    """Raw NetCDF summaries per file and variable; the site series per site-month and per site-variable."""
    folder = paths.processed("era5")
    raw_path = folder / "raw_files.parquet"
    raw = pd.read_parquet(raw_path)
    raw_types = {"file": TEXT, "aoi_id": TEXT, "year": INT, "variable": TEXT, "units": TEXT, "min": FLOAT,
                 "max": FLOAT, "p50": FLOAT, "missing_share": FLOAT, "grid_step_deg": FLOAT}
    units = {v.short: v.units for v in ERA5_VARIABLES}
    raw["units_expected"] = raw["variable"].map(units)
    raw = with_ranges(raw, ERA5_RANGES, ["variable"])
    raw_checks = (equal_pair("units", "units_expected", "ERA5 units as the CDS writes them"),
                  *range_checks("per variable (terrapipe.data.validation.imagery.ERA5_RANGES)"),
                  between("missing_share", 0, 1, "a share"),
                  between("grid_step_deg", 0.05, 0.3, "ERA5-Land 0.1 deg or ERA5 0.25 deg"))
    sites = pd.read_parquet(folder / "sites.parquet")
    stats = json.loads((folder / "stats.json").read_text())
    shorts = [spec["short_name"] for spec in stats["bands"].values()]
    series = np.load(folder / "series_raw.npy", mmap_mode="r")               # (N, T, V)
    values = np.where(np.asarray(series) == MISSING_VALUE, np.nan, series)
    months = pd.DataFrame(values.reshape(-1, len(shorts)), columns=shorts)   # (N*T, V)
    months.insert(0, "month", np.tile(np.arange(series.shape[1]), len(sites)))
    months.insert(0, "site_id", np.repeat(sites["site_id"].to_numpy(), series.shape[1]))
    month_checks = [between(short, *ERA5_RANGES[short][:2], f"physical range of {short} (hard limits)")
                    for short in shorts]
    if {"t2m", "d2m"} <= set(shorts):
        month_checks.append(a_at_least_b("t2m", "d2m", "the dewpoint never exceeds the air temperature"))
    step = raw.groupby("aoi_id")["grid_step_deg"].max()
    offset = np.maximum(abs(sites["latitude"] - sites["grid_latitude"]), abs(sites["longitude"] - sites["grid_longitude"]))
    per_site = pd.DataFrame({"site_id": np.repeat(sites["site_id"].to_numpy(), len(shorts)),
                             "variable": np.tile(shorts, len(sites)),
                             "missing_share": np.isnan(values).mean(1).reshape(-1),
                             "grid_offset_steps": np.repeat((offset / sites["aoi_id"].map(step)).to_numpy(), len(shorts))})
    site_checks = (between("missing_share", 0, params.quality.max_missing_share.era5, "quality.max_missing_share.era5"),
                   between("grid_offset_steps", 0, 0.51, "each site reads its nearest grid cell"))
    source = str(folder / "series_raw.npy")
    return [schema_table("era5_raw_files", str(raw_path), raw, raw_types),
            Table("era5_raw_files", str(raw_path), raw, ("file", "variable"), raw_checks),
            Table("era5_site_months", source, months, ("site_id", "month"), tuple(month_checks)),
            Table("era5_sites", source, per_site, ("site_id", "variable"), site_checks)]


def site_list_table() -> Table:
    """The imagery store, the ERA5 series and the site split list the same sites."""
    sentinel = pd.read_parquet(paths.processed("sentinel") / "sites.parquet", columns=["site_id", "split"])
    era5 = pd.read_parquet(paths.processed("era5") / "sites.parquet", columns=["site_id", "split"])
    split = pd.read_parquet(paths.split_assignments("sites"), columns=["id", "split"]).set_index("id")["split"]
    frame = sentinel.assign(era5_site_id=era5["site_id"].reindex(sentinel.index).to_numpy(),
                            split_stage=sentinel["site_id"].map(split).to_numpy())
    checks = (unique("site_id", "one row per site"),
              equal_pair("site_id", "era5_site_id", "the ERA5 series row i is the imagery sample i"),
              equal_pair("split", "split_stage", "the store's splits are the site split's"))
    return Table("site_lists", f"{paths.processed('sentinel')}, {paths.processed('era5')}, "
                 f"{paths.split_assignments('sites')}", frame, ("site_id",), checks)


def tables(params, study) -> list[Table]:
    """Every table of the imagery group, in report order."""
    return [*sentinel_raw_tables(params), *store_tables(params), *era5_tables(params), site_list_table(),
            *split_tables("sites")]
