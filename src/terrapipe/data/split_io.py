"""Reading the point datasets the split stage works on, and writing its outputs.

Every dataset becomes a ``Points`` frame (id, latitude, longitude, [year], mapping fields), is split by
terrapipe.data.split with params.split.<dataset>, and lands in data/processed/splits/<dataset>/ in one
atomic rename: split.json (DeepEarth's schema), assignments.parquet (id, split, split_reason, latitude,
longitude: what downstream stages join on) and split_map.png; alphaearth's per-point mappings are too
many for JSON and go to observation_mappings.parquet instead.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from terrapipe import paths
from terrapipe.data.split import (
    ASSIGNMENT_COLUMNS,
    observation_table,
    plot_split,
    spatiotemporal_split,
    split_to_json,
)
from terrapipe.errors import InputDataError

log = logging.getLogger("terrapipe")
SPLITS_DIR = paths.SPLITS
DEEPEARTH_INPUT = paths.processed("deepearth") / "observations.parquet"
ALPHAEARTH_INPUT = paths.processed("alphaearth") / "points.parquet"
MAPPINGS_PARQUET = "observation_mappings.parquet"


@dataclass(frozen=True)
class Points:
    """A dataset ready to split: ``frame`` has id, latitude, longitude, [year], then mapping fields."""
    frame: pd.DataFrame
    meta: dict
    center_column: str = "id"
    species_column: str | None = None
    inline_mappings: bool = True


def read_points(path: Path, id_column: str, columns: list[str]) -> pd.DataFrame:
    """Read a processed point parquet, checking what the split relies on; id_column becomes ``id``."""
    fix = "Regenerate it with `dvc repro` (the stage that writes it)"
    if not path.exists():
        raise InputDataError(path, "missing", fix)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is reported the same way
        raise InputDataError(path, f"not a readable Parquet file ({exc})", fix) from None
    required = [id_column, "latitude", "longitude", "year", *columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputDataError(path, f"missing column(s) {missing}", f"The file needs columns {required}. {fix}")
    if frame[id_column].isna().any() or frame[id_column].duplicated().any():
        raise InputDataError(path, f"column '{id_column}' has empty or duplicated ids", fix)
    for column, low, high in (("latitude", -90, 90), ("longitude", -180, 180), ("year", 1, 9999)):
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values):
            raise InputDataError(path, f"column '{column}' is not numeric ({values.dtype})", fix)
        bad = values.isna() | ~values.between(low, high)
        if column == "year":
            bad |= values % 1 != 0
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputDataError(path, f"column '{column}' = {values.iloc[row]} at row {row} is empty, not a "
                                 f"whole number or outside [{low}, {high}]", fix)
    frame = frame.astype({"year": "int64"}).rename(columns={id_column: "id"})
    return frame[["id", "latitude", "longitude", "year", *columns]]


def load_sites(params, inputs_dir: Path) -> Points:
    from terrapipe.study import load_study

    sites = load_study(inputs_dir, params.study.sites_per_aoi).sites
    frame = sites.rename(columns={"site_id": "id"})[["id", "latitude", "longitude", "aoi_id"]]
    return Points(frame, {"dataset_name": "sites", "input": str(Path(inputs_dir) / "sites.csv"),
                          "description": "Study sites (no time axis): spatial holdout only"})


def load_deepearth(params, inputs_dir: Path) -> Points:
    frame = read_points(DEEPEARTH_INPUT, "observation_id",
                        ["gbif_id", "taxon_id", "taxon_name", "month", "day", "has_vision"])
    if params.split.deepearth.require_vision:
        frame = frame[frame["has_vision"].fillna(False).astype(bool)]
        if frame.empty:
            raise InputDataError(DEEPEARTH_INPUT, "no row has has_vision == True",
                                 "Set split.deepearth.require_vision: false, or check the vision embeddings")
    # One image per observation, as in the original (its ids are "{gbif_id}_1").
    frame = frame.drop(columns="has_vision").assign(image_index=1)
    return Points(frame, {"dataset_name": "central-florida-native-plants",
                          "source": params.sources.deepearth.source, "input": str(DEEPEARTH_INPUT),
                          "description": "Spatial and temporal train/test split for DeepEarth ML training"},
                  center_column="gbif_id", species_column="taxon_name")


def load_alphaearth(params, inputs_dir: Path) -> Points:
    frame = read_points(ALPHAEARTH_INPUT, "point_id", [])
    return Points(frame, {"dataset_name": "alphaearth", "source": params.sources.alphaearth.source,
                          "input": str(ALPHAEARTH_INPUT),
                          "description": "Spatial and temporal train/test split of the AlphaEarth points"},
                  inline_mappings=False)


LOADERS = {"sites": load_sites, "deepearth": load_deepearth, "alphaearth": load_alphaearth}


def write_split(dataset: str, params, inputs_dir: Path, out_dir: Path = SPLITS_DIR) -> None:
    """Split ``dataset`` with params.split.<dataset>; write its folder under ``out_dir`` in one rename."""
    from terrapipe.atomic import atomic_path, write_json

    points = LOADERS[dataset](params, inputs_dir)
    frame = points.frame
    lat, lon = frame["latitude"].to_numpy(float), frame["longitude"].to_numpy(float)
    year = frame["year"].to_numpy() if "year" in frame else None
    species = frame[points.species_column].to_numpy() if points.species_column else None
    result = spatiotemporal_split(lat, lon, year, getattr(params.split, dataset),
                                  species=species, where=f"split.{dataset}")
    for warning in result.warnings:
        log.warning(warning)
    table = observation_table(result, frame)
    mappings_file = None if points.inline_mappings else MAPPINGS_PARQUET
    doc = split_to_json(result, table, points.meta, center_column=points.center_column,
                        species_column=points.species_column, mappings_file=mappings_file)
    with atomic_path(out_dir / dataset, directory=True) as tmp:
        write_json(tmp / "split.json", doc)
        table[ASSIGNMENT_COLUMNS].to_parquet(tmp / "assignments.parquet", index=False)
        if mappings_file:
            table.to_parquet(tmp / mappings_file, index=False)
        plot_split(result, lat, lon, year, tmp / "split_map.png", species=species,
                   title=f"{points.meta['dataset_name']}: spatiotemporal train/test split")
    stats = result.statistics
    log.info("split %s: %d train, %d test (%d temporal, %d spatial in %d regions) -> %s", dataset,
             stats["train_count"], stats["test_count"], stats["temporal_test_count"], stats["spatial_test_count"],
             result.num_regions_found, out_dir / dataset)
