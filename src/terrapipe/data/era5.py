"""ERA5 monthly means: read CDS NetCDF files, check their schema, build one series per site.

The CDS has changed its NetCDF layout (``valid_time``, ``number``, ``expver`` since the 2024 move;
``time`` with an ``expver`` dimension mixing ERA5 and ERA5T before) and ECMWF says the layout is not
a stable format. So every file goes through ``open_era5``, which accepts both, normalises to
(time, latitude, longitude) with the short variable names, and refuses anything else with an error
that names the file and the field, instead of letting a renamed dimension become silent garbage.

The normalize_era5 stage writes (data/processed/era5/), one row per selected site, T = study.months
monthly steps from the site's start month, V = the configured variables in OlmoEarth's order (six,
terrapipe.modalities.ERA5_VARIABLES):

    series.npy        float32 [N, T, V]  normalized with train-site stats, missing = -99999
    series_raw.npy    float32 [N, T, V]  ERA5 units (K, K, Pa, m s**-1, m s**-1, m per day), missing = -99999
    sites.parquet     row, site_id, aoi_id, latitude, longitude, split, grid_latitude, grid_longitude
    stats.json        per-variable mean/std/count from TRAIN sites only, with units and short names
    quality.json      per variable: missing shares, sites and AOIs with no value, the warnings logged
    raw_files.parquet one row per (raw file, variable): its grid and value summary (FILE_SCHEMA, VARIABLE_SCHEMA)

A units attribute can be right while the numbers are not (a conversion that forgot to relabel), so
``open_era5`` also checks that the values are plausible in the stated unit.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terrapipe.data.normalize import MISSING_VALUE, band_stats, normalize, stats_to_json
from terrapipe.data.quality import VALUE_COLUMNS, FileRows, missing_report, value_summary, write_quality
from terrapipe.errors import InputDataError, TerrapipeError
from terrapipe.modalities import ERA5, ERA5_VARIABLES
from terrapipe.modalities import era5_selected as selected

log = logging.getLogger("terrapipe.era5")

DIMS = ("time", "latitude", "longitude")
_UNIT_SPELLINGS = {"m s-1": "m s**-1", "m/s": "m s**-1", "kelvin": "K"}
# What a monthly mean can be in each ERA5 unit (tp: the mean daily total, m), and the mislabelling a range
# outside it usually is: the other unit's name and its conversion to the stated one.
PLAUSIBLE = {"K": (170.0, 340.0), "Pa": (40_000.0, 110_000.0), "m s**-1": (-60.0, 60.0), "m": (0.0, 0.2)}
MISLABELLED = {"K": ("degrees C", lambda v: v + 273.15), "Pa": ("hPa", lambda v: v * 100.0),
               "m": ("mm", lambda v: v / 1000.0)}
# raw_files.parquet: one row per (file, variable), what the reader saw (see terrapipe.data.quality).
FILE_SCHEMA = {"file": "str", "aoi_id": "str", "year": "int64", "n_times": "int64", "lat_min": "float64",
               "lat_max": "float64", "lon_min": "float64", "lon_max": "float64", "grid_step_deg": "float64"}
VARIABLE_SCHEMA = {"variable": "str", "units": "str", **{name: "float64" for name in VALUE_COLUMNS},
                   "missing_share": "float64"}


def _fail(path, problem: str) -> InputDataError:
    return InputDataError(path, problem, "Re-download it with `dvc repro -f fetch_era5` (monthly means from the CDS, "
                          "NetCDF, ERA5 units K / Pa / m s**-1 / m)")


def normalize_schema(ds, path, variables=ERA5_VARIABLES):
    """Bring a dataset in either CDS layout to dims (time, latitude, longitude) holding ``variables``.

    Legacy files split recent months over an ``expver`` dimension (1 = ERA5, 5 = ERA5T, NaN where
    the other one has the value): those are merged by taking the first non-NaN along it.
    """
    ds = ds.drop_vars([c for c in ("expver", "number") if c in ds.variables])
    if "valid_time" in ds.dims:
        ds = ds.rename({"valid_time": "time"})
    if "expver" in ds.dims:
        ds = functools.reduce(lambda first, other: first.combine_first(other),
                              (ds.isel(expver=k) for k in range(ds.sizes["expver"])))
    if "number" in ds.dims and ds.sizes["number"] == 1:
        ds = ds.isel(number=0)
    for dim in DIMS:
        if dim not in ds.dims:
            found = ", ".join(map(str, ds.dims)) or "none"
            raise _fail(path, f"no {dim} dimension (found dimensions: {found}; expected valid_time or time, "
                              "latitude, longitude)")
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise _fail(path, "the time coordinate is not a date (its units attribute is missing or unreadable)")
    for var in variables:
        if var.short not in ds.data_vars:
            found = ", ".join(map(str, ds.data_vars)) or "none"
            raise _fail(path, f"variable {var.short} missing ({var.cds}; found: {found})")
        extra = set(ds[var.short].dims) - set(DIMS)
        if extra:
            raise _fail(path, f"variable {var.short} has unexpected dimension(s) {sorted(extra)}")
        units = str(ds[var.short].attrs.get("units", "")).strip()
        if _UNIT_SPELLINGS.get(units, units) != var.units:
            raise _fail(path, f"variable {var.short} is in {units or 'unknown units'!r}, expected {var.units!r}")
    ds = ds[[v.short for v in variables]].transpose(*DIMS)
    if float(ds["longitude"].max()) > 180:  # legacy 0..360 grids
        ds = ds.assign_coords(longitude=(ds["longitude"] + 180) % 360 - 180).sortby("longitude")
    return ds


def check_values(ds, path, variables=ERA5_VARIABLES) -> None:
    """Refuse a variable whose values are implausible in its stated unit, naming what they look like.

    A variable without any value passes: a whole gap is the stage's to report, not a broken file.
    """
    for var in variables:
        values = ds[var.short].to_numpy()
        if not np.isfinite(values).any():
            continue
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        floor, ceiling = PLAUSIBLE[var.units]
        if floor <= low and high <= ceiling:
            continue
        problem = (f"variable {var.short} values range {low:g}..{high:g}, outside the plausible "
                   f"{floor:g}..{ceiling:g} {var.units}")
        name, convert = MISLABELLED.get(var.units, (None, None))
        if name and floor <= convert(low) and convert(high) <= ceiling:
            problem += f": they look like {name} labelled {var.units}"
        raise InputDataError(path, problem, f"Re-download it with `dvc repro -f fetch_era5`, or convert {var.short} "
                             f"to {var.units} where the file is made")


def open_era5(path, variables=ERA5_VARIABLES):
    """Read one ERA5 monthly-means NetCDF fully into memory, normalised (see ``normalize_schema``), its
    values checked against their units (``check_values``)."""
    import xarray as xr

    try:
        with xr.open_dataset(path, engine="netcdf4", cache=False) as ds:
            ds = ds.load()
    except FileNotFoundError:
        raise _fail(path, "missing") from None
    except (OSError, RuntimeError, ValueError, KeyError) as exc:  # netCDF/HDF5 errors surface as these
        raise _fail(path, f"not a readable NetCDF file, truncated or corrupt ({exc})") from None
    ds = normalize_schema(ds, path, variables)
    check_values(ds, path, variables)
    return ds


def cell_series(ds, path, latitude, longitude, months, variables=ERA5_VARIABLES):
    """Values of the grid cells nearest to each point for each wanted month, (P, T, V), NaN where absent.

    ``months`` is (P, T) of month starts; a month the file lacks, or holds as NaN (an ERA5T gap), is NaN.
    Returns the values and the chosen cells' (latitude, longitude). A point off the grid is an error:
    the nearest cell would be a different place.
    """
    import pandas as pd

    lat_grid, lon_grid = ds["latitude"].to_numpy(), ds["longitude"].to_numpy()
    latitude, longitude = np.asarray(latitude, float), np.asarray(longitude, float)
    for grid, values, name in ((lat_grid, latitude, "latitude"), (lon_grid, longitude, "longitude")):
        half = np.abs(np.diff(grid)).max() / 2 if grid.size > 1 else 0.0
        outside = (values < grid.min() - half) | (values > grid.max() + half)
        if outside.any():
            raise _fail(path, f"a site at {name} {values[outside][0]} lies outside the file's grid "
                              f"[{grid.min()}, {grid.max()}]")
    i = np.abs(lat_grid[None, :] - latitude[:, None]).argmin(axis=1)
    j = np.abs(lon_grid[None, :] - longitude[:, None]).argmin(axis=1)
    cube = np.stack([ds[v.short].to_numpy() for v in variables], axis=-1)       # (time, lat, lon, V)
    position = {m: k for k, m in enumerate(pd.DatetimeIndex(ds["time"].to_numpy()).to_period("M"))}
    months = pd.PeriodIndex(np.ravel(months), freq="M")
    k = np.array([position.get(m, -1) for m in months]).reshape(len(latitude), -1)
    values = cube[np.where(k < 0, 0, k), i[:, None], j[:, None]].astype(np.float64)
    values[k < 0] = np.nan
    return values, lat_grid[i], lon_grid[j]


@dataclass(frozen=True)
class SiteSeries:
    """Each site's raw monthly series, the grid cells it came from, and the rows of the files read."""
    values: np.ndarray      # float32 (N, T, V) in ERA5 units, MISSING_VALUE where no file has a value
    grid_lat: np.ndarray    # (N,) the chosen cells' latitude and longitude
    grid_lon: np.ndarray
    files: FileRows         # raw_files.parquet


def add_file_rows(files: FileRows, ds, file: str, aoi_id: str, year: int, variables=ERA5_VARIABLES) -> None:
    """One file's rows: its grid and each variable's value summary, on the dataset already read."""
    values = np.stack([ds[v.short].to_numpy().ravel() for v in variables])
    valid = np.isfinite(values)
    lat, lon = ds["latitude"].to_numpy(), ds["longitude"].to_numpy()
    steps = np.abs(np.concatenate([np.diff(lat), np.diff(lon)]))
    files.add({"file": file, "aoi_id": aoi_id, "year": year, "n_times": ds.sizes["time"], "lat_min": float(lat.min()),
               "lat_max": float(lat.max()), "lon_min": float(lon.min()), "lon_max": float(lon.max()),
               "grid_step_deg": float(np.round(steps.max(), 6)) if steps.size else np.nan},
              {"variable": [v.short for v in variables], "units": [v.units for v in variables],
               **dict(zip(VALUE_COLUMNS, value_summary(values, valid).T)), "missing_share": 1.0 - valid.mean(axis=1)})


def site_series(sites, raw_dir, n_months: int, variables=ERA5_VARIABLES) -> SiteSeries:
    """Raw monthly series (N, T, V) in ERA5 units for ``sites``, and what each file held.

    Each site reads its AOI's files (``era5_<aoi>_<year>.nc``); a month comes from the first file
    holding a value for it.
    """
    from terrapipe.study import site_months

    series = np.full((len(sites), n_months, len(variables)), np.nan)
    grid_lat, grid_lon = np.full(len(sites), np.nan), np.full(len(sites), np.nan)
    files = FileRows(FILE_SCHEMA, VARIABLE_SCHEMA)
    for aoi_id, rows in sites.groupby("aoi_id", sort=False).indices.items():
        paths = sorted(Path(raw_dir).glob(f"era5_{aoi_id}_[0-9][0-9][0-9][0-9].nc"))
        if not paths:
            raise InputDataError(raw_dir, f"no ERA5 file for AOI {aoi_id} (era5_{aoi_id}_<year>.nc)",
                                 "Run `dvc repro fetch_era5` after changing the study or the ERA5 params")
        group = sites.iloc[rows]
        months = [site_months(d, n_months) for d in group["start_date"]]
        for path in paths:
            ds = open_era5(path, variables)
            values, lat, lon = cell_series(ds, path, group["latitude"], group["longitude"], months, variables)
            series[rows] = np.where(np.isnan(series[rows]), values, series[rows])
            grid_lat[rows], grid_lon[rows] = lat, lon
            add_file_rows(files, ds, path.name, aoi_id, int(path.stem.rsplit("_", 1)[1]), variables)
    series[np.isnan(series)] = MISSING_VALUE
    return SiteSeries(series.astype(np.float32), grid_lat, grid_lon, files)


def normalize_series(raw: np.ndarray, is_train: np.ndarray, variables=ERA5_VARIABLES, std_multiplier: float = 2.0):
    """Normalise (N, T, V) with per-variable stats of the training sites only; returns (series, stats JSON)."""
    stats = band_stats(raw[is_train])
    empty = [v.band for v, count in zip(variables, stats["count"]) if count == 0]
    if empty:
        raise TerrapipeError(f"ERA5 variable(s) {empty} have no valid value in any train site, so their statistics "
                             "are undefined. Check the raw files in data/raw/era5, or the site split (split.sites)")
    document = stats_to_json([v.band for v in variables], stats, modality=ERA5.olmoearth_name,
                             std_multiplier=std_multiplier,
                             computed_on="train sites", train_sites=int(is_train.sum()), months=raw.shape[1])
    for var in variables:
        document["bands"][var.band].update(short_name=var.short, units=var.units)
    return normalize(raw, stats["mean"], stats["std"], std_multiplier), document


def build_era5_dataset(raw_dir, sites, split_of: dict[str, str], variables, months: int, std_multiplier: float,
                       out_dir) -> dict:
    """The normalize_era5 stage: raw files + site split -> series.npy, series_raw.npy, sites.parquet, stats.json,
    quality.json, raw_files.parquet. Nothing is written before every input has been checked.

    ``split_of`` maps site_id to 'train' / 'test' (terrapipe.study.read_split_assignments); returns the stats.
    """
    unknown = sorted(set(sites["site_id"]) - set(split_of))
    if unknown:
        raise InputDataError("data/processed/splits/sites/assignments.parquet", f"no split for site(s) {unknown[:5]}",
                             "Re-run the split_sites stage for the current study (study.sites_per_aoi)")
    variables = selected(variables)
    read = site_series(sites, raw_dir, months, variables)
    split = sites["site_id"].map(split_of).to_numpy(dtype=str)
    series, stats = normalize_series(read.values, split == "train", variables, std_multiplier)
    table = sites[["site_id", "aoi_id", "latitude", "longitude"]].assign(
        split=split, grid_latitude=read.grid_lat, grid_longitude=read.grid_lon)
    table.insert(0, "row", np.arange(len(table)))
    missing = (read.values == MISSING_VALUE).sum(axis=1)  # (N, V) months without a value
    quality = {v.short: missing_report(f"ERA5 {v.short}", "every month", missing[:, k], months, sites["site_id"],
                                       sites["aoi_id"]) for k, v in enumerate(variables)}
    out_dir = Path(out_dir)
    np.save(out_dir / "series.npy", series)
    np.save(out_dir / "series_raw.npy", read.values)
    table.to_parquet(out_dir / "sites.parquet", index=False)
    read.files.write(out_dir / "raw_files.parquet")
    write_quality(out_dir / "quality.json", quality, log, n_sites=len(sites))
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2, allow_nan=False) + "\n")
    return stats
