"""A real `prefect server start` on 127.0.0.1: the work pools, `prefect deploy --all` of flows/prefect.yaml,
the deployments and schedules read back through the client, and one deployment run by a process worker
(git clone + dvc pull pull steps, then the flow) completing on a tiny DVC project."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect_fixtures import REPO, git, make_tiny_project

pytestmark = pytest.mark.slow  # a server, a deploy and a worker-run flow: about a minute on 2 cores
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect(*args: str, env: dict, cwd: Path, timeout: float = 120) -> str:
    result = subprocess.run([str(BIN / "prefect"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server's API URL and the environment that points the CLI and clients at it."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_WORKER_QUERY_SECONDS": "1"}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (home / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def client(url: str):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(url)


def test_deploy_read_back_and_run_one_deployment(server, tmp_path):
    url, env = server
    # the repository a worker clones: the tiny DVC project with this repository's flows/ committed in it
    project = make_tiny_project(tmp_path / "project", remote=tmp_path / "remote")
    shutil.copytree(REPO / "flows", project / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    git(project, "add", "flows")
    git(project, "commit", "-q", "-m", "flows")
    env = {**env, "TERRAPIPE_GIT_URL": project.as_uri()}

    prefect("work-pool", "create", "terrapipe-process", "--type", "process", env=env, cwd=project)
    prefect("work-pool", "create", "terrapipe-kubernetes", "--type", "kubernetes", "--base-job-template",
            str(REPO / "flows" / "work-pools" / "kubernetes.json"), env=env, cwd=project)
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", "flows/prefect.yaml", env=env, cwd=project)

    with client(url) as api:
        deployments = {f"{api.read_flow(d.flow_id).name}/{d.name}": d for d in api.read_deployments()}
        assert sorted(deployments) == ["data-refresh/nightly", "sweep/weekly", "train-eval-report/gpu",
                                       "train-eval-report/local"]
        nightly, weekly = deployments["data-refresh/nightly"], deployments["sweep/weekly"]
        assert [(s.schedule.cron, s.schedule.timezone) for s in nightly.schedules] == [("0 2 * * *", "UTC")]
        assert [(s.schedule.cron, s.schedule.timezone) for s in weekly.schedules] == [("0 3 * * 6", "UTC")]
        assert weekly.parameters["experiments"][0] == "era5_clip_mean" and weekly.work_pool_name == "terrapipe-kubernetes"
        assert weekly.job_variables == {"gpu_count": "1"}
        assert deployments["train-eval-report/gpu"].job_variables == {"gpu_count": "4"}
        assert nightly.work_pool_name == "terrapipe-process"
        assert [next(iter(step)) for step in nightly.pull_steps] == [
            "prefect.deployments.steps.git_clone", "prefect.deployments.steps.run_shell_script"]
        pool = api.read_work_pool("terrapipe-kubernetes")
        assert "gpu_count" in pool.base_job_template["variables"]["properties"]
        run = api.create_flow_run_from_deployment(nightly.id)

    # a process worker picks the run up: clones the project, runs `dvc pull`, then the flow in the clone
    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", "terrapipe-process", "--run-once"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    with client(url) as api:
        state = api.read_flow_run(run.id).state
    assert state.is_completed(), f"{state}\n{worker.stdout[-4000:]}\n{worker.stderr[-4000:]}"
    assert not (project / "runs.log").exists()  # the stages ran in the worker's clone, not here
    pushed = [p for p in (tmp_path / "remote").rglob("*") if p.is_file()]
    assert pushed, "data_refresh pushed nothing to the project's remote"
