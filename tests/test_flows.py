"""The Prefect flows on a tiny DVC project under one prefect_test_harness: what runs, what is retried, what
is recorded (catalog rows, artifacts, logs) and that a changed param is never served from a cache."""
from __future__ import annotations

import json
from pathlib import Path

import prefect_fixtures
import pytest
import yaml
from prefect_fixtures import EXPERIMENTS, REPO, dvc, git, stage_runs

from terrapipe import paths
from terrapipe.errors import ConfigError
from terrapipe.orchestration.dvc import DvcCommandError, is_transient

prefect_harness, tiny_project = prefect_fixtures.prefect_harness, prefect_fixtures.tiny_project  # for pytest
pytestmark = pytest.mark.usefixtures("prefect_harness")


def load(name: str):
    """A flow from flows/ as a deployment loads it (by file path and function name)."""
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(f"{REPO / 'flows' / name}.py:{name}")


def set_param(root: Path, dotted: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def client_read(method: str, **kwargs):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return getattr(client, method)(**kwargs)


def artifact(key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    found = client_read("read_artifacts", artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key!r}"
    return max(found, key=lambda a: a.created)


def task_runs(flow_run_id) -> dict[str, int]:
    """Task run name -> run_count (attempts) of one flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client_read("read_task_runs", flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r.run_count for r in runs}


def run_logs(flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    return [log.message for log in client_read(
        "read_logs", log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]


def catalog_runs(root: Path):
    from terrapipe.catalog import query

    return query(root / paths.CATALOG, "SELECT experiment, kind, params, metrics, flow_run_id FROM runs ORDER BY recorded_at")


def test_classifier_retries_only_lock_and_network_errors():
    lock = "ERROR: Unable to acquire lock. Most likely another DVC process is running"
    assert is_transient(["dvc", "repro", "validate"], lock)
    assert is_transient(["dvc", "push"], "ERROR: failed to push data to the cloud - Connection reset by peer")
    assert not is_transient(["dvc", "repro", "validate"], "failed to run: python stages/validate.py, exited with 2")
    assert not is_transient(["dvc", "repro", "fetch_era5"], "HTTPError: 503 Service Unavailable")  # a stage's own
    assert not is_transient(["dvc", "pull"], "ERROR: failed to pull data from the cloud - Checkout failed")


def test_artifact_builders(tmp_path):
    from terrapipe.orchestration.artifacts import artifact_key, metrics_rows, quality_markdown
    from terrapipe.orchestration.tasks import stage_seconds

    log = ("Running stage 'fetch_era5':\n2026-12-03 19:00:00,123 terrapipe INFO fetch_era5 done in 1.5 s\n"
           "Stage 'validate' didn't change, skipping\n2026-12-03 19:00:02,000 terrapipe INFO pretrain done in 20.25 s\n")
    assert stage_seconds(log) == 21.75  # the stages' own work, as train_eval_report sums it

    assert artifact_key("sweep", "era5_reg_mean-1A2b") == "sweep-era5-reg-mean-1a2b"
    with pytest.raises(ValueError):
        artifact_key("__")
    rows = metrics_rows({"a": {"pretrain": {"steps": 5, "final": {"info_nce": 0.123456}},
                               "evaluate": {"tasks": {"eurosat": {"metric": "knn_accuracy", "encoder": 0.61,
                                                                  "gain_over_random": 0.16}}}},
                         "b": {"pretrain": {"steps": 5, "final": {"info_nce": 0.2}}}})  # not evaluated yet
    assert rows == [{"experiment": "a", "steps": 5, "final info_nce": 0.1235, "eurosat knn_accuracy": 0.61,
                     "eurosat gain over random": 0.16},
                    {"experiment": "b", "steps": 5, "final info_nce": 0.2, "eurosat knn_accuracy": None,
                     "eurosat gain over random": None}]
    docs = tmp_path / "docs" / "index.html"
    report = {"success": False, "groups": {"points": {"alphaearth": {"expectations": [
        {"expectation": "ExpectColumnValuesToBeBetween", "column": "elevation_m", "why": "elevation limits",
         "success": False, "unexpected_count": 3, "element_count": 600},
        {"expectation": "ExpectColumnValuesToNotBeNull", "column": "t", "success": True}]}}}}
    text = quality_markdown(report, docs)
    assert "| points | 1 | 2 | 1 |" in text and "elevation_m` (3 of 600 rows): elevation limits" in text
    assert "not built" in text
    docs.parent.mkdir()
    docs.write_text("<html></html>")
    assert f"[Data Docs]({docs.resolve().as_uri()})" in quality_markdown(report, docs)


def test_unknown_experiment_stops_before_any_work(tiny_project):
    with pytest.raises(ConfigError) as error:
        load("train_eval_report")(["era5_reg_mean", "no_such_experiment"])
    assert "'no_such_experiment'" in str(error.value) and "era5_clip_mean" in str(error.value)  # the known keys
    with pytest.raises(ConfigError, match="'era5_clip_mean' are not in .*pretrain.run.*sweep flow"):
        load("train_eval_report")(["era5_clip_mean"])  # an experiment, but dvc.yaml has no stage for it
    assert stage_runs(tiny_project) == []


@pytest.mark.slow  # DVC start-up (1.5-3 s a call) times the calls of whole flow runs
def test_train_eval_report_runs_records_and_never_serves_changed_params_from_cache(tiny_project):
    flow = load("train_eval_report")
    state = flow(return_state=True)
    rows = state.result()
    run_id = state.state_details.flow_run_id
    assert [r["experiment"] for r in rows] == list(EXPERIMENTS)
    runs = stage_runs(tiny_project)  # DVC orders independent stages as it likes
    assert sorted(runs[:3]) == ["check_params", "fetch_era5", "validate"] and runs[-1] == "report"
    assert runs[3:-1] == [f"{stage}@{key}" for key in EXPERIMENTS for stage in ("pretrain", "evaluate")]
    assert (tiny_project / "reports" / "index.html").is_file()
    # the stage's own lines, with the flow run id its environment carried, reached the run log as they printed
    assert any(f"tiny: pretrain {EXPERIMENTS[0]} running (seed 0, flow run {run_id})" in m for m in run_logs(run_id))
    # one catalog row per experiment, with its resolved params and both metrics files
    rows_db = catalog_runs(tiny_project)
    assert list(rows_db.experiment) == [k for k in EXPERIMENTS for _ in range(2)]
    assert list(rows_db.kind) == ["pretrain", "evaluate"] * len(EXPERIMENTS)
    assert set(rows_db.flow_run_id) == {str(run_id)}
    pretrained, evaluated = json.loads(rows_db.metrics[0]), json.loads(rows_db.metrics[1])
    assert pretrained["steps"] == 5 and evaluated["tasks"]["eurosat"]["metric"] == "knn_accuracy"
    assert json.loads(rows_db.params[0])["experiment"] == EXPERIMENTS[0]
    # keyed artifacts
    assert artifact("report").data.startswith("# Report")
    table = artifact("metrics").data
    table = json.loads(table) if isinstance(table, str) else table
    assert [r["experiment"] for r in table] == list(EXPERIMENTS) and "eurosat knn_accuracy" in table[0]
    assert float(artifact("training-progress").data) == 100.0
    quality = artifact("data-quality").data
    assert "All expectations passed" in quality and "docs/index.html" in quality

    # a changed param reruns what depends on it (DVC skips the rest) and the outputs change: nothing is
    # served from a cache
    old = json.loads((tiny_project / paths.pretrain_dir(EXPERIMENTS[0]) / "metrics.json").read_text())
    set_param(tiny_project, "pretrain.base.train.steps", 9)
    load("train_eval_report")([EXPERIMENTS[0]])
    new = json.loads((tiny_project / paths.pretrain_dir(EXPERIMENTS[0]) / "metrics.json").read_text())
    rerun = stage_runs(tiny_project)[len(runs):]
    assert {f"pretrain@{EXPERIMENTS[0]}", f"evaluate@{EXPERIMENTS[0]}", "report"} <= set(rerun)
    assert "fetch_era5" not in rerun  # its params did not change
    assert (old["steps"], new["steps"]) == (5, 9) and new["final"] != old["final"]


def test_failed_validation_is_permanent_and_stops_training(tiny_project):
    set_param(tiny_project, "seed", 13)  # the tiny validate stage's broken data set: it exits 2
    state = load("train_eval_report")(return_state=True)
    assert state.is_failed()
    with pytest.raises(DvcCommandError) as error:
        state.result()
    assert not error.value.transient and "exited with 2" in str(error.value)
    assert stage_runs(tiny_project).count("validate") == 1  # not retried
    assert not any(run.startswith("pretrain") for run in stage_runs(tiny_project))
    assert task_runs(state.state_details.flow_run_id)["validate"] == 1
    quality = artifact("data-quality").data
    assert "Validation failed" in quality and "1 expectation(s) failed" in quality


def test_lock_contention_is_retried(tiny_project):
    """Another process holds DVC's lock: the first attempt fails on it, the retry (lock released) succeeds."""
    import logging

    from dvc.repo import Repo
    from prefect import flow

    from terrapipe.orchestration.dvc import LOCK_CONTENTION
    from terrapipe.orchestration.tasks import repro

    lock = Repo(str(tiny_project)).lock

    class ReleaseOnContention(logging.Handler):  # the holder finishes once DVC has given up on the lock
        def emit(self, record):
            if LOCK_CONTENTION in record.getMessage() and lock.is_locked:
                lock.unlock()

    @flow
    def one_stage():
        return repro(["fetch_era5"], label="fetch")

    handler = ReleaseOnContention()
    logging.getLogger("prefect.task_runs").addHandler(handler)
    lock.lock()
    try:
        state = one_stage(return_state=True)
    finally:
        logging.getLogger("prefect.task_runs").removeHandler(handler)
        if lock.is_locked:
            lock.unlock()
    assert state.is_completed(), state.message
    assert task_runs(state.state_details.flow_run_id) == {"fetch": 2}
    assert stage_runs(tiny_project) == ["fetch_era5"]
    assert client_read("read_global_concurrency_limit_by_name", name="dvc").limit == 1  # created, one slot


@pytest.mark.slow  # DVC start-up (1.5-3 s a call) times the calls of whole flow runs
def test_data_refresh_pushes_then_restores_from_the_remote(tiny_project, tmp_path):
    refresh = load("data_refresh")
    refresh()
    assert sorted(stage_runs(tiny_project)) == ["check_params", "fetch_era5", "validate"]
    lock = yaml.safe_load((tiny_project / "dvc.lock").read_text())
    pushed = {out["md5"] for stage in ("fetch_era5", "validate") for out in lock["stages"][stage]["outs"]}
    in_remote = {p.parent.name + p.name for p in (tmp_path / "remote").rglob("*") if p.is_file()}
    assert {m.removesuffix(".dir") for m in pushed} <= {m.removesuffix(".dir") for m in in_remote}
    # a fresh machine: no outputs, no cache. The refresh pulls them back and recomputes nothing.
    git(tiny_project, "clean", "-fdqX", "data")
    dvc(tiny_project, "gc", "-w", "-f", "-q")
    import shutil
    shutil.rmtree(tiny_project / ".dvc" / "cache")
    refresh()
    assert sorted(stage_runs(tiny_project)) == ["check_params", "fetch_era5", "validate"]  # none ran again
    assert (tiny_project / "data" / "raw" / "era5" / "series.txt").read_text() == "seed=0\n"


@pytest.mark.slow  # DVC start-up (1.5-3 s a call) times the calls of whole flow runs
def test_sweep_runs_each_experiment_as_its_own_dvc_experiment_and_flow_run(tiny_project):
    dvc(tiny_project, "repro", "-q")
    git(tiny_project, "add", "-A")
    git(tiny_project, "commit", "-q", "-m", "pipeline ran")
    state = load("sweep")(list(EXPERIMENTS), ["pretrain.base.train.steps=7"], return_state=True)
    found = state.result()
    assert {k: v["pretrain"]["steps"] for k, v in found.items()} == dict.fromkeys(EXPERIMENTS, 7)
    assert git(tiny_project, "status", "--porcelain") == ""  # --temp: the workspace is untouched
    shown = json.loads(dvc(tiny_project, "exp", "show", "--json"))
    names = {rev["name"] for b in shown for e in b.get("experiments") or [] for rev in e["revs"]}
    suffix = str(state.state_details.flow_run_id)[:8]
    assert names == {f"{k}-{suffix}" for k in EXPERIMENTS}
    rows = catalog_runs(tiny_project)
    assert set(rows.experiment) == set(EXPERIMENTS) and set(rows.kind) <= {"pretrain", "evaluate"}
    assert all("dvc_experiment" in json.loads(p) for p in rows.params)
    params = json.loads(rows.params[0])
    assert params["config"]["train"]["steps"] == 7 and params["set_params"] == ["pretrain.base.train.steps=7"]
    # each experiment was its own Prefect run, a child of the sweep's
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    children = client_read("read_flow_runs", flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id])))
    assert sorted(r.name for r in children) == sorted(EXPERIMENTS)
