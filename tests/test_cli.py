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
