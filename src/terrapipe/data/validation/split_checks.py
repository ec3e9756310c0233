"""The split invariants of every split@<dataset> output: disjoint, held-out space and time really held out."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from terrapipe import paths
from terrapipe.data.validation.checks import FLOAT, TEXT, Table, in_set, rows_at_least, schema_table, unique


def in_regions(latitude, longitude, regions: list[dict]) -> np.ndarray:
    """Whether each point lies inside any of the split's test boxes (split.json test_spatial_regions)."""
    inside = np.zeros(len(latitude), bool)
    for region in regions:
        b = region["bounds"]
        inside |= ((latitude >= b["south"]) & (latitude <= b["north"]) & (longitude >= b["west"])
                   & (longitude <= b["east"]))
    return inside


def split_tables(dataset: str, years: pd.Series | None = None) -> list[Table]:
    """assignments.parquet (schema, then invariants as columns: a train row in a test region or year fails).

    ``years`` maps id -> year for datasets with a temporal holdout (None: spatial holdout only).
    """
    folder = paths.split_dir(dataset)
    frame = pd.read_parquet(folder / "assignments.parquet")
    split = json.loads((folder / "split.json").read_text())
    test_years = split["split_strategy"]["temporal_split"]["test_years"]
    frame["in_test_region"] = in_regions(frame["latitude"].to_numpy(), frame["longitude"].to_numpy(),
                                         split["test_spatial_regions"])
    year = frame["id"].map(years) if years is not None else pd.Series(np.nan, index=frame.index)
    frame["in_test_year"] = year.isin(test_years)
    is_train, is_test = frame["split"] == "train", frame["split"] == "test"
    frame["train_in_test_region"] = is_train & frame["in_test_region"]
    frame["train_in_test_year"] = is_train & frame["in_test_year"]
    frame["test_without_reason"] = is_test & ~(frame["in_test_region"] | frame["in_test_year"])
    checks = (unique("id", "a point is in exactly one split: train and test are disjoint"),
              in_set("split", {"train", "test"}, "every point is assigned"),
              in_set("train_in_test_region", {False}, "test regions hold no training point"),
              in_set("train_in_test_year", {False}, "held-out years hold no training point"),
              in_set("test_without_reason", {False}, "a test point lies in a test region or a test year"),
              rows_at_least(1, "a split of nothing trains nothing"))
    source = str(folder / "assignments.parquet")
    types = {"id": TEXT, "split": TEXT, "split_reason": TEXT, "latitude": FLOAT, "longitude": FLOAT}
    return [schema_table(f"{dataset}_split", source, frame, types),
            Table(f"{dataset}_split", source, frame, ("id", "split", "split_reason"), checks)]


def read_years(path: Path, id_column: str) -> pd.Series:
    """id -> year of a processed point table, for the temporal invariant."""
    frame = pd.read_parquet(path, columns=[id_column, "year"])
    return pd.Series(frame["year"].to_numpy(), index=frame[id_column].astype(str).to_numpy())
