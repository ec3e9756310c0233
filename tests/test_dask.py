"""The data stages' per-site work on a Dask cluster: the same bytes as the local process pool, the work really
on the cluster's workers, and a scheduler that cannot be used failing fast with the setting named."""
from __future__ import annotations

import hashlib
import shutil
import time

import pytest
import yaml
from conftest import SMALL_PARAMS, deep_update, run_stage

from terrapipe import parallel
from terrapipe.config import ComputeParams
from terrapipe.errors import ConfigError
from terrapipe.study import load_study

ENV = parallel.SCHEDULER_ENV
TASK = "eurosat"


# SMALL_PARAMS, lighter still: this file runs each stage twice, on a loaded 2-core machine.
PARAMS = deep_update(SMALL_PARAMS, {"study": {"months": 2}, "sources": {"sentinel": {"chip_size": 12}},
                                    "tasks": {TASK: {"n_samples": 10, "chip_size": 8}}})
ON_DASK = (("fetch_sentinel",), ("normalize_sentinel",), ("fetch_tasks", TASK))  # split sites runs once, between
OUTPUTS = ("raw/sentinel", "processed/sentinel", f"raw/tasks/{TASK}")


def _sha256_of_outputs(data) -> dict[str, str]:
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for out in OUTPUTS for p in sorted((data / out).rglob("*")) if p.is_file()}


@pytest.fixture
def cluster(workdir):
    """Two single-threaded worker processes, started in the working directory as `dask worker` would be."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


def test_data_stages_on_a_dask_cluster_write_the_same_bytes(workdir, cluster):
    (workdir / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for stage in (ON_DASK[0], ("split", "sites"), *ON_DASK[1:]):
        run_stage(*stage, cwd=workdir)
    local = _sha256_of_outputs(workdir / "data")
    assert {out for out in OUTPUTS if any(name.startswith(out + "/") for name in local)} == set(OUTPUTS)
    for out in OUTPUTS:
        shutil.rmtree(workdir / "data" / out)

    for stage in ON_DASK:
        run_stage(*stage, cwd=workdir, env={ENV: cluster.scheduler_address})
    on_dask = _sha256_of_outputs(workdir / "data")

    assert on_dask == local
    done = {prefix: tp.state_counts["memory"] for prefix, tp in cluster.scheduler.task_prefixes.items()}
    n_sites = len(load_study(workdir / "data" / "inputs", PARAMS["study"]["sites_per_aoi"]).sites)
    assert done.get("write_site_in_env") == n_sites  # fetch_sentinel: one job per site
    assert done.get("read_site") == n_sites          # normalize_sentinel
    assert done.get("render_chip", 0) >= PARAMS["tasks"][TASK]["n_samples"]  # fetch_tasks: candidate chips


def test_the_param_names_the_scheduler_and_the_variable_overrides_it(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    compute = ComputeParams(dask_scheduler="tcp://params:8786")
    assert parallel.scheduler_address(None) is None
    assert parallel.scheduler_address(ComputeParams()) is None
    assert parallel.scheduler_address(compute) == ("tcp://params:8786", "params.yaml compute.dask_scheduler")
    monkeypatch.setenv(ENV, "tcp://env:8786")
    assert parallel.scheduler_address(compute) == ("tcp://env:8786", ENV)
    assert parallel.scheduler_address(None) == ("tcp://env:8786", ENV)


def test_an_unreachable_scheduler_fails_the_stage_fast_and_names_the_setting(workdir):
    started = time.perf_counter()
    result = run_stage("fetch_sentinel", cwd=workdir, env={ENV: "tcp://127.0.0.1:1"}, check=False)
    took = time.perf_counter() - started

    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("terrapipe: error: TERRAPIPE_DASK_SCHEDULER = 'tcp://127.0.0.1:1'")
    assert "compute.dask_scheduler" in message and "dask scheduler" in message and "dask worker" in message
    assert "Traceback" not in result.stderr
    assert took < parallel.CONNECT_TIMEOUT_S + 15, f"took {took:.1f} s"
    assert not (workdir / "data" / "raw" / "sentinel").exists()  # nothing written, nothing replaced


def test_a_bad_address_in_params_is_named_as_the_param(workdir, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    params = deep_update(SMALL_PARAMS, {"compute": {"dask_scheduler": "http://host:8786"}})
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage("fetch_tasks", TASK, cwd=workdir, check=False)
    assert result.returncode == 2
    assert "params.yaml compute.dask_scheduler = 'http://host:8786': cannot reach" in result.stderr
    assert "unknown address scheme 'http'" in result.stderr


def test_workers_elsewhere_or_none_are_refused(workdir, cluster, monkeypatch):
    from distributed import LocalCluster

    monkeypatch.chdir(workdir / "data")
    with pytest.raises(ConfigError, match=r"2 worker\(s\) run in another directory than this stage .*/data\)"):
        with parallel.process_pool(ComputeParams(dask_scheduler=cluster.scheduler_address)):
            pass
    monkeypatch.setattr(parallel, "WORKERS_TIMEOUT_S", 0.5)
    with LocalCluster(n_workers=0, dashboard_address=None) as empty:
        with pytest.raises(ConfigError, match="the scheduler has no worker after 0.5 s. Start workers with"):
            with parallel.process_pool(ComputeParams(dask_scheduler=empty.scheduler_address)):
                pass
