"""The spatiotemporal split: every constraint on a central-Florida-like dataset, the JSON schema, the stage."""
from __future__ import annotations

import itertools
import json
import runpy
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from terrapipe.config import SplitParams
from terrapipe.data.split import (
    ASSIGNMENT_COLUMNS,
    geodesic_km,
    observation_table,
    plot_split,
    spatiotemporal_split,
    split_to_json,
    square_region,
)
from terrapipe.errors import ConfigError, TerrapipeError

STAGE = Path(__file__).parents[1] / "stages" / "split.py"
BBOX = {"south": 28.033, "north": 28.978, "west": -81.934, "east": -80.902}  # DeepEarth's study box
ORIGINAL_KEYS = ["dataset_info", "split_strategy", "train_spatial_bounds", "test_spatial_regions",
                 "split_statistics", "observation_mappings"]
PARAMS = SplitParams(test_years=[2025], num_regions=5, region_size_km=10.0, min_distance_km=15.0, candidates=1000)


def florida(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """DeepEarth-like observations: clustered around a few towns plus background, 2010-2025, 40 species."""
    rng = np.random.default_rng(seed)
    towns = rng.uniform([BBOX["south"], BBOX["west"]], [BBOX["north"], BBOX["east"]], (6, 2))
    clustered = towns[rng.integers(0, 6, n // 2)] + rng.normal(0, 0.03, (n // 2, 2))
    background = rng.uniform([BBOX["south"], BBOX["west"]], [BBOX["north"], BBOX["east"]], (n - n // 2, 2))
    lat, lon = np.clip(np.vstack([clustered, background]), [BBOX["south"], BBOX["west"]],
                       [BBOX["north"], BBOX["east"]]).T
    return pd.DataFrame({"id": [f"{4_000_000_000 + i}_1" for i in range(n)], "latitude": lat, "longitude": lon,
                         "year": rng.integers(2010, 2026, n), "gbif_id": 4_000_000_000 + np.arange(n),
                         "taxon_name": rng.choice([f"Species {i}" for i in range(40)], n)})


@pytest.fixture(scope="module")
def points() -> pd.DataFrame:
    return florida()


def run(points: pd.DataFrame, params: SplitParams = PARAMS, **kwargs):
    return spatiotemporal_split(points["latitude"].to_numpy(), points["longitude"].to_numpy(),
                                points["year"].to_numpy(), params, species=points["taxon_name"].to_numpy(), **kwargs)


def to_json(result, points: pd.DataFrame) -> dict:
    return split_to_json(result, observation_table(result, points), {"dataset_name": "test"},
                         center_column="gbif_id", species_column="taxon_name")


@pytest.fixture(scope="module")
def result(points):
    return run(points)


def test_every_test_year_point_is_test_and_train_has_no_test_year(points, result):
    held_out = points["year"].to_numpy() == 2025
    assert held_out.any() and (result.split[held_out] == "test").all()
    assert set(result.split_reason[held_out]) <= {"temporal_test"} | {f"spatial_test_region_{k}" for k in range(1, 6)}
    assert not (points["year"].to_numpy()[result.split == "train"] == 2025).any()
    assert set(result.split_reason[result.split == "train"]) == {"temporal_train"}


@pytest.mark.parametrize("size_km", [2.0, 10.0, 50.0])
def test_regions_are_size_by_size_km_on_the_ellipsoid(points, size_km):
    regions = run(points, PARAMS.model_copy(update={"region_size_km": size_km})).regions
    assert regions
    for r in regions:
        height = geodesic_km(r.south, r.center_lng, r.north, r.center_lng)[0]
        width = geodesic_km(r.center_lat, r.west, r.center_lat, r.east)[0]
        assert height == pytest.approx(size_km, rel=1e-3)
        assert width == pytest.approx(size_km, rel=1e-3)  # chord vs parallel arc: < 0.01% at 50 km
        assert r.contains(np.array([r.center_lat]), np.array([r.center_lng]))[0]


def test_region_centres_are_at_least_min_distance_apart(result):
    assert result.num_regions_found == 5
    for a, b in itertools.combinations(result.regions, 2):
        assert geodesic_km(a.center_lat, a.center_lng, b.center_lat, b.center_lng)[0] >= PARAMS.min_distance_km


def test_no_train_point_lies_in_any_region(points, result):
    lat, lon = points["latitude"].to_numpy(), points["longitude"].to_numpy()
    for r in result.regions:
        inside = (lat >= r.south) & (lat <= r.north) & (lon >= r.west) & (lon <= r.east)
        assert inside.any() and (result.split[inside] == "test").all()
        assert (result.region_of[inside] <= r.region_id).all()


def test_overlapping_boxes_give_points_to_the_lowest_region(points):
    result = run(points, PARAMS.model_copy(update={"region_size_km": 40.0, "min_distance_km": 5.0,
                                                    "num_regions": 10}))
    lat, lon = points["latitude"].to_numpy(), points["longitude"].to_numpy()
    inside = np.array([r.contains(lat, lon) for r in result.regions])
    overlapped = inside.sum(axis=0) > 1
    assert overlapped.any()
    np.testing.assert_array_equal(result.region_of[overlapped], inside[:, overlapped].argmax(axis=0) + 1)


def test_statistics_match_the_mappings(points, result):
    doc = to_json(result, points)
    stats, mappings = doc["split_statistics"], doc["observation_mappings"]
    splits = Counter(m["split"] for m in mappings.values())
    reasons = Counter(m["split_reason"] for m in mappings.values())
    assert stats["total_observations"] == len(mappings) == len(points)
    assert (stats["train_count"], stats["test_count"]) == (splits["train"], splits["test"])
    assert stats["train_percentage"] == pytest.approx(100 * splits["train"] / len(mappings))
    assert stats["train_percentage"] + stats["test_percentage"] == pytest.approx(100)
    assert stats["temporal_test_count"] == reasons["temporal_test"]
    assert stats["spatial_test_count"] == stats["test_count"] - stats["temporal_test_count"]
    assert stats["spatial_test_count_by_region"] == {str(k): reasons[f"spatial_test_region_{k}"] for k in range(1, 6)}
    names = dict(zip(points["id"], points["taxon_name"]))
    species = {s: {names[i] for i, m in mappings.items() if m["split"] == s} for s in ("train", "test")}
    assert stats["unique_species_train"] == len(species["train"])
    assert stats["unique_species_test"] == len(species["test"])
    assert stats["unique_species_total"] == points["taxon_name"].nunique()
    assert stats["year_counts"] == {str(y): c for y, c in sorted(Counter(m["year"] for m in mappings.values()).items())}
    train = [m for m in mappings.values() if m["split"] == "train"]
    assert doc["train_spatial_bounds"] == {"north": max(m["latitude"] for m in train),
                                           "south": min(m["latitude"] for m in train),
                                           "east": max(m["longitude"] for m in train),
                                           "west": min(m["longitude"] for m in train)}


def test_first_region_is_the_first_seeded_candidate(points, result):
    first = np.random.default_rng(PARAMS.seed).choice(len(points), PARAMS.candidates, replace=False)[0]
    assert result.regions[0].center_index == first


def test_a_box_across_the_antimeridian_keeps_its_points():
    region = square_region(1, 0, 0.0, 179.99, 10.0)
    assert region.east < region.west and region.width_deg == pytest.approx(10 / 111.32, rel=1e-3)
    inside = region.contains(np.array([0.0, 0.01, 0.0, 0.0]), np.array([179.99, -179.99, 179.9, -179.9]))
    assert list(inside) == [True, True, False, False]


def test_same_seed_gives_identical_json_and_another_seed_other_regions(points, result):
    assert json.dumps(to_json(result, points)) == json.dumps(to_json(run(points), points))
    other = run(points, PARAMS.model_copy(update={"seed": 7}))
    assert [r.center_index for r in other.regions] != [r.center_index for r in result.regions]


def test_too_large_a_distance_places_fewer_regions_without_relaxing_it(points):
    # The box is ~100 x 105 km: five centres cannot all be 80 km apart (the original would relax to 64 km).
    params = PARAMS.model_copy(update={"min_distance_km": 80.0})
    result = run(points, params, where="split.deepearth")
    assert 2 <= result.num_regions_found < params.num_regions
    assert len(result.warnings) == 1 and "split.deepearth.min_distance_km" in result.warnings[0]
    for a, b in itertools.combinations(result.regions, 2):
        assert geodesic_km(a.center_lat, a.center_lng, b.center_lat, b.center_lng)[0] >= 80.0
    spatial = to_json(result, points)["split_strategy"]["spatial_split"]
    assert (spatial["num_test_regions"], spatial["num_regions_requested"]) == (result.num_regions_found, 5)
    assert spatial["warnings"] == list(result.warnings)


def test_error_when_no_region_can_be_placed():
    empty = np.array([], dtype=float)
    with pytest.raises(TerrapipeError, match=r"split\.sites\.num_regions"):
        spatiotemporal_split(empty, empty, None, SplitParams(), where="split.sites")


def test_error_when_no_training_point_is_left(points):
    with pytest.raises(TerrapipeError, match=r"split\.region_size_km"):
        run(points, PARAMS.model_copy(update={"region_size_km": 400.0}))


def test_datasets_without_time(points):
    lat, lon = points["latitude"].to_numpy(), points["longitude"].to_numpy()
    result = spatiotemporal_split(lat, lon, None, PARAMS.model_copy(update={"test_years": []}))
    assert set(result.split_reason[result.split == "train"]) == {"temporal_train"}
    assert "year_counts" not in result.statistics and "unique_species_train" not in result.statistics
    with pytest.raises(ConfigError, match=r"split\.sites\.test_years"):
        spatiotemporal_split(lat, lon, None, PARAMS, where="split.sites")


def test_json_has_the_original_schema(points, result):
    doc = to_json(result, points)
    assert list(doc) == ORIGINAL_KEYS
    assert set(doc["split_strategy"]) == {"temporal_split", "spatial_split"}
    assert doc["split_strategy"]["temporal_split"]["test_years"] == [2025]
    region = doc["test_spatial_regions"][0]
    assert list(region) == ["region_id", "center_gbif_id", "center_species", "center_lat", "center_lng", "bounds",
                            "size_km"]
    assert isinstance(region["center_gbif_id"], int) and set(region["bounds"]) == {"north", "south", "east", "west"}
    first = next(iter(doc["observation_mappings"].values()))
    assert {"split", "split_reason", "latitude", "longitude", "year", "gbif_id", "taxon_name"} <= set(first)
    json.dumps(doc, allow_nan=False)
    plain = split_to_json(result, observation_table(result, points), {}, mappings_file="m.parquet")
    assert "center_id" in plain["test_spatial_regions"][0] and "center_species" not in plain["test_spatial_regions"][0]
    assert "observation_mappings" not in plain and plain["observation_mappings_file"] == "m.parquet"
    assert list(observation_table(result, points).columns[:5]) == ASSIGNMENT_COLUMNS


def test_plot_of_50k_points(tmp_path):
    big = florida(50_000, seed=1)
    result = run(big)
    plot_split(result, big["latitude"], big["longitude"], big["year"], tmp_path / "map.png",
               species=big["taxon_name"].to_numpy())
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the stage -------------------------------------------------------------------------------------
def _write_params(root: Path, split: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({"split": split}))


def _run_in_process(root: Path, dataset: str, monkeypatch) -> None:
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", [str(STAGE), dataset])
    monkeypatch.syspath_prepend(str(STAGE.parent))  # as when Python runs the script: its folder first
    runpy.run_path(str(STAGE), run_name="__main__")


def test_stage_sites_writes_outputs_and_keeps_them_on_bad_input(tmp_path):
    from terrapipe.config import StudyParams
    from terrapipe.study import DEFAULT_AOIS, write_default_inputs

    write_default_inputs(tmp_path / "data" / "inputs")
    _write_params(tmp_path, {"sites": {"num_regions": 3, "region_size_km": 10.0, "min_distance_km": 50.0}})
    command = [sys.executable, str(STAGE), "sites"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "data" / "processed" / "splits" / "sites"
    assert sorted(p.name for p in out.iterdir()) == ["assignments.parquet", "split.json", "split_map.png"]
    doc = json.loads((out / "split.json").read_text())
    assert list(doc) == ORIGINAL_KEYS and len(doc["test_spatial_regions"]) == 3
    assignments = pd.read_parquet(out / "assignments.parquet")
    per_aoi = StudyParams().sites_per_aoi  # the default (params here give no study section)
    assert list(assignments.columns) == ASSIGNMENT_COLUMNS and len(assignments) == per_aoi * len(DEFAULT_AOIS)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    (tmp_path / "data" / "inputs" / "sites.csv").write_text("site_id,aoi_id\nx,central-florida\n")
    failed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "sites.csv" in failed.stderr and "latitude" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["sites"]  # no temporary leftovers


def _deepearth_parquet(root: Path, points: pd.DataFrame) -> Path:
    path = root / "data" / "processed" / "deepearth" / "observations.parquet"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(3)
    points.rename(columns={"id": "observation_id"}).assign(
        taxon_id=points["taxon_name"].str.replace("Species ", "taxon-"), month=rng.integers(1, 13, len(points)),
        day=rng.integers(1, 29, len(points)), has_vision=rng.random(len(points)) < 0.6).to_parquet(path)
    return path


def test_stage_deepearth_keeps_vision_rows_and_writes_the_original_mappings(tmp_path, points, monkeypatch):
    source = _deepearth_parquet(tmp_path, points)
    _write_params(tmp_path, {"deepearth": {"test_years": [2025], "require_vision": True}})
    _run_in_process(tmp_path, "deepearth", monkeypatch)
    out = tmp_path / "data" / "processed" / "splits" / "deepearth"
    doc = json.loads((out / "split.json").read_text())
    vision = pd.read_parquet(source).query("has_vision")
    assert set(doc["observation_mappings"]) == set(vision["observation_id"])
    mapping = doc["observation_mappings"][vision["observation_id"].iloc[0]]
    assert list(mapping) == ["split", "split_reason", "latitude", "longitude", "year", "gbif_id", "taxon_id",
                             "taxon_name", "month", "day", "image_index"]
    assert "center_gbif_id" in doc["test_spatial_regions"][0] and "center_species" in doc["test_spatial_regions"][0]
    assert len(pd.read_parquet(out / "assignments.parquet")) == len(vision)


def test_stage_deepearth_names_file_and_column_of_bad_input(tmp_path, points, monkeypatch, capsys):
    source = _deepearth_parquet(tmp_path, points)
    pd.read_parquet(source).drop(columns="has_vision").to_parquet(source)
    _write_params(tmp_path, {})
    with pytest.raises(SystemExit) as exit_info:
        _run_in_process(tmp_path, "deepearth", monkeypatch)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "observations.parquet" in err and "has_vision" in err
    assert not (tmp_path / "data" / "processed" / "splits").exists()


def test_stage_alphaearth_puts_mappings_in_parquet(tmp_path, points, monkeypatch):
    path = tmp_path / "data" / "processed" / "alphaearth" / "points.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"point_id": np.arange(len(points)), "latitude": points["latitude"],
                  "longitude": points["longitude"], "year": points["year"].astype(float)}).to_parquet(path)
    _write_params(tmp_path, {"alphaearth": {"test_years": [2024], "num_regions": 2, "region_size_km": 20.0,
                                            "min_distance_km": 40.0}})
    _run_in_process(tmp_path, "alphaearth", monkeypatch)
    out = tmp_path / "data" / "processed" / "splits" / "alphaearth"
    doc = json.loads((out / "split.json").read_text())
    assert "observation_mappings" not in doc and doc["observation_mappings_file"] == "observation_mappings.parquet"
    mappings = pd.read_parquet(out / doc["observation_mappings_file"])
    assert list(mappings.columns) == ASSIGNMENT_COLUMNS + ["year"] and len(mappings) == len(points)
    assert (mappings.loc[mappings["year"] == 2024, "split"] == "test").all()
    assert (out / "assignments.parquet").exists() and (out / "split_map.png").exists()
