"""The `terrapipe` command: fast help, readable errors, the resolved params and the source list."""
import subprocess
import sys

import yaml
from conftest import REPO

from terrapipe.cli import main


def test_help_imports_no_heavy_library():
    code = ("import sys; from terrapipe.cli import build_parser; build_parser().format_help(); "
            "heavy = {'torch', 'xarray', 'pandas', 'dvc', 'prefect', 'great_expectations', 'rasterio'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "terrapipe.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "sources" in result.stdout and "params" in result.stdout


def test_params_shows_resolved_value(capsys):
    assert main(["--params", str(REPO / "params.yaml"), "params", "split.deepearth.min_distance_km"]) == 0
    assert capsys.readouterr().out.strip() == "15.0"


def test_params_error_names_the_key(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"split": {"deepearth": {"min_distance_km": -5}}}))
    assert main(["--params", str(bad), "params"]) == 2
    assert "split.deepearth.min_distance_km" in capsys.readouterr().err


def test_sources_marks_the_selected_backend(capsys):
    assert main(["--params", str(REPO / "params.yaml"), "sources"]) == 0
    out = capsys.readouterr().out
    assert "* sample" in out and "cds" in out and "huggingface" in out


def test_inputs_writes_a_loadable_study(tmp_path, capsys):
    from terrapipe.study import DEFAULT_AOIS, load_study
    assert main(["inputs", "--dir", str(tmp_path / "inputs"), "--sites-per-aoi", "3"]) == 0
    assert len(load_study(tmp_path / "inputs").sites) == len(DEFAULT_AOIS) * 3


def test_params_refuses_a_duplicated_key(tmp_path, capsys):
    text = (REPO / "params.yaml").read_text().replace("seed: 0", "seed: 0\nseed: 1", 1)
    (tmp_path / "params.yaml").write_text(text)
    assert main(["--params", str(tmp_path / "params.yaml"), "params"]) == 2
    assert "key seed appears twice" in capsys.readouterr().err


def test_catalog_refresh_query_and_runs(tmp_path, capsys, caplog):
    import json

    import pandas as pd

    from terrapipe.catalog import record_run
    from terrapipe.data.split_io import ASSIGNMENT_COLUMNS

    split = tmp_path / "data/processed/splits/deepearth/assignments.parquet"
    split.parent.mkdir(parents=True)
    pd.DataFrame([["1_1", "train", "temporal_train", 28.5, -81.5], ["2_1", "test", "temporal_test", 28.6, -81.4]],
                 columns=ASSIGNMENT_COLUMNS).to_parquet(split)
    db = str(tmp_path / "catalog.duckdb")
    assert main(["catalog", "refresh", "--db", db, "--root", str(tmp_path)]) == 0
    assert "splits     2" in capsys.readouterr().out
    assert "data/inputs" in caplog.text   # a fresh clone: what is missing is said
    sql = "SELECT split_reason, count(*) AS n FROM splits GROUP BY ALL ORDER BY split_reason"
    assert main(["catalog", "query", sql, "--db", db, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"split_reason": "temporal_test", "n": 1},
                                                   {"split_reason": "temporal_train", "n": 1}]
    assert main(["catalog", "query", sql, "--db", db, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "split_reason,n\ntemporal_test,1\ntemporal_train,1\n"
    run_id = record_run(db, experiment="it's", kind="evaluate", params={}, metrics={}, flow_run_id="f1", root=tmp_path)
    assert main(["catalog", "runs", "--db", db, "--experiment", "it's", "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["run_id"], row["flow_run_id"], row["code"]) == (run_id, "f1", None)
    assert main(["catalog", "runs", "--db", db, "--kind", "pretrain"]) == 0
    assert capsys.readouterr().out.strip() == "(no rows)"


def test_catalog_errors_are_one_line(tmp_path, capsys):
    assert main(["catalog", "query", "SELECT 1", "--db", str(tmp_path / "none.duckdb")]) == 2
    assert "no catalog yet. Run `terrapipe catalog refresh`" in capsys.readouterr().err
