"""Stages under a full disk, a refused write, a killed earlier run and a non-activated venv."""
import errno
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_stage, tree_digest

from terrapipe import paths
from terrapipe.stage import run_stage as run_in_process
from terrapipe.stage import storage_error


@pytest.fixture(scope="module")
def alphaearth_run(tmp_path_factory):
    """A working directory with fetched and normalized AlphaEarth points (made once)."""
    import yaml
    from conftest import SMALL_PARAMS

    from terrapipe.study import write_default_inputs

    root = tmp_path_factory.mktemp("alphaearth")
    write_default_inputs(root / paths.INPUTS)
    (root / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS))
    run_stage("fetch_alphaearth", cwd=root)
    run_stage("normalize_alphaearth", cwd=root)
    return root


@pytest.fixture
def alphaearth(alphaearth_run, tmp_path, monkeypatch):
    """A private copy of that directory, as the working directory."""
    shutil.copytree(alphaearth_run, tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    return tmp_path / "run"


def _stage_main(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "stages"))  # as when Python runs the script: its folder first
    return runpy.run_path(str(REPO / "stages" / f"{name}.py"), run_name="stage")["main"]


def test_a_full_disk_is_one_clear_error_with_exit_2_and_old_outputs_intact(alphaearth, monkeypatch, capsys):
    out = alphaearth / paths.processed("alphaearth")
    before = tree_digest(out)
    real_save = np.save

    def save_to_full_disk(path, array, *args, **kwargs):   # the kernel's own ENOSPC, from /dev/full
        with open("/dev/full", "wb") as full:
            real_save(full, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_to_full_disk)
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(_stage_main("normalize_alphaearth", monkeypatch), "normalize_alphaearth", argv=[])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "the disk is full" in message and "previous outputs were left in place" in message
    assert "Traceback" not in message
    assert tree_digest(out) == before
    assert not list(out.parent.glob(".alphaearth.tmp-*"))


def test_numpys_short_write_reads_as_a_full_disk():
    assert "disk is full" in storage_error(OSError("1000000 requested and 0 written"))
    assert storage_error(OSError(errno.EIO, "I/O error")) is None  # anything else keeps its traceback


def test_a_refused_write_is_one_clear_error_with_exit_2(workdir):
    (workdir / paths.QUALITY).symlink_to("/sys")            # mkdir there is refused even for root
    result = run_stage("check_params", cwd=workdir, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "writing was refused" in result.stderr and "Traceback" not in result.stderr


def test_stale_temporaries_of_a_killed_run_are_removed_at_the_next_start(alphaearth):
    processed = alphaearth / paths.PROCESSED
    stale = processed / ".alphaearth.tmp-0badf00d"
    stale.mkdir()
    (stale / "points.parquet").write_bytes(b"half-written" * 1000)
    result = run_stage("normalize_alphaearth", cwd=alphaearth)
    assert not stale.exists()
    assert "left by an earlier killed run" in result.stderr
    assert sorted(p.name for p in processed.iterdir() if p.name.startswith(".")) == []


def test_a_kill_between_the_two_renames_restores_the_old_tree(alphaearth):
    out = alphaearth / paths.processed("alphaearth")
    before = tree_digest(out)
    out.rename(out.with_name(".alphaearth.old-0badf00d"))  # the state a SIGKILL between the renames leaves
    from terrapipe.atomic import remove_stale

    remove_stale(out)
    assert tree_digest(out) == before


def _system_python() -> str | None:
    for candidate in ("/usr/bin/python3", "/bin/python3", shutil.which("python3")):
        if candidate and Path(candidate).is_file() and not str(Path(candidate)).startswith(str(REPO)):
            probe = subprocess.run([candidate, "-c", "import terrapipe"], capture_output=True)
            if probe.returncode != 0:
                return candidate
    return None


def test_a_stage_started_by_another_python_reruns_under_the_projects(workdir):
    python = _system_python()
    if python is None:
        pytest.skip("no Python without terrapipe on this machine")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["TERRAPIPE_VENV"] = sys.prefix  # the environment running these tests (.venv under `make test`)
    result = subprocess.run([python, str(REPO / "stages" / "check_params.py")], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (workdir / paths.PARAMS_CHECK).is_file()
