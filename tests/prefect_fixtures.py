"""Fixtures of the Prefect tests: one test harness per test file (pytest-xdist runs a file in one worker)
and a tiny DVC project whose stages are named like the real ones but finish in milliseconds.

The tiny project's params.yaml is the repository's own (with two experiments in pretrain.run), so the
flows resolve and check experiment keys as they do on the real pipeline; its stages are one short script
(tiny_stage.py) that writes the files the real stages write, from the params they depend on.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("era5_reg_mean", "single_bandset_cross_random_masked_neg")  # the tiny project's pretrain.run

TINY_STAGE = '''"""Stand-in for the real stages: each writes what its real namesake writes, from params.yaml."""
import json, os, sys
from pathlib import Path

import yaml

stage, item = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
params = yaml.safe_load(Path("params.yaml").read_text())
with open("runs.log", "a") as log:  # untracked: tests count which stages ran
    log.write(f"{stage}{'@' + item if item else ''}\\n")
print(f"tiny: {stage} {item or ''} running (seed {params['seed']}, flow run "
      f"{os.environ.get('TERRAPIPE_FLOW_RUN_ID')})", flush=True)


def write(path, text):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


if stage == "check_params":
    write("data/quality/params.json", json.dumps(params, sort_keys=True))
elif stage == "fetch_era5":
    write("data/raw/era5/series.txt", f"seed={params['seed']}\\n")
elif stage == "validate":
    seed = params["seed"]
    docs = "data/quality/docs/index.html"
    write(docs, "<html><body>Data Docs</body></html>")
    ok = seed != 13  # the tests' broken data set
    write("data/quality/report.json", json.dumps({"success": ok, "data_docs": docs, "groups": {"imagery": {
        "era5_series": {"source": "data/raw/era5/series.txt", "rows": 4, "expectations": [
            {"expectation": "ExpectColumnValuesToBeBetween", "column": "t2m", "why": "physical range",
             "success": ok, "unexpected_count": 0 if ok else 3, "element_count": 4}]}}}}))
    if not ok:
        print("validate: 1 expectation(s) failed, so nothing may train on this data.", file=sys.stderr)
        sys.exit(2)
elif stage == "pretrain":
    steps = params["pretrain"]["base"]["train"]["steps"]
    loss = round(1.0 / (steps + len(item)), 6)
    out = Path("models/pretrain") / item
    write(out / "checkpoint.pt", f"{item} {steps}")
    write(out / "curves.csv", f"step,info_nce\\n1,{2 * loss}\\n{steps},{loss}\\n")
    write(out / "metrics.json", json.dumps({"steps": steps, "final": {"info_nce": loss}}))
elif stage == "evaluate":
    ckpt = (Path("models/pretrain") / item / "checkpoint.pt").read_text()
    acc = round(0.5 + 0.01 * (sum(map(ord, ckpt)) % 40), 4)
    write(Path("models/evaluate") / item / "metrics.json", json.dumps({"experiment": item, "checkpoint_sha256": "x",
        "tasks": {"eurosat": {"metric": "knn_accuracy", "encoder": acc, "random_encoder": 0.4, "raw_pixels": 0.45,
                              "majority": 0.1, "gain_over_random": round(acc - 0.4, 4)}}}))
elif stage == "report":
    rows = sorted(p.parent.name for p in Path("models/evaluate").glob("*/metrics.json"))
    write("reports/report.md", "# Report\\n\\n" + "".join(f"- {r}\\n" for r in rows))
    write("reports/index.html", "<html><body>" + "".join(f"<p>{r}</p>" for r in rows) + "</body></html>")
else:
    sys.exit(f"unknown stage {stage}")
'''


def _dvc_yaml(python: str) -> dict:
    run = f"{python} tiny_stage.py"
    return {"stages": {
        "check_params": {"cmd": f"{run} check_params", "deps": ["tiny_stage.py", "params.yaml"],
                         "outs": ["data/quality/params.json"]},
        "fetch_era5": {"cmd": f"{run} fetch_era5", "deps": ["tiny_stage.py"], "params": ["seed"],
                       "outs": ["data/raw/era5"]},
        "validate": {"cmd": f"{run} validate", "deps": ["tiny_stage.py", "data/raw/era5", "data/quality/params.json"],
                     "params": ["seed"], "outs": ["data/quality/report.json"]},
        "pretrain": {"foreach": "${pretrain.run}", "do": {
            "cmd": f"{run} pretrain ${{item}}", "deps": ["tiny_stage.py", "data/quality/report.json"],
            "params": ["pretrain.base"], "outs": ["models/pretrain/${item}/checkpoint.pt"],
            "metrics": [{"models/pretrain/${item}/metrics.json": {"cache": False}}],
            "plots": [{"models/pretrain/${item}/curves.csv": {"cache": False, "x": "step", "y": "info_nce"}}]}},
        "evaluate": {"foreach": "${pretrain.run}", "do": {
            "cmd": f"{run} evaluate ${{item}}", "deps": ["tiny_stage.py", "models/pretrain/${item}/checkpoint.pt"],
            "metrics": [{"models/evaluate/${item}/metrics.json": {"cache": False}}]}},
        "report": {"cmd": f"{run} report", "deps": ["tiny_stage.py", "models/evaluate"],
                   "outs": ["reports/report.md", "reports/index.html"]},
    }}


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def dvc(root: Path, *args: str) -> str:
    """The project's dvc on the tiny project (raises with its output on failure)."""
    result = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=root, capture_output=True, text=True)
    if result.returncode:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def make_tiny_project(root: Path, remote: Path | None = None) -> Path:
    """A git + DVC project in ``root`` (committed), optionally with a local directory remote."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pretrain"]["run"] = list(EXPERIMENTS)
    params["pretrain"]["base"]["train"]["steps"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "tiny_stage.py").write_text(TINY_STAGE)
    (root / "dvc.yaml").write_text(yaml.safe_dump(_dvc_yaml(sys.executable), sort_keys=False))
    (root / ".gitignore").write_text("runs.log\ndata/quality/docs/\ndata/catalog.duckdb\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "tests@terrapipe.invalid")
    git(root, "config", "user.name", "terrapipe tests")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    if remote is not None:
        remote.mkdir(parents=True, exist_ok=True)
        dvc(root, "remote", "add", "-d", "local", str(remote))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "tiny project")
    return root


def stage_runs(root: Path) -> list[str]:
    """The stages that ran in ``root`` (tiny_stage.py appends to runs.log), in order."""
    log = root / "runs.log"
    return log.read_text().split() if log.exists() else []


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One Prefect test server for the whole file (about 10-15 s to start), with a throwaway PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_LOGGING_TO_API_BATCH_INTERVAL="0.3")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """The tiny DVC project as the working directory (flows run DVC where they are started)."""
    root = make_tiny_project(tmp_path / "project", remote=tmp_path / "remote")
    monkeypatch.chdir(root)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return root
