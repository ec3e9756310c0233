"""The DuckDB catalog (terrapipe.catalog), the run versions it records, and the W&B run metadata.

Every test builds its own small repository in tmp_path (a fresh clone has no data/): a git work tree,
a hand-written dvc.lock, the study definition and the processed files the loaders read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

import terrapipe.catalog as catalog
from terrapipe import paths
from terrapipe.catalog import CatalogError, CatalogLockedError, query, record_run, refresh
from terrapipe.errors import InputDataError
from terrapipe.versions import FLOW_RUN_ID_ENV, code_version, data_outputs, data_version

# The README's example queries (README "The catalog"): they must run and answer correctly.
BEST_PER_TASK = """
WITH latest AS (        -- the newest evaluation of each experiment
  SELECT * FROM runs WHERE kind = 'evaluate'
  QUALIFY row_number() OVER (PARTITION BY experiment ORDER BY recorded_at DESC) = 1),
scores AS (
  SELECT experiment, task.key AS task, task.value->>'metric' AS metric,
         CAST(task.value->>'encoder' AS DOUBLE) AS score,
         CAST(task.value->>'gain_over_random' AS DOUBLE) AS gain_over_random
  FROM latest, json_each(latest.metrics->'$.tasks') AS task)
SELECT task, metric, arg_max(experiment, score) AS best_experiment, max(score) AS score,
       arg_max(gain_over_random, score) AS gain_over_random
FROM scores GROUP BY task, metric ORDER BY task
"""
METRIC_OVER_CODE_VERSIONS = """
SELECT left(code_version, 12) AS code, min(recorded_at) AS first_recorded, count(*) AS runs,
       avg(CAST(metrics->>'$.tasks.eurosat.encoder' AS DOUBLE)) AS eurosat_knn_accuracy
FROM runs WHERE kind = 'evaluate' AND experiment = 'era5_reg_mean'
GROUP BY code_version ORDER BY first_recorded
"""
SPLIT_COUNTS = """
SELECT dataset, split, split_reason, count(*) AS n FROM splits GROUP BY ALL ORDER BY dataset, split, split_reason
"""


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit(root: Path, message: str) -> str:
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", message)
    return _git(root, "rev-parse", "HEAD")


def _lock(outs: dict[str, str]) -> dict:
    """A dvc.lock document: one stage per output path (plus a deps entry, which must not count)."""
    stages = {}
    for path, md5 in outs.items():
        stages[f"make_{Path(path).name}"] = {"cmd": "true", "deps": [{"path": "data/inputs", "hash": "md5", "md5": "0" * 32}],
                                             "outs": [{"path": path, "hash": "md5", "md5": md5, "size": 10, "nfiles": 2}]}
    return {"schema": "2.0", "stages": stages}


DATA_OUTS = {"data/raw/era5": "a" * 32 + ".dir", "data/processed/sentinel": "b" * 32 + ".dir",
             "data/processed/splits/sites": "c" * 32 + ".dir"}
NOT_DATA_OUTS = {"data/quality/params.json": "d" * 32, "models/pretrain/x/checkpoint.pt": "e" * 32}


@pytest.fixture
def repo(tmp_path):
    """A git work tree with code, params.yaml and dvc.lock committed; no data yet (a fresh clone)."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "code.py").write_text("x = 1\n")
    (root / "params.yaml").write_text(yaml.safe_dump({"study": {"sites_per_aoi": 1}}))
    (root / "dvc.lock").write_text(yaml.safe_dump(_lock({**DATA_OUTS, **NOT_DATA_OUTS})))
    _commit(root, "init")
    return root


def _write_split(root: Path, dataset: str, ids, reasons) -> None:
    path = root / paths.split_assignments(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    splits = ["train" if r.endswith("train") else "test" for r in reasons]
    pd.DataFrame({"id": [str(i) for i in ids], "split": splits, "split_reason": reasons,
                  "latitude": 0.0, "longitude": 0.0}).to_parquet(path, index=False)


@pytest.fixture
def data(repo):
    """The study definition and small processed files: 27 selected sites, 6 AlphaEarth points, 4 observations."""
    from terrapipe.study import load_study, write_default_inputs

    write_default_inputs(repo / paths.INPUTS, sites_per_aoi=2)
    sites = load_study(repo / paths.INPUTS, 1).sites
    site_reasons = ["spatial_test_region_1" if i < 2 else "temporal_train" for i in range(len(sites))]
    _write_split(repo, "sites", sites["site_id"], site_reasons)
    store = repo / paths.processed("sentinel")
    store.mkdir(parents=True)
    pd.DataFrame({"row": range(len(sites)), "site_id": sites["site_id"], "aoi_id": sites["aoi_id"],
                  "split": ["test" if r.startswith("spatial") else "train" for r in site_reasons],
                  "latitude": sites["latitude"], "longitude": sites["longitude"]}).to_parquet(store / "sites.parquet")
    stamps = np.zeros((len(sites), 3, 3), np.int32)
    stamps[:, :, 2] = sites["start_date"].dt.year.to_numpy()[:, None]
    np.save(store / "timestamps.npy", stamps)

    points = repo / paths.processed("alphaearth")
    points.mkdir(parents=True)
    pd.DataFrame({"point_id": np.arange(6), "latitude": np.linspace(28, 29, 6), "longitude": -81.0,
                  "year": [2017, 2018, 2019, 2020, 2024, 2024]}).to_parquet(points / "points.parquet")
    _write_split(repo, "alphaearth", range(6), ["temporal_train"] * 3 + ["spatial_test_region_1"] + ["temporal_test"] * 2)

    observations = repo / paths.processed("deepearth")
    observations.mkdir(parents=True)
    pd.DataFrame({"observation_id": [f"{g}_1" for g in (11, 12, 13, 14)], "latitude": 28.5, "longitude": -81.5,
                  "year": [2010, 2015, 2025, 2020]}).to_parquet(observations / "observations.parquet")
    _write_split(repo, "deepearth", ["11_1", "12_1", "13_1"], ["temporal_train", "temporal_train", "temporal_test"])
    return repo


# -- refresh -----------------------------------------------------------------------------------------

def test_refresh_loads_the_repository_files(data, tmp_path):
    db = tmp_path / "catalog.duckdb"
    refresh(db, root=data)
    sites = query(db, "SELECT * FROM sites ORDER BY site_id")
    assert len(sites) == 27 and sites["site_id"].str.endswith("-000").all()   # study.sites_per_aoi: 1 of 2
    assert (sites["split"] == "test").sum() == 2 and sites["split_reason"].notna().all()
    assert set(sites["koppen"]) >= {"Cfa", "ET"} and sites["aoi_name"].notna().all()

    samples = query(db, "SELECT dataset, count(*) AS n, count(split) AS with_split, count(year) AS with_year "
                        "FROM samples GROUP BY dataset ORDER BY dataset")
    assert samples.to_dict("records") == [
        {"dataset": "alphaearth", "n": 6, "with_split": 6, "with_year": 6},
        {"dataset": "deepearth", "n": 4, "with_split": 3, "with_year": 4},   # 14_1 is in no split (no vision)
        {"dataset": "sentinel", "n": 27, "with_split": 27, "with_year": 27}]
    florida = query(db, "SELECT year, split, site_id FROM samples WHERE id = 'central-florida-000'").iloc[0]
    assert (florida["year"], florida["site_id"]) == (2024, "central-florida-000")
    assert query(db, "SELECT split FROM samples WHERE dataset = 'alphaearth' AND id = '3'")["split"][0] == "test"

    versions = query(db, "SELECT DISTINCT data_version FROM data_versions")["data_version"].tolist()
    assert versions == [data_version(data)]
    assert sorted(query(db, "SELECT path FROM data_versions")["path"]) == sorted(DATA_OUTS)


def test_readme_example_queries(data, tmp_path):
    """Best experiment per task, a metric over code versions and split counts, on a filled catalog."""
    db = tmp_path / "catalog.duckdb"
    refresh(db, root=data)

    def evaluate(key, eurosat, mados):
        return {"experiment": key, "checkpoint_sha256": "0" * 64, "tasks": {
            "eurosat": {"metric": "knn_accuracy", "encoder": eurosat, "random_encoder": 0.4, "raw_pixels": 0.5,
                        "majority": 0.1, "gain_over_random": round(eurosat - 0.4, 6), "details": {}},
            "mados": {"metric": "probe_micro_f1", "encoder": mados, "random_encoder": 0.3, "raw_pixels": 0.3,
                      "majority": 0.2, "gain_over_random": round(mados - 0.3, 6), "details": {}}}}

    first = _git(data, "rev-parse", "HEAD")
    for key, eurosat, mados in (("era5_reg_mean", 0.60, 0.50), ("bandsets", 0.70, 0.40)):
        record_run(db, experiment=key, kind="evaluate", params={"experiment": key}, metrics=evaluate(key, eurosat, mados),
                   flow_run_id="flow-1", root=data)
    record_run(db, experiment="era5_reg_mean", kind="pretrain", params={}, metrics={"tasks": {"eurosat": {"encoder": 9.0}}},
               flow_run_id=None, root=data)   # another kind: no part of either answer
    (data / "code.py").write_text("x = 2\n")
    second = _commit(data, "a code change")
    record_run(db, experiment="era5_reg_mean", kind="evaluate", params={"experiment": "era5_reg_mean"},
               metrics=evaluate("era5_reg_mean", 0.66, 0.55), flow_run_id="flow-2", root=data)

    best = query(db, BEST_PER_TASK)
    assert best[["task", "metric", "best_experiment"]].to_dict("records") == [
        {"task": "eurosat", "metric": "knn_accuracy", "best_experiment": "bandsets"},
        {"task": "mados", "metric": "probe_micro_f1", "best_experiment": "era5_reg_mean"}]  # its newest run: 0.55
    assert best["score"].tolist() == pytest.approx([0.70, 0.55])
    assert best["gain_over_random"].tolist() == pytest.approx([0.30, 0.25])

    over_code = query(db, METRIC_OVER_CODE_VERSIONS)
    assert over_code["code"].tolist() == [first[:12], second[:12]]
    assert over_code["eurosat_knn_accuracy"].tolist() == pytest.approx([0.60, 0.66])
    assert over_code["runs"].tolist() == [1, 1]

    counts = query(db, SPLIT_COUNTS)
    by_reason = {(r.dataset, r.split_reason): r.n for r in counts.itertuples()}
    assert by_reason == {("alphaearth", "spatial_test_region_1"): 1, ("alphaearth", "temporal_test"): 2,
                         ("alphaearth", "temporal_train"): 3, ("deepearth", "temporal_test"): 1,
                         ("deepearth", "temporal_train"): 2, ("sites", "spatial_test_region_1"): 2,
                         ("sites", "temporal_train"): 25}


def test_fresh_clone_refresh_loads_what_exists_and_logs_the_rest(repo, tmp_path, caplog):
    db = tmp_path / "catalog.duckdb"
    _write_split(repo, "deepearth", ["1_1", "2_1"], ["temporal_train", "temporal_test"])
    with caplog.at_level(logging.WARNING, logger="terrapipe"):
        refresh(db, root=repo)
    counts = query(db, "SELECT (SELECT count(*) FROM sites) AS sites, (SELECT count(*) FROM samples) AS samples, "
                       "(SELECT count(*) FROM splits) AS splits, (SELECT count(*) FROM runs) AS runs")
    assert counts.to_dict("records") == [{"sites": 0, "samples": 0, "splits": 2, "runs": 0}]
    logged = caplog.text
    for what in ("data/inputs/", "dvc pull data.dvc", "splits/sites/assignments.parquet", "dvc repro split_sites",
                 "sentinel/sites.parquet", "dvc repro normalize_sentinel", "alphaearth/points.parquet",
                 "dvc repro normalize_deepearth"):
        assert what in logged, what

    bare = tmp_path / "bare"   # not even dvc.lock or params.yaml: an empty catalog, no data version
    bare.mkdir()
    refresh(tmp_path / "bare.duckdb", root=bare)
    assert query(tmp_path / "bare.duckdb", "SELECT count(*) AS n FROM data_versions")["n"][0] == 0
    assert "no data version" in caplog.text


def test_broken_file_is_an_error_and_leaves_the_catalog_as_it_was(data, tmp_path):
    db = tmp_path / "catalog.duckdb"
    refresh(db, root=data)
    (data / paths.split_assignments("alphaearth")).write_bytes(b"not parquet")
    with pytest.raises(InputDataError, match=r"splits/alphaearth/assignments.parquet.*dvc repro split@alphaearth"):
        refresh(db, root=data)
    assert query(db, "SELECT count(*) AS n FROM splits WHERE dataset = 'alphaearth'")["n"][0] == 6


def test_refresh_replaces_the_mirror_and_keeps_the_history(data, tmp_path):
    db = tmp_path / "catalog.duckdb"
    refresh(db, root=data)
    run_id = record_run(db, experiment="e", kind="pretrain", params={}, metrics={}, flow_run_id=None, root=data)
    _write_split(data, "deepearth", ["11_1"], ["temporal_test"])
    (data / "dvc.lock").write_text(yaml.safe_dump(_lock({**DATA_OUTS, "data/raw/era5": "f" * 32 + ".dir"})))
    refresh(db, root=data)
    refresh(db, root=data)   # the same data version again adds nothing
    assert query(db, "SELECT split FROM splits WHERE dataset = 'deepearth'")["split"].tolist() == ["test"]
    assert query(db, "SELECT count(*) AS n FROM samples WHERE dataset = 'deepearth' AND split IS NULL")["n"][0] == 3
    assert query(db, "SELECT run_id FROM runs")["run_id"].tolist() == [run_id]
    versions = query(db, "SELECT data_version, count(*) AS n FROM data_versions GROUP BY ALL")
    assert len(versions) == 2 and versions["n"].tolist() == [3, 3]


# -- runs --------------------------------------------------------------------------------------------

def test_record_run_stores_versions_params_and_metrics(repo, tmp_path):
    db = tmp_path / "catalog.duckdb"
    params = {"experiment": "era5_reg_mean", "config": {"train": {"steps": 40, "lr": 0.002}}}
    run_id = record_run(db, experiment="era5_reg_mean", kind="pretrain", params=params,
                        metrics={"final": {"info_nce": 1.25}}, flow_run_id="f0e1", root=repo)
    row = query(db, "SELECT *, params->>'$.config.train.steps' AS steps, "
                    "CAST(metrics->>'$.final.info_nce' AS DOUBLE) AS info_nce FROM runs").iloc[0]
    assert row["run_id"] == run_id and len(run_id) == 32
    assert (row["experiment"], row["kind"], row["flow_run_id"], row["steps"]) == ("era5_reg_mean", "pretrain", "f0e1", "40")
    assert row["info_nce"] == 1.25 and json.loads(row["params"]) == params
    assert row["code_version"] == _git(repo, "rev-parse", "HEAD") and row["data_version"] == data_version(repo)
    assert query(db, "SELECT count(*) AS n FROM data_versions")["n"][0] == len(DATA_OUTS)  # joinable without refresh
    assert pd.Timestamp.now("UTC").tz_localize(None) - row["recorded_at"] < pd.Timedelta(minutes=5)


@pytest.mark.parametrize("field, value, message", [
    ("metrics", {"loss": float("nan")}, "metrics is not plain JSON"),
    ("params", {"path": Path("x")}, "params is not plain JSON"),
    ("kind", "", "kind must be a non-empty string")])
def test_record_run_refuses_bad_input(repo, tmp_path, field, value, message):
    arguments = {"experiment": "e", "kind": "evaluate", "params": {}, "metrics": {}, "flow_run_id": None, field: value}
    with pytest.raises(CatalogError, match=message):
        record_run(tmp_path / "catalog.duckdb", root=repo, **arguments)


# -- one writer at a time ----------------------------------------------------------------------------

def _hold(db: Path, seconds: float) -> subprocess.Popen:
    """Another process that holds the catalog open for writing for ``seconds``."""
    code = (f"import duckdb, sys, time; c = duckdb.connect({str(db)!r}); print('held', flush=True); "
            f"time.sleep({seconds}); c.close()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_held_catalog_gives_a_clear_error_then_works_once_released(repo, tmp_path, monkeypatch):
    db = tmp_path / "catalog.duckdb"
    refresh(db, root=repo)
    holder = _hold(db, 30)
    try:
        monkeypatch.setattr(catalog, "LOCK_WAIT_S", 0.3)
        with pytest.raises(CatalogLockedError, match=rf"another process \(PID {holder.pid}\) holds the catalog.*retry"):
            record_run(db, experiment="e", kind="pretrain", params={}, metrics={}, flow_run_id=None, root=repo)
        with pytest.raises(CatalogLockedError):
            query(db, "SELECT 1")
    finally:
        holder.kill()
        holder.wait()
    holder = _hold(db, 1.0)   # a short operation elsewhere: this call waits for it instead of failing
    monkeypatch.setattr(catalog, "LOCK_WAIT_S", 20)
    started = time.monotonic()
    record_run(db, experiment="e", kind="pretrain", params={}, metrics={}, flow_run_id=None, root=repo)
    assert holder.wait() == 0 and time.monotonic() - started < 20
    assert query(db, "SELECT count(*) AS n FROM runs")["n"][0] == 1


def test_query_is_read_only_and_needs_a_catalog(repo, tmp_path):
    db = tmp_path / "catalog.duckdb"
    with pytest.raises(CatalogError, match="no catalog yet.*terrapipe catalog refresh"):
        query(db, "SELECT 1")
    refresh(db, root=repo)
    with pytest.raises(CatalogError, match="read-only"):
        query(db, "DELETE FROM runs")
    with pytest.raises(CatalogError, match="query failed"):
        query(db, "SELECT no_such_column FROM runs")


def test_a_catalog_with_another_runs_layout_is_refused(tmp_path, repo):
    import duckdb

    db = tmp_path / "catalog.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE runs (run_id VARCHAR, experiment VARCHAR)")
    with pytest.raises(CatalogError, match=r"table runs has columns \['run_id', 'experiment'\].*COPY runs TO"):
        refresh(db, root=repo)


# -- versions ----------------------------------------------------------------------------------------

def test_code_version_is_the_revision_dirty_only_for_code(repo, tmp_path):
    head = _git(repo, "rev-parse", "HEAD")
    assert code_version(repo) == head
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")        # DVC rewrites these during a run
    (repo / "params.yaml").write_text("study: {sites_per_aoi: 2}\n")
    (repo / "untracked.py").write_text("")
    assert code_version(repo) == head
    (repo / "code.py").write_text("x = 3\n")
    assert code_version(repo) == head + "-dirty"
    assert code_version(tmp_path / "nowhere") is None
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    assert code_version(empty) is None   # a repository without commits


def test_data_version_covers_the_data_outputs_only(repo):
    outputs = data_outputs(repo)
    assert [o["path"] for o in outputs] == sorted(DATA_OUTS) and outputs[0]["size"] == 10
    expected = hashlib.sha256("\n".join(f"{p} {h}" for p, h in sorted(DATA_OUTS.items())).encode()).hexdigest()
    assert data_version(repo) == expected

    def version(outs):
        (repo / "dvc.lock").write_text(yaml.safe_dump(_lock(outs)))
        return data_version(repo)

    assert version(dict(reversed(list(DATA_OUTS.items())))) == expected           # stage order is no part of it
    assert version({**DATA_OUTS, "models/pretrain/x/checkpoint.pt": "9" * 32,
                    "data/quality/params.json": "9" * 32}) == expected             # models and params are not data
    assert version({**DATA_OUTS, "data/processed/sentinel": "9" * 32 + ".dir"}) != expected
    (repo / "dvc.lock").write_text("stages: [unclosed")
    with pytest.raises(InputDataError, match="dvc.lock: not valid YAML"):
        data_version(repo)
    (repo / "dvc.lock").unlink()
    assert data_version(repo) is None


# -- W&B run metadata (terrapipe.train.run) ------------------------------------------------------------

LONG_KEY = "single_bandset_all12_random_band_dropout_era5_random_decode_masked_neg"   # 70 characters
DOCUMENT = {"experiment": LONG_KEY, "about": "a test", "extends": None, "config": {"train": {"steps": 2}}}


def test_tracking_metadata_carries_params_and_versions_in_config_and_tags():
    from terrapipe.train.run import TAG_LIMIT, tracking_metadata

    config, tags = tracking_metadata(DOCUMENT, LONG_KEY, code_version="0123456789abcdef" * 2 + "01234567-dirty",
                                     data_version="fedcba98" * 8, flow_run_id="flow-9")
    assert config["config"] == DOCUMENT["config"] and config["experiment"] == LONG_KEY
    assert (config["flow_run_id"], config["data_version"]) == ("flow-9", "fedcba98" * 8)
    assert config["code_version"].endswith("-dirty")
    assert tags[1:] == ["code:0123456789ab-dirty", "data:fedcba98fedc"]
    assert all(len(t) <= TAG_LIMIT for t in tags) and tags[0].startswith(LONG_KEY[:50])
    _, other = tracking_metadata(DOCUMENT, LONG_KEY[:-1] + "X", code_version=None, data_version=None, flow_run_id=None)
    assert other[0] != tags[0] and len(other) == 1   # two long keys keep distinct tags; no version, no tag
    assert tracking_metadata(DOCUMENT, "short", code_version=None, data_version=None, flow_run_id=None)[1] == ["short"]


def test_offline_wandb_run_writes_the_metadata_to_disk(repo, tmp_path, monkeypatch):
    """WANDB_MODE=offline overrides tracking.wandb: disabled; the run's config file carries every field."""
    from terrapipe.train.run import _tracker

    monkeypatch.chdir(repo)   # the stage runs in the repository root: versions are read from there
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv(FLOW_RUN_ID_ENV, "prefect-flow-run-42")
    settings = SimpleNamespace(tracking=SimpleNamespace(project="2026_02_08_masked_neg", wandb="disabled"))
    log, run = _tracker(settings, DOCUMENT, LONG_KEY, tmp_path / "out")
    expected = {"flow_run_id": "prefect-flow-run-42", "experiment": LONG_KEY,
                "code_version": _git(repo, "rev-parse", "HEAD"), "data_version": data_version(repo)}
    try:
        assert {k: run.config[k] for k in expected} == expected and run.config["config"] == DOCUMENT["config"]
        assert run.tags == (LONG_KEY[:55] + "~" + hashlib.sha256(LONG_KEY.encode()).hexdigest()[:8],
                            "code:" + expected["code_version"][:12], "data:" + expected["data_version"][:12])
        log({"step": 1, "info_nce": 2.5})
    finally:
        run.finish()
    import wandb
    wandb.teardown()   # waits for wandb's service process, which writes the record log, to flush and exit
    # offline wandb 0.31 keeps config and tags in the run's record log (protobuf, strings stored as-is), which
    # `wandb sync` uploads; it writes no files/config.yaml
    [record_log] = (tmp_path / "out").glob("wandb/offline-run-*/run-*.wandb")
    on_disk = record_log.read_bytes()
    for value in (*expected.values(), *run.tags, '"steps"'):
        assert value.encode() in on_disk, value


def test_tracking_off_in_tests_and_outside_a_flow(monkeypatch):
    from terrapipe.train.run import _tracker
    from terrapipe.versions import flow_run_id

    monkeypatch.delenv(FLOW_RUN_ID_ENV, raising=False)
    assert flow_run_id() is None
    monkeypatch.setenv("WANDB_MODE", "disabled")
    settings = SimpleNamespace(tracking=SimpleNamespace(project="p", wandb="offline"))
    assert _tracker(settings, DOCUMENT, "k", Path("unused")) == (None, None)
