"""AlphaEarth cleaning: DeepEarth's filters (reference/deepearth-behaviour.md 2.2), with every drop counted.

A row is dropped for the FIRST reason it fails, in the order of DROP_REASONS, so the counts sum to
the rows dropped and a sentinel elevation is reported as a sentinel rather than as out of range:

    missing_elevation         elevation_m is NaN (DeepEarth drops these before anything else)
    unparseable_date          event_date is not a date (only with unparseable_dates: drop)
    nonfinite_coordinates     latitude or longitude is empty or not a number, or a coordinate is inf
    elevation_sentinel        |elevation_m| is 9999 or 32767 (DeepEarth's test; -32768 is not caught here)
    latitude_out_of_bounds    |latitude| > 90
    longitude_out_of_bounds   |longitude| > 180
    elevation_out_of_bounds   |elevation_m| > 10000 (this catches -32768)
    time_out_of_bounds        t_norm outside [0, 1]
    elevation_out_of_limits   elevation_m outside [min_elevation_m, max_elevation_m]
    nonfinite_embedding       any embedding value is NaN or inf

Deviations from the original, both deliberate: unparseable dates are dropped by default (DeepEarth
silently dates them 2000-01-01; ``default_2000`` reproduces that), and t is not clipped to [0, 1]
before the [0, 1] filter (clipping makes that filter a no-op and dates a 1850 record to 1900).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from terrapipe.data.arrays import NpyRows
from terrapipe.errors import ConfigError, InputDataError

log = logging.getLogger("terrapipe")

METADATA_FILE = "alphaearth_metadata.csv"
EMBEDDINGS_FILE = "alphaearth_embeddings.pt"
REQUIRED_COLUMNS = ("latitude", "longitude", "elevation_m", "event_date")
ROWS_PER_WRITE = 20_000  # kept embeddings written per block
EMBEDDING_DIM = 64
SENTINELS = (9999.0, 32767.0)
DROP_REASONS = ("missing_elevation", "unparseable_date", "nonfinite_coordinates", "elevation_sentinel",
                "latitude_out_of_bounds", "longitude_out_of_bounds", "elevation_out_of_bounds",
                "time_out_of_bounds", "elevation_out_of_limits", "nonfinite_embedding")
DEFAULT_DATE = "2000-01-01T00:00:00Z"
# The parameters behind the filters a user tunes; every other filter catches broken data.
TUNED_BY = {"unparseable_date": ("unparseable_dates",), "time_out_of_bounds": ("time_origin_year", "time_span_years"),
            "elevation_out_of_limits": ("min_elevation_m", "max_elevation_m")}


def parse_event_dates(dates):
    """UTC timestamps from ISO 8601 strings, falling back to inferred formats; NaT where neither parses."""
    import pandas as pd

    dates = pd.Series(dates, dtype="string")
    parsed = pd.to_datetime(dates, utc=True, format="ISO8601", errors="coerce")
    retry = parsed.isna() & dates.notna()
    if retry.any():
        parsed[retry] = pd.to_datetime(dates[retry], utc=True, format="mixed", errors="coerce")
    return parsed


def fractional_year(timestamps) -> np.ndarray:
    """year + (day_of_year - 1) / days_in_year; the time of day is ignored, as in DeepEarth."""
    days_in_year = np.where(timestamps.dt.is_leap_year, 366.0, 365.0)
    return (timestamps.dt.year + (timestamps.dt.day_of_year - 1) / days_in_year).to_numpy(float, na_value=np.nan)


def embeddings_as_float(values: np.ndarray) -> np.ndarray:
    """float32 embeddings; an int8 store is scaled by 1/127 back to [-1, 1] as DeepEarth does."""
    if values.dtype == np.int8:
        return values.astype(np.float32) / 127.0
    return values.astype(np.float32, copy=False)


def drop_reasons(lat, lon, elev, t_norm, date_ok, embeddings, params) -> np.ndarray:
    """Index into DROP_REASONS of each row's first failed filter; -1 for rows that are kept."""
    with np.errstate(invalid="ignore"):
        failed = [
            np.isnan(elev),
            ~date_ok,
            ~(np.isfinite(lat) & np.isfinite(lon) & np.isfinite(elev)),
            np.isin(np.abs(elev), SENTINELS),
            ~(np.abs(lat) <= 90),
            ~(np.abs(lon) <= 180),
            ~(np.abs(elev) <= 10000),
            ~((t_norm >= 0) & (t_norm <= 1)),
            ~((elev >= params.min_elevation_m) & (elev <= params.max_elevation_m)),
            ~np.isfinite(embeddings).all(axis=1),
        ]
    failed = np.stack(failed, axis=1)
    return np.where(failed.any(axis=1), failed.argmax(axis=1), -1)


def clean_points(frame, embeddings: np.ndarray, params):
    """Apply the filters to the raw metadata frame and its aligned float32 embeddings.

    Returns (points DataFrame, coords float32 [N, 4], keep mask over the input rows, report dict).
    """
    import pandas as pd

    lat, lon, elev = (pd.to_numeric(frame[c], errors="coerce").to_numpy(float)
                      for c in ("latitude", "longitude", "elevation_m"))
    stamps = parse_event_dates(frame["event_date"])
    unparseable = stamps.isna().to_numpy()
    date_ok = np.ones(len(frame), bool)
    if params.unparseable_dates == "drop":
        date_ok = ~unparseable
    else:
        stamps[unparseable] = pd.Timestamp(DEFAULT_DATE)
    with np.errstate(invalid="ignore"):
        t_norm = (fractional_year(stamps) - params.time_origin_year) / params.time_span_years
    reason = drop_reasons(lat, lon, elev, t_norm, date_ok, embeddings, params)
    keep = reason < 0

    points = pd.DataFrame({"point_id": np.flatnonzero(keep).astype(np.int64), "latitude": lat[keep],
                           "longitude": lon[keep], "elevation_m": elev[keep],
                           "event_date": stamps[keep].reset_index(drop=True),
                           "year": stamps[keep].dt.year.to_numpy(np.int64), "t_norm": t_norm[keep]})
    coords = np.stack([lat[keep], lon[keep], elev[keep], t_norm[keep]], axis=1).astype(np.float32)
    counts = np.bincount(reason[~keep], minlength=len(DROP_REASONS))
    report = {
        "rows_in": int(len(frame)),
        "rows_out": int(keep.sum()),
        "dropped": {name: int(c) for name, c in zip(DROP_REASONS, counts)},
        "drop_reason_order": "each dropped row is counted under the first reason it fails, in this order",
        "unparseable_dates_policy": params.unparseable_dates,
        "dates_defaulted_to_2000": int(unparseable.sum()) if params.unparseable_dates == "default_2000" else 0,
        "filters": {"min_elevation_m": params.min_elevation_m, "max_elevation_m": params.max_elevation_m,
                    "sentinels": list(SENTINELS), "abs_latitude_max": 90, "abs_longitude_max": 180,
                    "abs_elevation_max": 10000, "t_norm_range": [0, 1]},
        "time": {"origin_year": params.time_origin_year, "span_years": params.time_span_years,
                 "t_norm": "(fractional_year - origin_year) / span_years"},
    }
    return points, coords, keep, report


def refuse_empty(frame, report: dict, params, csv_path: Path) -> None:
    """Raise when no point is kept, naming the elevation limits if they alone drop every point: written,
    the empty data set would replace the good one and break every later stage, so stop first."""
    import pandas as pd

    if report["rows_out"]:
        return
    elev = pd.to_numeric(frame["elevation_m"], errors="coerce").to_numpy(float)
    elev = elev[np.isfinite(elev)]
    elev = elev[(np.abs(elev) <= 10000) & ~np.isin(np.abs(elev), SENTINELS)]
    if len(elev) and not ((elev >= params.min_elevation_m) & (elev <= params.max_elevation_m)).any():
        raise ConfigError(f"normalize.alphaearth.min_elevation_m={params.min_elevation_m:g} / max_elevation_m="
                          f"{params.max_elevation_m:g} drop all {len(elev)} points (their elevations range "
                          f"{elev.min():g}..{elev.max():g} m); set limits that overlap that range")
    dropped = {reason: n for reason, n in report["dropped"].items() if n}
    tuned = [f"normalize.alphaearth.{name}={getattr(params, name)}"
             for reason in dropped for name in TUNED_BY.get(reason, ())]
    if tuned:
        raise ConfigError(f"the AlphaEarth filters drop all {report['rows_in']} points of {csv_path} "
                          f"(dropped: {dropped}); check {', '.join(tuned)}")
    raise InputDataError(csv_path, f"none of its {report['rows_in']} rows passes the filters (dropped: {dropped})",
                         "Check the file; re-run `dvc repro fetch_alphaearth` to fetch it again")


def read_raw(raw_dir: str | Path):
    """The raw metadata frame and its [N, 64] float32 embeddings, validated against each other."""
    import pandas as pd
    import torch

    raw_dir = Path(raw_dir)
    csv_path, pt_path = raw_dir / METADATA_FILE, raw_dir / EMBEDDINGS_FILE
    fetch_fix = "Re-run `dvc repro fetch_alphaearth` to fetch it again"
    try:
        frame = pd.read_csv(csv_path, dtype={"event_date": "string"})
    except FileNotFoundError:
        raise InputDataError(csv_path, "missing", fetch_fix) from None
    except Exception as exc:  # noqa: BLE001 - pandas raises several types for a corrupt CSV
        raise InputDataError(csv_path, f"not a readable CSV ({exc})", fetch_fix) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputDataError(csv_path, f"missing column(s) {missing}", f"The file needs columns {list(REQUIRED_COLUMNS)}")
    try:
        tensor = torch.load(pt_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputDataError(pt_path, "missing", fetch_fix) from None
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a truncated file
        raise InputDataError(pt_path, f"not a readable torch tensor file, truncated or corrupt ({exc})", fetch_fix) from None
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2 or tensor.shape[1] != EMBEDDING_DIM:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InputDataError(pt_path, f"holds {shape}, not one [N, {EMBEDDING_DIM}] tensor", fetch_fix)
    if not (tensor.dtype.is_floating_point or tensor.dtype == torch.int8):
        raise InputDataError(pt_path, f"has dtype {tensor.dtype}; expected a float or int8 tensor", fetch_fix)
    if len(tensor) != len(frame):
        raise InputDataError(pt_path, f"has {len(tensor)} rows but {csv_path.name} has {len(frame)}",
                             "The two files must come from the same release; re-run fetch_alphaearth")
    return frame, embeddings_as_float((tensor if tensor.dtype == torch.int8 else tensor.float()).numpy())


def clean_alphaearth(raw_dir: str | Path, out_dir: str | Path, cleaning_params) -> dict:
    """Read data/raw/alphaearth, filter, and write points.parquet, coords.npy, embeddings.npy and
    cleaning_report.json into ``out_dir``; return the report. Nothing is written if no point is kept."""
    from terrapipe.atomic import write_json

    out_dir = Path(out_dir)
    frame, embeddings = read_raw(raw_dir)
    points, coords, keep, report = clean_points(frame, embeddings, cleaning_params)
    refuse_empty(frame, report, cleaning_params, Path(raw_dir) / METADATA_FILE)
    del frame
    points.to_parquet(out_dir / "points.parquet", index=False)
    np.save(out_dir / "coords.npy", coords)
    kept_rows = np.flatnonzero(keep)
    store = NpyRows(out_dir / "embeddings.npy", np.float32, (len(kept_rows), EMBEDDING_DIM))
    for first in range(0, len(kept_rows), ROWS_PER_WRITE):  # no second full copy of the embeddings
        store.write_rows(first, embeddings[kept_rows[first:first + ROWS_PER_WRITE]])
    store.close()
    write_json(out_dir / "cleaning_report.json", report)
    log.info("alphaearth: kept %d of %d points; dropped %s", report["rows_out"], report["rows_in"],
             {k: v for k, v in report["dropped"].items() if v})
    return report
