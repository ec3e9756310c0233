"""The repository's files as the catalog's mirrored tables (terrapipe.catalog.schema.MIRRORED).

Each loader reads through the library's own checked readers where one exists (the study definition,
the split stage's point readers) and returns a frame in the table's column order. A file that does
not exist yet (a fresh clone before `dvc pull` / `dvc repro`) is not an error: the loader appends
what is missing, with the command that makes it, to ``missing`` and returns no rows. A file that
exists but is broken is an InputDataError, as everywhere else.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from terrapipe import paths
from terrapipe.catalog.schema import column_names
from terrapipe.errors import InputDataError

SAMPLE_SPLITS = {"sentinel": "sites", "alphaearth": "alphaearth", "deepearth": "deepearth"}  # whose split each uses
STORE_SITES = paths.processed("sentinel") / "sites.parquet"
STORE_TIMESTAMPS = paths.processed("sentinel") / "timestamps.npy"   # [N, T, 3] (day, month, year)


def _empty(table: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in column_names(table)})


def _optional(load: Callable[[], pd.DataFrame], missing: list[str]) -> pd.DataFrame | None:
    """``load()``, or None (and a line in ``missing``) when its file does not exist yet."""
    try:
        return load()
    except InputDataError as exc:
        if exc.problem != "missing":
            raise
        missing.append(f"{exc.path} ({exc.fix})")
        return None


def _read_table(path: Path, columns: list[str], stage: str) -> pd.DataFrame:
    fix = f"Run `dvc repro {stage}`"
    if not path.exists():
        raise InputDataError(path, "missing", fix)
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file or absent column
        raise InputDataError(path, f"unreadable or lacks columns {columns} ({exc})", fix) from None


def _split_stage(dataset: str) -> str:
    return "split_sites" if dataset == "sites" else f"split@{dataset}"


def load_splits(root: Path, missing: list[str]) -> pd.DataFrame:
    """splits: every split stage's assignments.parquet that exists."""
    frames = []
    for dataset in paths.SPLIT_DATASETS:
        frame = _optional(lambda d=dataset: _read_table(root / paths.split_assignments(d), ["id", "split", "split_reason"],
                                                         _split_stage(d)), missing)
        if frame is not None:
            frames.append(frame.assign(dataset=dataset, id=frame["id"].astype(str)))
    return pd.concat(frames, ignore_index=True)[column_names("splits")] if frames else _empty("splits")


def _sites_per_aoi(root: Path, missing: list[str]) -> int | None:
    from terrapipe.config import load_params

    params_path = root / "params.yaml"
    if not params_path.exists():
        missing.append(f"{params_path} (so the sites table lists every candidate site, not study.sites_per_aoi per AOI)")
        return None
    return load_params(params_path).study.sites_per_aoi


def load_sites(root: Path, missing: list[str]) -> pd.DataFrame:
    """sites: the study's selected sites with their AOI's name and labels, and the site split."""
    from terrapipe.study import load_study

    sites_per_aoi = _sites_per_aoi(root, missing)
    study = _optional(lambda: load_study(root / paths.INPUTS, sites_per_aoi), missing)
    if study is None:
        return _empty("sites")
    aois = study.aois.rename(columns={"name": "aoi_name"})
    labels = [c for c in ("aoi_name", "koppen", "dominant_cover") if c in aois.columns]
    frame = study.sites.merge(aois[["aoi_id", *labels]], on="aoi_id", how="left")
    for column in ("koppen", "dominant_cover"):
        if column not in frame.columns:
            frame[column] = None
    split = _optional(lambda: _read_table(root / paths.split_assignments("sites"), ["id", "split", "split_reason"],
                                          "split_sites"), missing)
    if split is None:
        frame = frame.assign(split=None, split_reason=None)
    else:
        frame = frame.merge(split.rename(columns={"id": "site_id"}), on="site_id", how="left")
    frame["start_date"] = frame["start_date"].dt.date
    frame["end_date"] = frame["end_date"].dt.date
    return frame[column_names("sites")]


def _store_samples(root: Path, missing: list[str]) -> pd.DataFrame:
    sites = _read_table(root / STORE_SITES, ["row", "site_id", "aoi_id", "latitude", "longitude"], "normalize_sentinel")
    year = None
    if not (root / STORE_TIMESTAMPS).exists():
        missing.append(f"{root / STORE_TIMESTAMPS} (the sentinel samples have no year; `dvc repro normalize_sentinel`)")
    else:  # the year of each site's first timestep
        stamps = np.load(root / STORE_TIMESTAMPS, mmap_mode="r")
        if stamps.ndim != 3 or stamps.shape[0] != len(sites) or stamps.shape[2] != 3:
            raise InputDataError(root / STORE_TIMESTAMPS, f"has shape {stamps.shape}, not [{len(sites)}, T, 3] "
                                 f"for the {len(sites)} sites of {STORE_SITES.name}", "Run `dvc repro normalize_sentinel`")
        year = np.asarray(stamps[sites["row"].to_numpy(), 0, 2], dtype=np.int64)
    return sites.assign(dataset="sentinel", id=sites["site_id"], year=year)


def _point_samples(root: Path, dataset: str) -> pd.DataFrame:
    from terrapipe.data.split_io import ALPHAEARTH_INPUT, DEEPEARTH_INPUT, read_points

    path, id_column = {"alphaearth": (ALPHAEARTH_INPUT, "point_id"), "deepearth": (DEEPEARTH_INPUT, "observation_id")}[dataset]
    if not (root / path).exists():
        fix = {"alphaearth": "Run `dvc repro normalize_alphaearth`", "deepearth": "Run `dvc repro normalize_deepearth`"}
        raise InputDataError(root / path, "missing", fix[dataset])
    frame = read_points(root / path, id_column, [])
    return frame.assign(dataset=dataset, id=frame["id"].astype(str), site_id=None, aoi_id=None)


def load_samples(root: Path, missing: list[str]) -> pd.DataFrame:
    """samples (without split): every training sample of the data sets that exist, plus ``split_dataset``."""
    loads = {"sentinel": lambda: _store_samples(root, missing),
             "alphaearth": lambda: _point_samples(root, "alphaearth"),
             "deepearth": lambda: _point_samples(root, "deepearth")}
    columns = [c for c in column_names("samples") if c != "split"]
    frames = [frame[columns].assign(split_dataset=SAMPLE_SPLITS[dataset])
              for dataset, load in loads.items() if (frame := _optional(load, missing)) is not None]
    if not frames:
        return _empty("samples").drop(columns="split").assign(split_dataset=pd.Series(dtype=object))
    return pd.concat(frames, ignore_index=True)
