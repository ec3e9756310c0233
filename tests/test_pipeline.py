"""The DVC pipeline end to end, on a temporary copy of the repository (slow: runs every stage)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SMALL_PARAMS, deep_update, tree_digest

pytestmark = pytest.mark.slow


def _run(cmd, cwd, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def _set_params(repo: Path, override: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(deep_update(params, override), sort_keys=False))


def _stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git clone-like copy of the tracked files with small params, after `dvc pull` + `dvc repro`."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    files = _run(["git", "ls-files", "-co", "--exclude-standard"], REPO).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    _set_params(root, SMALL_PARAMS)
    _set_params(root, {"pretrain": {"run": ["era5_reg_mean"]}})  # one seed experiment through its DVC stage
    (root / "dvc.lock").unlink(missing_ok=True)  # the shipped lock is for the default params
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        _run(cmd, root)
    _run([sys.executable, "-m", "dvc", "pull", "-q", "data.dvc"], root)
    first = _run([sys.executable, "-m", "dvc", "repro"], root)
    root.joinpath(".first-run.log").write_text(first.stdout)
    return root


def _declared_stages(repo) -> list[str]:
    """Every stage dvc.yaml declares, foreach stages expanded to name@key (dvc.yaml is the one list)."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((repo / "params.yaml").read_text())

    def items(spec):
        foreach = spec.get("foreach") or [None]
        if isinstance(foreach, str):  # ${pretrain.run}: a list in params.yaml
            foreach = params
            for part in spec["foreach"].strip("${}").split("."):
                foreach = foreach[part]
        return foreach
    return [f"{name}@{key}" if "foreach" in spec else name for name, spec in stages.items() for key in items(spec)]


def test_pull_then_repro_runs_every_stage(repo):
    assert sorted(p.name for p in (repo / "data" / "inputs").iterdir()) == ["aois.csv", "sites.csv", "species.csv", "study.yaml"]
    ran = _stages_run((repo / ".first-run.log").read_text())
    assert sorted(ran) == sorted(_declared_stages(repo))
    for out in ("data/processed/sentinel/s2.npy", "data/processed/era5/series.npy",
                "data/processed/splits/deepearth/split.json", "data/processed/splits/alphaearth/split_map.png"):
        assert (repo / out).is_file(), out


def test_nothing_changed_after_a_run(repo):
    assert "Data and pipelines are up to date" in _run([sys.executable, "-m", "dvc", "status"], repo).stdout
    assert _stages_run(_run([sys.executable, "-m", "dvc", "repro"], repo).stdout) == []


def test_a_param_change_reruns_only_its_dependants(repo):
    _set_params(repo, {"split": {"deepearth": {"min_distance_km": 20.0}}})
    # the regions move but these assignments do not: the store is rebuilt byte for byte, so its classifiers
    # are not retrained
    assert sorted(_stages_run(_run([sys.executable, "-m", "dvc", "repro"], repo).stdout)) == [
        "check_params", "embedding_store", "report", "split@deepearth", "validate"]   # the report shows the split
    _set_params(repo, {"normalize": {"std_multiplier": 3.0}})
    assert sorted(_stages_run(_run([sys.executable, "-m", "dvc", "repro"], repo).stdout)) == [
        "check_params", "evaluate@era5_reg_mean", "normalize_era5", "normalize_sentinel", "pretrain@era5_reg_mean",
        "report", "validate", "world_mosaic"]  # the mosaic and the pretraining read the (re-normalized) store


def test_a_typo_in_a_section_no_stage_would_rerun_stops_repro(repo):
    """check_params depends on params.yaml itself: the typo is seen although no data stage would run."""
    original = (repo / "params.yaml").read_text()
    before = tree_digest(repo / "data" / "processed")
    typo = original.replace("normalize:\n", "normalize:\n  std_multipler: 3.0\n", 1)
    assert typo != original
    (repo / "params.yaml").write_text(typo)
    try:
        result = _run([sys.executable, "-m", "dvc", "repro"], repo, check=False)
        assert result.returncode != 0
        assert "normalize.std_multipler: unknown key" in result.stderr + result.stdout
        assert tree_digest(repo / "data" / "processed") == before
    finally:
        (repo / "params.yaml").write_text(original)


def test_dvc_from_a_shell_without_the_venv_runs_the_stages_with_the_projects_python(repo):
    """`.venv/bin/dvc repro` with the system Python first on PATH (the venv not activated)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(sys.prefix))
    env["TERRAPIPE_VENV"] = sys.prefix  # the environment these tests run in (.venv under `make test`)
    result = subprocess.run([str(Path(sys.prefix) / "bin" / "dvc"), "repro", "--force", "--single-item",
                             "check_params"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No module named" not in result.stderr


def test_a_failing_stage_keeps_previous_outputs(repo):
    before = tree_digest(repo / "data" / "processed" / "era5")
    victim = next((repo / "data" / "raw" / "era5").glob("*.nc"))
    original = victim.read_bytes()
    victim.write_bytes(original[: len(original) // 2])
    try:
        result = _run([sys.executable, "-m", "dvc", "repro", "--single-item", "--force", "normalize_era5"], repo,
                      check=False)
        assert result.returncode != 0
        assert victim.name in result.stderr + result.stdout
        assert tree_digest(repo / "data" / "processed" / "era5") == before
    finally:
        victim.write_bytes(original)


def test_a_real_source_run_leaks_no_secret(repo, tmp_path, monkeypatch):
    """`dvc repro` with ERA5 from a (fake) CDS: the planted key is in no tracked file, output or log."""
    import uuid

    from terrapipe.testing.fake_cds import FakeCDS
    secret = f"planted-{uuid.uuid4().hex}"  # made at run time: no file of the repository can hold it by chance
    with FakeCDS(seed=SMALL_PARAMS["seed"], key=secret) as cds:
        _set_params(repo, {"sources": {"era5": {"source": "cds"}}})
        for name, value in {"CDSAPI_URL": cds.url, "CDSAPI_KEY": secret, "CDSAPI_RC": str(tmp_path / "none"),
                            "TERRAPIPE_CACHE": str(tmp_path / "cache")}.items():
            monkeypatch.setenv(name, value)
        result = _run([sys.executable, "-m", "dvc", "repro", "-v", "normalize_era5"], repo)
    assert "fetch_era5" in _stages_run(result.stdout)
    assert any(method == "POST" for method, _, _ in cds.requests)  # the key really was used
    assert secret not in result.stdout + result.stderr
    leaks = [p for root in (repo, tmp_path) for p in root.rglob("*")
             if p.is_file() and ".git" not in p.parts and secret.encode() in p.read_bytes()]
    assert leaks == []
