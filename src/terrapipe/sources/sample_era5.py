"""Offline ERA5 backend: the NetCDF file the new CDS would return for each request, from the sample world.

``era5_requests`` builds the requests the real cdsapi backend sends, so both backends cover the same
AOIs, years, area and variables. The sample backend answers each request with the layout the new CDS
delivers for monthly means (valid_time in seconds since 1970, number, expver, descending latitude,
float32 fields with GRIB-derived attributes) and writes the request beside it as
``<name>.request.json``, so a reader of data/raw/era5/ sees what was asked for.
"""
from __future__ import annotations

import json
import logging
import math
import zlib
from pathlib import Path

import numpy as np

from terrapipe.modalities import era5_selected as selected
from terrapipe.modalities import era5_variable

log = logging.getLogger("terrapipe.sources.era5")
GRID_DEG = {"reanalysis-era5-land-monthly-means": 0.1, "reanalysis-era5-single-levels-monthly-means": 0.25}
CENTRE = "European Centre for Medium-Range Weather Forecasts"


def snapped_area(west: float, south: float, east: float, north: float, step: float) -> list[float]:
    """CDS ``area`` [N, W, S, E]: the box snapped outward to the grid plus one cell on each side, so that
    the nearest cell of every site (and its neighbours) is in the file."""
    eps = 1e-6  # 29.0 / 0.1 is 290.00000000000006: do not let float noise add a cell
    n, s = math.ceil(north / step - eps) + 1, math.floor(south / step + eps) - 1
    w, e = math.floor(west / step + eps) - 1, math.ceil(east / step - eps) + 1
    lat_max, lon_max = round(90 / step), round(180 / step)
    cells = (min(n, lat_max), max(w, -lon_max), max(s, -lat_max), min(e, lon_max))
    return [round(c * step, 6) for c in cells]


def area_grid(area: list[float], step: float) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (north to south, as the CDS writes them) and longitudes of the cells in ``area``."""
    n, w, s, e = (round(v / step) for v in area)
    return np.round(np.arange(n, s - 1, -1) * step, 6), np.round(np.arange(w, e + 1) * step, 6)


def era5_requests(params, study) -> list[dict]:
    """One CDS retrieve per AOI with selected sites and per year its sites' monthly series touch.

    Each entry is ``{"target": file name, "dataset": CDS dataset, "request": CDS request}``: the cds
    backend calls ``client.retrieve(entry["dataset"], entry["request"], out_dir / entry["target"])``.
    """
    from terrapipe.study import site_months

    era5 = params.sources.era5
    step = GRID_DEG[era5.dataset]
    entries = []
    for aoi in study.aois.itertuples():
        starts = study.sites.loc[study.sites["aoi_id"] == aoi.aoi_id, "start_date"].unique()
        years = sorted({m.year for start in starts for m in site_months(start, params.study.months)})
        for year in years:
            entries.append({"target": f"era5_{aoi.aoi_id}_{year}.nc", "dataset": era5.dataset, "request": {
                "product_type": ["monthly_averaged_reanalysis"],
                "variable": [v.cds for v in selected(era5.variables)],
                "year": [str(year)],
                "month": [f"{m:02d}" for m in range(1, 13)],
                "time": ["00:00"],
                "area": snapped_area(aoi.west, aoi.south, aoi.east, aoi.north, step),
                "data_format": "netcdf",
                "download_format": "unarchived",
            }})
    return entries


def sample_response(entry: dict, seed: int, missing_month_prob: float = 0.0):
    """The xarray Dataset the CDS would deliver for ``entry``, valued by ``World(seed).monthly_climate``.

    Months drawn as missing (probability ``missing_month_prob``, fixed by seed and file name) are
    NaN fields, as ERA5T gaps look in a delivered file.
    """
    import xarray as xr

    from terrapipe.sources.world import World

    request, step = entry["request"], GRID_DEG[entry["dataset"]]
    lat, lon = area_grid(request["area"], step)
    year, months = int(request["year"][0]), np.array([int(m) for m in request["month"]])
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    climate = World(seed).monthly_climate(lat2.ravel(), lon2.ravel(), year, months)
    gap = np.random.default_rng([seed, zlib.crc32(entry["target"].encode())]).random(len(months)) < missing_month_prob
    seconds = np.array([f"{year}-{m:02d}-01" for m in months], dtype="datetime64[s]").astype(np.int64)

    def field(var):
        values = climate[var.short].T.reshape(len(months), len(lat), len(lon)).astype(np.float32)
        values[gap] = np.nan
        attrs = {"GRIB_paramId": var.param_id, "GRIB_dataType": "an", "GRIB_gridType": "regular_ll",
                 "GRIB_stepType": "avgua", "GRIB_typeOfLevel": "surface", "GRIB_Nx": len(lon), "GRIB_Ny": len(lat),
                 "GRIB_iDirectionIncrementInDegrees": step, "GRIB_jDirectionIncrementInDegrees": step,
                 "GRIB_name": var.long_name, "GRIB_shortName": var.grib_short, "GRIB_cfVarName": var.short,
                 "GRIB_units": var.units, "long_name": var.long_name, "units": var.units,
                 "standard_name": var.standard_name}
        return ("valid_time", "latitude", "longitude"), values, attrs

    coords = {
        "number": ((), np.int64(0), {"long_name": "ensemble member numerical id", "units": "1",
                                     "standard_name": "realization"}),
        "valid_time": ("valid_time", seconds, {"long_name": "time", "standard_name": "time",
                                               "units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian"}),
        "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude",
                                       "stored_direction": "decreasing"}),
        "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude",
                                         "long_name": "longitude"}),
        "expver": ("valid_time", np.array(["0001"] * len(months), dtype=object), {"long_name": "experiment version"}),
    }
    attrs = {"GRIB_centre": "ecmf", "GRIB_centreDescription": CENTRE, "GRIB_subCentre": 0, "Conventions": "CF-1.7",
             "institution": CENTRE,
             "history": f"terrapipe sample world (seed {seed}) answering a {entry['dataset']} request for {year}; "
                        "layout of the CDS GRIB to netCDF conversion"}
    data = {era5_variable(name).short: field(era5_variable(name)) for name in request["variable"]}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def write_netcdf(ds, path: Path) -> None:
    """Write like the CDS: float32 fields, NaN fill, light zlib compression; coordinates unfilled."""
    encoding = {name: {"dtype": "float32", "zlib": True, "complevel": 1, "_FillValue": np.float32(np.nan)}
                for name in ds.data_vars}
    encoding.update({name: {"_FillValue": None} for name in ("valid_time", "latitude", "longitude")})
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)


def fetch_era5(params, study, out_dir: Path) -> None:
    """Write ``era5_<aoi>_<year>.nc`` and its ``.request.json`` for every request into ``out_dir``."""
    era5 = params.sources.era5
    for entry in era5_requests(params, study):
        path = Path(out_dir) / entry["target"]
        write_netcdf(sample_response(entry, params.seed, era5.sample.missing_month_prob), path)
        path.with_suffix(".request.json").write_text(json.dumps(entry, indent=2) + "\n")
        log.info("wrote %s", path.name)
