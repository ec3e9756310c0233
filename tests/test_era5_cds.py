"""ERA5 from the CDS: the real cdsapi client against a fake CDS on 127.0.0.1 (terrapipe.testing.fake_cds)
that answers each request with the sample world's NetCDF, with injected faults and a planted secret."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from conftest import SMALL_PARAMS, deep_update, run_stage

from terrapipe.config import parse_params
from terrapipe.data.era5 import open_era5
from terrapipe.data.normalize import MISSING_VALUE
from terrapipe.errors import TerrapipeError
from terrapipe.modalities import ERA5_VARIABLES
from terrapipe.sources import transfer
from terrapipe.sources.era5 import fetch_cds
from terrapipe.sources.sample_era5 import era5_requests, fetch_era5
from terrapipe.sources.transfer import PermanentError
from terrapipe.study import load_study
from terrapipe.testing.fake_cds import FakeCDS

FAST_RETRY = {"attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.02}
TARGETS = ["era5_central-florida_2024.nc", "era5_finland-tampere_2023.nc", "era5_finland-tampere_2024.nc"]
LAND, SINGLE = "reanalysis-era5-land-monthly-means", "reanalysis-era5-single-levels-monthly-means"


def cds_params(**era5) -> dict:
    return deep_update(SMALL_PARAMS, {"sources": {"era5": deep_update({"source": "cds", "cds": {"retry": FAST_RETRY}},
                                                                       era5)}})


@pytest.fixture
def env(workdir, monkeypatch):
    """Two AOIs with sites, one spanning two years (3 requests); no real credentials; the cache in workdir."""
    sites = pd.read_csv("data/inputs/sites.csv")
    sites[sites["aoi_id"].isin(["central-florida", "finland-tampere"])].to_csv("data/inputs/sites.csv", index=False)
    aois = pd.read_csv("data/inputs/aois.csv")
    aois.loc[aois["aoi_id"] == "finland-tampere", "start_date"] = "2023-11-01"  # 4 months: Nov 2023 - Feb 2024
    aois.to_csv("data/inputs/aois.csv", index=False)
    for name in ("CDSAPI_URL", "CDSAPI_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CDSAPI_RC", str(workdir / "no-such-cdsapirc"))  # a developer's ~/.cdsapirc stays unread
    monkeypatch.setenv("TERRAPIPE_CACHE", str(workdir / "cache"))       # for the stage subprocess
    monkeypatch.setattr(transfer, "CACHE_DIR", workdir / "cache")       # transfer read it at import
    return workdir


@pytest.fixture
def fake_cds(env, monkeypatch):
    """``start(**knobs)``: a FakeCDS with the sample world's seed, and cdsapi's environment pointing at it."""
    with contextlib.ExitStack() as servers:
        def start(**knobs) -> FakeCDS:
            cds = servers.enter_context(FakeCDS(SMALL_PARAMS["seed"], **knobs))
            monkeypatch.setenv("CDSAPI_URL", cds.url)
            monkeypatch.setenv("CDSAPI_KEY", cds.key)
            return cds

        yield start


def fetch(out: str, previous=None, **era5):
    """fetch_cds with cds_params(**era5) into a new folder ``out``; returns (folder, entries)."""
    params = parse_params(cds_params(**era5))
    study = load_study("data/inputs", 1)
    folder = Path(out).resolve()
    folder.mkdir()
    try:
        fetch_cds(params, study, folder, previous=previous)
    finally:
        assert all(p.suffix in (".nc", ".json") for p in folder.iterdir())  # never a partial or temporary file
    return folder, era5_requests(params, study)


def posts(cds) -> int:
    return sum(method == "POST" for method, _, _ in cds.requests)


def same_data(a, b) -> bool:
    return open_era5(a).identical(open_era5(b))


# -- the happy path -----------------------------------------------------------------------------------
def test_the_real_client_fetches_every_aoi_year_as_the_sample_world_answers(fake_cds, env, monkeypatch):
    from ecmwf.datastores import processing

    cds = fake_cds(running_polls=1)  # accepted -> running -> successful
    waits = []  # the client's own waits between status polls, recorded instead of slept
    monkeypatch.setattr(processing, "time", SimpleNamespace(sleep=waits.append))
    out, entries = fetch("out")
    assert waits == [1.0] * len(entries)
    assert sorted(p.name for p in out.glob("*.nc")) == TARGETS
    assert cds.submitted == [(e["dataset"], e["request"]) for e in entries]
    florida = cds.submitted[0][1]  # requests go out in the study's order
    assert entries[0]["target"] == "era5_central-florida_2024.nc"
    assert florida["area"] == [29.1, -82.0, 27.9, -80.8] and florida["year"] == ["2024"]
    assert florida["variable"] == [v.cds for v in ERA5_VARIABLES]
    assert sorted(r["year"][0] for _, r in cds.submitted) == ["2023", "2024", "2024"]

    sample = env / "sample"
    sample.mkdir()
    fetch_era5(parse_params(cds_params()), load_study("data/inputs", 1), sample)
    for entry in entries:
        path = out / entry["target"]
        assert json.loads(path.with_suffix(".request.json").read_text()) == {**entry, "source": "cds"}
        assert same_data(path, sample / entry["target"])  # downstream sees exactly the sample backend's data

    api = [(m, p, h) for m, p, h in cds.requests if p.startswith("/api/retrieve/")]
    assert all(h.get("PRIVATE-TOKEN") == cds.key for _, _, h in api)
    polls = [p for m, p, _ in cds.requests if "?log=True" in p]
    assert len(polls) == 2 * len(entries)  # one "running", one "successful" per job
    downloads = [m for m, p, _ in cds.requests if p.startswith("/download/")]
    assert downloads == ["HEAD", "GET"] * len(entries)
    assert not list(transfer.CACHE_DIR.glob("era5/*.part"))


def test_a_request_already_answered_is_not_sent_again(fake_cds, env):
    cds = fake_cds()
    first, _ = fetch("first")
    seen = len(cds.requests)
    again, _ = fetch("again")
    assert len(cds.requests) == seen  # all from the download cache: not even a status call
    assert all((first / t).read_bytes() == (again / t).read_bytes() for t in TARGETS)

    fetch("other", dataset=SINGLE)  # a changed param is a new request
    assert posts(cds) == 6 and {d for d, _ in cds.submitted[3:]} == {SINGLE}

    shutil.rmtree(transfer.CACHE_DIR)
    kept, _ = fetch("kept", previous=first)  # the previous output of the same requests is reused ...
    assert posts(cds) == 6 and all(same_data(first / t, kept / t) for t in TARGETS)
    sample = env / "sample"
    sample.mkdir()
    fetch_era5(parse_params(cds_params()), load_study("data/inputs", 1), sample)
    fetch("from-sample", previous=sample)  # ... but a sample-world file is never taken for a CDS answer
    assert posts(cds) == 9

    cached = next(transfer.CACHE_DIR.glob("era5/*.nc"))
    cached.write_bytes(cached.read_bytes()[:500])  # a damaged cache entry is fetched again
    fetch("repaired")
    assert posts(cds) == 10


# -- faults -------------------------------------------------------------------------------------------
def test_transient_faults_are_retried_into_complete_files(fake_cds, caplog):
    cds = fake_cds(failed_jobs=2)  # the first of them never reports: the job 500 comes first
    entries = era5_requests(parse_params(cds_params()), load_study("data/inputs", 1))
    cds.fail("execution", 503, 502)
    cds.fail("job", 500)
    cds.server.faults.add(cds.download_path(entries[1]), "drop:3000")        # reset mid-body
    cds.server.faults.add(cds.download_path(entries[2]), "truncate:3000")    # short body, clean close
    with caplog.at_level(logging.WARNING, logger="terrapipe"):
        out, _ = fetch("out", cds={"retry": {**FAST_RETRY, "attempts": 6}})
    # request 1: POST 503, POST 502, job 500, job failed, success; requests 2 and 3: a broken download, then success
    assert posts(cds) == 9 and len(cds.submitted) == 7
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 6
    for entry in entries:
        assert open_era5(out / entry["target"])["t2m"].notnull().all()


def test_a_persistent_server_error_stops_after_the_budget_and_leaves_no_file(fake_cds, env):
    cds = fake_cds()
    cds.fail("results", *[503] * 10)
    with pytest.raises(TerrapipeError, match="failed after 3 attempts.*HTTP 503.*re-run later"):
        fetch("out")
    assert posts(cds) == 3
    assert list((env / "out").iterdir()) == [] and list(transfer.CACHE_DIR.rglob("*.*")) == []


@pytest.mark.parametrize("case, knobs, fix, n_posts", [
    ("wrong key", {}, r"refused the API key\. .*CDSAPI_KEY.*~/\.cdsapirc", 0),
    ("licence", {"licence_required": True},
     rf"licence of {LAND} has not been accepted.*https://cds\.climate\.copernicus\.eu/datasets/{LAND}\?tab=download", 1),
    ("rejected", {"rejected": True}, r"rejected the request.*check sources\.era5", 1),
    ("unknown dataset", {"datasets": [SINGLE]}, rf"no dataset '{LAND}'\. Fix sources\.era5\.dataset", 0),
])
def test_permanent_errors_stop_at_once_and_say_what_to_fix(fake_cds, env, monkeypatch, case, knobs, fix, n_posts):
    cds = fake_cds(**knobs)
    if case == "wrong key":
        monkeypatch.setenv("CDSAPI_KEY", "not-the-right-token-1234")
    with pytest.raises(PermanentError, match=fix):
        fetch("out")
    assert posts(cds) == n_posts and len(cds.requests) <= 6  # one attempt, no retries
    assert list((env / "out").iterdir()) == []


def test_credentials_come_from_cdsapirc_or_the_environment_only(fake_cds, env, monkeypatch):
    with pytest.raises(PermanentError, match=r"no CDS credentials found\. cdsapi reads the key from CDSAPI_KEY"):
        fetch("none")
    monkeypatch.setenv("CDSAPI_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("CDSAPI_KEY", "123456:old-style-key")
    with pytest.raises(PermanentError, match=r"old '<UID>:<key>' form"):
        fetch("old")
    cds = fake_cds()
    rc = env / "cdsapirc"
    rc.write_text(f"url: {cds.url}\nkey: {cds.key}\n")
    for name in ("CDSAPI_URL", "CDSAPI_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("CDSAPI_RC", str(rc))
    out, _ = fetch("from-rc")
    assert sorted(p.name for p in out.glob("*.nc")) == TARGETS


def test_an_interrupted_fetch_leaves_no_partial_file(fake_cds, env, monkeypatch):
    from ecmwf.datastores.processing import Results

    fake_cds()

    def interrupted(self, target):
        with open(target, "wb") as sink:
            sink.write(b"CDF\x01 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(Results, "download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch("out")
    assert list((env / "out").iterdir()) == [] and list(transfer.CACHE_DIR.rglob("*.*")) == []


# -- secrets ------------------------------------------------------------------------------------------
def test_the_key_appears_in_no_log_message_or_file(fake_cds, env, caplog, capsys):
    secret = "tp-Pl4nted-S3cret-7c1e9a5b"
    cds = fake_cds(key=secret)
    caplog.set_level(logging.DEBUG)
    fetch("ok")
    shutil.rmtree(transfer.CACHE_DIR)  # what follows goes to the server again
    cds.fail("results", 503, 503, 503)
    with pytest.raises(TerrapipeError) as busy:
        fetch("busy")
    cds.licence_required = True
    with pytest.raises(PermanentError) as refused:
        fetch("refused")
    errors = [str(busy.value), str(refused.value)]
    assert any(h.get("PRIVATE-TOKEN") == secret for _, _, h in cds.requests)  # the key was used ...
    assert "'key': '***'" in caplog.text  # ... and cdsapi did log its settings, key included, at debug level
    captured = capsys.readouterr()
    for text in (caplog.text, *(r.getMessage() for r in caplog.records), captured.out, captured.err, *errors):
        assert secret not in text
    assert all(secret.encode() not in p.read_bytes() for p in env.rglob("*") if p.is_file())


# -- the stages, end to end ------------------------------------------------------------------------------
def test_fetch_stage_with_source_cds_feeds_normalize_unchanged(fake_cds, env):
    cds = fake_cds()
    (env / "params.yaml").write_text(yaml.safe_dump(cds_params()))
    fetched = run_stage("fetch_era5", cwd=env)
    raw = env / "data/raw/era5"
    assert sorted(p.name for p in raw.glob("*.nc")) == TARGETS
    assert all(json.loads(p.read_text())["source"] == "cds" for p in raw.glob("*.request.json"))
    assert len([line for line in fetched.stderr.splitlines() if "from the CDS (job" in line]) == 3
    assert cds.key not in fetched.stderr

    sites = load_study("data/inputs", 1).sites
    split = env / "data/processed/splits/sites/assignments.parquet"
    split.parent.mkdir(parents=True)
    pd.DataFrame({"id": sites["site_id"], "split": ["train", "test"]}).to_parquet(split, index=False)
    run_stage("normalize_era5", cwd=env)
    series = np.load(env / "data/processed/era5/series_raw.npy")
    assert series.shape == (2, 4, 6) and (series != MISSING_VALUE).all()
    table = pd.read_parquet(env / "data/processed/era5/sites.parquet")
    finland = int(np.flatnonzero(table["aoi_id"] == "finland-tampere")[0])
    with xr.open_dataset(raw / "era5_finland-tampere_2023.nc") as ds:  # its first month is Nov 2023
        cell = ds["t2m"].sel(valid_time="2023-11-01", latitude=table["grid_latitude"][finland],
                             longitude=table["grid_longitude"][finland])
        assert series[finland, 0, 0] == pytest.approx(float(cell))
