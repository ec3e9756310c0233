"""The validate stages: GX suites pass on good data and name the data set, expectation and rows that break.

One small pipeline run (SMALL_PARAMS) is shared; each test corrupts its own copy of the outputs.
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_PARAMS, run_stage

from terrapipe import paths

PIPELINE = ("fetch_era5", "fetch_sentinel", "fetch_alphaearth", "fetch_deepearth", ("split", "sites"),
            "normalize_era5", "normalize_sentinel", "normalize_alphaearth", "normalize_deepearth",
            ("split", "deepearth"), ("split", "alphaearth"))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A working directory after every data stage ran on SMALL_PARAMS."""
    import yaml

    from terrapipe.study import write_default_inputs

    root = tmp_path_factory.mktemp("validated")
    write_default_inputs(root / "data" / "inputs")
    (root / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS))
    for stage in PIPELINE:
        name, *args = (stage,) if isinstance(stage, str) else stage
        run_stage(name, *args, cwd=root)
    return root


@pytest.fixture
def copy(pipeline, tmp_path, monkeypatch):
    """A private copy of the pipeline outputs, as the working directory."""
    target = tmp_path / "repo"
    shutil.copytree(pipeline, target)
    monkeypatch.chdir(target)
    return target


def validate():
    from terrapipe.config import load_params
    from terrapipe.data.validation import validate_all
    from terrapipe.study import load_study

    params = load_params("params.yaml")
    return validate_all(params, load_study(paths.INPUTS, params.study.sites_per_aoi), paths.DATA_DOCS)


def test_every_group_passes_on_the_pipeline_outputs_and_leaves_data_docs(pipeline, monkeypatch):
    run_stage("validate", cwd=pipeline)
    report = json.loads((pipeline / paths.VALIDATION_REPORT).read_text())
    assert report["success"] and list(report["groups"]) == list(paths.VALIDATION_GROUPS)
    index = (pipeline / paths.DATA_DOCS / "index.html").read_text()
    for group in report["groups"].values():
        for name, data_set in group.items():
            assert data_set["expectations"] and all(e["success"] for e in data_set["expectations"]), name
            assert name in index
    monkeypatch.chdir(pipeline)  # no run id or time in the report: the DVC output changes only with the data
    assert json.loads(json.dumps(validate())) == report


def test_a_corrupted_store_raw_summary_and_series_fail_validate_naming_what_broke(copy):
    store = paths.processed("sentinel")
    before = (copy / paths.VALIDATION_REPORT).read_bytes()
    s2 = np.load(store / "s2.npy", mmap_mode="r+")
    s2[0, :, :, 0, :] = 7.5                    # a site's first month overwritten: 30 train std off
    s2.flush()
    raw = pd.read_parquet(store / "raw_files.parquet")
    raw.loc[3, "epsg"] = 4326                  # a file relabelled EPSG:4326
    raw.to_parquet(store / "raw_files.parquet", index=False)
    series = paths.processed("era5") / "series_raw.npy"
    values = np.load(series)
    values[..., 0] -= 273.15                   # t2m in degrees C
    np.save(series, values)

    result = run_stage("validate", cwd=copy, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr
    for expected in ("data set sentinel_store_bands", "norm_train_mean", "data set sentinel_raw_files",
                     "ExpectColumnPairValuesToBeEqual on column epsg", raw.loc[3, "file"],
                     "data set era5_site_months", "ExpectColumnValuesToBeBetween on column t2m", "Data Docs:"):
        assert expected in message, message
    assert "Traceback" not in message
    assert (copy / paths.VALIDATION_REPORT).read_bytes() == before  # the old report stays in place
    pages = "".join(p.read_text() for p in (copy / paths.DATA_DOCS).rglob("*.html"))
    assert "sentinel_store_bands" in pages and "epsg" in pages
    assert "Failed" in pages or "failed" in pages


def test_split_invariants_catch_a_training_point_in_a_test_region(copy):
    split = paths.split_assignments("deepearth")
    frame = pd.read_parquet(split)
    test_row = frame.index[frame["split_reason"].str.startswith("spatial_test")][0]
    frame.loc[test_row, "split"] = "train"
    frame.to_parquet(split, index=False)
    from terrapipe.data.validation.gx import DataContractError

    with pytest.raises(DataContractError) as failure:
        validate()
    message = str(failure.value)
    assert "deepearth_split" in message and "train_in_test_region" in message and frame.loc[test_row, "id"] in message


def test_a_schema_change_is_named_by_column(copy):
    points = paths.processed("alphaearth") / "points.parquet"
    pd.read_parquet(points).drop(columns=["t_norm"]).to_parquet(points, index=False)
    from terrapipe.data.validation.gx import DataContractError

    with pytest.raises(DataContractError) as failure:
        validate()
    assert "alphaearth_points_schema" in str(failure.value) and "'column': 't_norm'" in str(failure.value)


def test_great_expectations_is_imported_only_by_the_validate_stages():
    code = ("import sys, terrapipe.data.validation, terrapipe.data.validation.imagery, "
            "terrapipe.data.validation.points, terrapipe.stage, terrapipe.cli; "
            "print('great_expectations' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
