"""validate, points group: the AlphaEarth points, the DeepEarth observations and their splits.

Each table carries the columns its contract needs (embedding norms, row counts of the matrices next to
what the tables say they should be), so a truncated or overwritten array fails like a bad column.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from terrapipe import paths
from terrapipe.data.validation.checks import (
    BOOL,
    FLOAT,
    INT,
    TEXT,
    TIME,
    Table,
    between,
    equal_pair,
    in_set,
    rows_at_least,
    schema_table,
    unique,
)
from terrapipe.data.validation.split_checks import read_years, split_tables


def _row_norms(path) -> tuple[np.ndarray, int]:
    """L2 norm of each row of a memory-mapped matrix (NaN where a value is not finite) and its row count."""
    matrix = np.load(path, mmap_mode="r")
    norms = np.linalg.norm(np.asarray(matrix, np.float64), axis=1)
    return norms, len(matrix)


def array_rows(name: str, arrays: list[tuple[str, int, int]]) -> Table:
    """One row per matrix: the rows it has beside the rows its table says it must have."""
    frame = pd.DataFrame(arrays, columns=["file", "rows", "expected_rows"])
    return Table(name, ", ".join(frame["file"]), frame, ("file",),
                 (equal_pair("rows", "expected_rows", "each matrix row belongs to exactly one table row"),))


def alphaearth_tables(params) -> list[Table]:
    folder = paths.processed("alphaearth")
    cleaning = params.normalize.alphaearth
    points = pd.read_parquet(folder / "points.parquet")
    norms, n_embeddings = _row_norms(folder / "embeddings.npy")
    coords_rows = len(np.load(folder / "coords.npy", mmap_mode="r"))
    points["embedding_norm"] = norms if len(norms) == len(points) else np.nan
    types = {"point_id": INT, "latitude": FLOAT, "longitude": FLOAT, "elevation_m": FLOAT, "event_date": TIME,
             "year": INT, "t_norm": FLOAT}
    checks = (unique("point_id", "a point is one row"),
              between("latitude", -90, 90, "WGS84 latitude"),
              between("longitude", -180, 180, "WGS84 longitude"),
              between("elevation_m", cleaning.min_elevation_m, cleaning.max_elevation_m,
                      "normalize.alphaearth's elevation limits were applied"),
              between("t_norm", 0, 1, "DeepEarth's time normalization maps the kept years into [0, 1]"),
              between("embedding_norm", 0.99, 1.01, "AlphaEarth embeddings are unit vectors, all finite"),
              rows_at_least(1, "the filters left points to train on"))
    source = str(folder / "points.parquet")
    return [schema_table("alphaearth_points", source, points, types),
            Table("alphaearth_points", source, points, ("point_id", "latitude", "longitude"), checks),
            array_rows("alphaearth_arrays", [(str(folder / "embeddings.npy"), n_embeddings, len(points)),
                                             (str(folder / "coords.npy"), coords_rows, len(points))])]


def deepearth_tables(study) -> list[Table]:
    folder = paths.processed("deepearth")
    observations = pd.read_parquet(folder / "observations.parquet")
    species = pd.read_parquet(folder / "species.parquet")
    vision_norms, n_vision = _row_norms(folder / "vision_embeddings.npy")
    language_norms, n_language = _row_norms(folder / "language_embeddings.npy")
    row = observations["vision_row"].to_numpy()
    valid_row = (row >= 0) & (row < n_vision)
    observations["vision_norm"] = np.where(valid_row, vision_norms[np.clip(row, 0, max(n_vision - 1, 0))], np.nan)
    observations["vision_row_matches_flag"] = observations["has_vision"] == valid_row
    species["language_norm"] = language_norms if n_language == len(species) else np.nan
    west, south, east, north = study.deepearth_bbox
    types = {"observation_id": TEXT, "taxon_id": TEXT, "taxon_name": TEXT, "species_index": INT, "latitude": FLOAT,
             "longitude": FLOAT, "year": INT, "month": INT, "day": INT, "has_vision": BOOL, "vision_row": INT}
    checks = (unique("observation_id", "an observation is one row"),
              between("latitude", south, north, "inside the study box (data/inputs/study.yaml deepearth.bbox)"),
              between("longitude", west, east, "inside the study box (data/inputs/study.yaml deepearth.bbox)"),
              between("year", 1900, 2100, "an observation year"),
              between("month", 1, 12, "a calendar month"),
              between("day", 1, 31, "a calendar day"),
              between("species_index", 0, len(species) - 1, "every observation's species is in species.parquet"),
              in_set("vision_row_matches_flag", {True}, "has_vision is true exactly when a vision embedding exists"),
              between("vision_norm", 1e-6, None, "vision embeddings are finite and not all zero"),
              rows_at_least(1, "observations to train on"))
    species_checks = (unique("species_index", "one row per species"),
                      between("language_norm", 1e-6, None, "each species has one finite, non-zero language embedding"))
    source = str(folder / "observations.parquet")
    return [schema_table("deepearth_observations", source, observations, types),
            Table("deepearth_observations", source, observations,
                  ("observation_id", "taxon_name"), checks),
            Table("deepearth_species", str(folder / "species.parquet"), species, ("species_index", "taxon_name"),
                  species_checks),
            array_rows("deepearth_arrays", [(str(folder / "vision_embeddings.npy"), n_vision,
                                             int(observations["has_vision"].sum())),
                                            (str(folder / "language_embeddings.npy"), n_language, len(species))])]


def tables(params, study) -> list[Table]:
    """Every table of the points group, in report order."""
    deepearth_years = read_years(paths.processed("deepearth") / "observations.parquet", "observation_id")
    alphaearth_years = read_years(paths.processed("alphaearth") / "points.parquet", "point_id")
    return [*alphaearth_tables(params), *deepearth_tables(study),
            *split_tables("deepearth", deepearth_years), *split_tables("alphaearth", alphaearth_years)]
