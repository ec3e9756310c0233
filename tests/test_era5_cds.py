"""ERA5 from the CDS: the real cdsapi client against a fake CDS on 127.0.0.1 (terrapipe.testing.fake_cds)
that answers each request with the sample world's NetCDF, with injected faults and a planted secret."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import requests
import xarray as xr
import yaml
from conftest import SMALL_PARAMS, deep_update, run_stage

from terrapipe.config import parse_params
from terrapipe.data.era5 import open_era5
from terrapipe.data.normalize import MISSING_VALUE
from terrapipe.errors import InputDataError, TerrapipeError
from terrapipe.modalities import ERA5_VARIABLES
from terrapipe.sources import transfer
from terrapipe.sources.era5 import fetch_cds
from terrapipe.sources.sample_era5 import era5_requests, fetch_era5
from terrapipe.sources.transfer import PermanentError
from terrapipe.study import load_study
from terrapipe.testing.fake_cds import CUT_BYTES, FakeCDS

FAST_RETRY = {"attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.02}
TARGETS = ["era5_central-florida_2024.nc", "era5_finland-tampere_2023.nc", "era5_finland-tampere_2024.nc"]
FLORIDA = TARGETS[0]
LAND, SINGLE = "reanalysis-era5-land-monthly-means", "reanalysis-era5-single-levels-monthly-means"
JOB_ID = r"[0-9a-f-]{36}"


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
def florida(env):
    """The study cut to its Florida AOI: a single request (FLORIDA), for tests about one request's job."""
    sites = pd.read_csv("data/inputs/sites.csv")
    sites[sites["aoi_id"] == "central-florida"].to_csv("data/inputs/sites.csv", index=False)
    return env


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
    """Submissions tried, accepted or not (a job deletion is a POST too)."""
    return sum(method == "POST" and path.endswith("/execution") for method, path, _ in cds.requests)


def same_data(a, b) -> bool:
    return open_era5(a).identical(open_era5(b))


def site_values(folder: Path, sites) -> np.ndarray:
    """(site and file, variable, month): every site's values at its nearest cell in each file of its AOI."""
    return np.stack([open_era5(path).sel(latitude=site.latitude, longitude=site.longitude, method="nearest")
                     .to_array().to_numpy() for site in sites.itertuples()
                     for path in sorted(folder.glob(f"era5_{site.aoi_id}_*.nc"))])


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
    assert downloads == ["GET"] * len(entries) and cds.deleted == []
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
    cds = fake_cds(failed_jobs=1)  # the 500 hits the poll of this failing job: polled again, it reports failed
    cds.fail("execution", 503)
    cds.fail("job", 500)
    cds.fault_each_job(download="drop")  # every job's first download: reset mid-body
    with caplog.at_level(logging.WARNING, logger="terrapipe"):
        out, entries = fetch("out", cds={"retry": {**FAST_RETRY, "attempts": 6}})
    # request 1: POST 503, job A polled 500 then failed, job B's download reset; requests 2, 3: a reset download
    assert posts(cds) == 5 and len(cds.jobs) == 4 and cds.deleted == cds.jobs[:1]
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 6
    for entry in entries:
        assert open_era5(out / entry["target"])["t2m"].notnull().all()


@pytest.mark.parametrize("fault", [503, "reset"])
def test_an_error_polling_a_job_polls_the_same_job_again(fake_cds, caplog, fault):
    cds = fake_cds()
    cds.fault_each_job(poll=[fault])  # every job's first status poll fails
    with caplog.at_level(logging.WARNING, logger="terrapipe"):
        out, entries = fetch("out")
    assert sorted(p.name for p in out.glob("*.nc")) == TARGETS
    assert posts(cds) == len(cds.jobs) == len(entries) and cds.deleted == []  # exactly one job per request
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == len(entries)


@pytest.mark.parametrize("fault, resumed", [
    ("truncate", f"bytes={CUT_BYTES}-"),  # a short body, clean close: resumed where the cut was
    ("drop", None),  # a reset loses the chunk being read (here the whole body): fetched again from the start
])
def test_a_short_download_is_fetched_again_from_the_same_job_into_the_same_bytes(fake_cds, florida, fault, resumed):
    cds = fake_cds()
    clean, _ = fetch("clean")
    shutil.rmtree(transfer.CACHE_DIR)  # what follows goes to the server again
    seen = len(cds.requests)
    cds.fault_each_job(download=fault)  # every job's first download is cut after CUT_BYTES
    out, _ = fetch("out")
    assert posts(cds) == len(cds.jobs) == 2  # no second POST for the request
    assert [h.get("Range") for _, p, h in cds.requests[seen:] if p.startswith("/download/")] == [None, resumed]
    assert (out / FLORIDA).read_bytes() == (clean / FLORIDA).read_bytes()


def test_a_download_truncated_every_time_fails_saying_so_and_changes_nothing(fake_cds, florida):
    cds = fake_cds()
    first, _ = fetch("first")
    outputs, cached = {p.name: p.read_bytes() for p in first.iterdir()}, sorted(transfer.CACHE_DIR.rglob("*"))
    cds.fault_each_job(download=["truncate"] * 3)  # each attempt gets CUT_BYTES more, never the whole file
    with pytest.raises(TerrapipeError, match=rf"CDS request {FLORIDA}: failed after 3 attempts; last error: download "
                       rf"truncated: got {3 * CUT_BYTES} of \d+ bytes of the result of CDS job {JOB_ID}\. The provider "
                       "may be down") as failure:
        fetch("second", previous=first, dataset=SINGLE)  # a new request: to the CDS
    assert cds.jobs[-1] in str(failure.value) and "corrupt" not in str(failure.value)
    assert posts(cds) == 2 and cds.deleted == cds.jobs[-1:]
    assert list((florida / "second").iterdir()) == [] and sorted(transfer.CACHE_DIR.rglob("*")) == cached
    assert {p.name: p.read_bytes() for p in first.iterdir()} == outputs


def test_jobs_given_up_are_deleted_on_the_cds(fake_cds, florida, caplog):
    cds = fake_cds(failed_jobs=1)
    with caplog.at_level(logging.INFO, logger="terrapipe"):
        fetch("out")
    failed = cds.jobs[0]
    assert len(cds.jobs) == 2 and cds.deleted == [failed]  # resubmitted once, the failed job deleted
    assert f"{FLORIDA}: deleted CDS job {failed} (it ended failed)" in caplog.text

    shutil.rmtree(transfer.CACHE_DIR)
    cds.fault_each_job(poll=[503] * 3)  # the next job never answers a poll: the budget runs out on it
    with caplog.at_level(logging.INFO, logger="terrapipe"), pytest.raises(TerrapipeError, match="failed after 3"):
        fetch("again")
    assert len(cds.jobs) == 3 and cds.deleted == [failed, cds.jobs[-1]]
    assert f"{FLORIDA}: deleted CDS job {cds.jobs[-1]} (terrapipe gave up on it)" in caplog.text


def test_a_zip_of_step_type_files_gives_the_same_site_data_as_one_netcdf_file(fake_cds, florida):
    cds = fake_cds(deliver="zip")  # avgua and avgad members, as the CDS splits single-levels requests
    zipped, _ = fetch("zip", dataset=SINGLE)
    assert [p.name for p in zipped.glob("*.nc")] == [FLORIDA]
    delivered = [p for m, p, _ in cds.requests if m == "GET" and p.endswith(".zip")]
    with zipfile.ZipFile(io.BytesIO(requests.get(cds.server.url + delivered[0], timeout=10).content)) as archive:
        assert archive.namelist() == ["data_stream-moda_stepType-avgua.nc", "data_stream-moda_stepType-avgad.nc"]

    study, netcdf = load_study("data/inputs", 1), florida / "netcdf"
    netcdf.mkdir()  # the sample backend writes what the fake CDS delivers as one NetCDF file
    fetch_era5(parse_params(cds_params(dataset=SINGLE)), study, netcdf)
    np.testing.assert_array_equal(site_values(zipped, study.sites), site_values(netcdf, study.sites))


@pytest.mark.parametrize("deliver, problem", [
    ("zip-broken-member", r"zip member data_stream-moda_stepType-avgad\.nc is not a readable NetCDF file"),
    ("zip-without-netcdf", r"the CDS delivered a zip without a NetCDF member \(it holds: README\.txt\)"),
])
def test_a_zip_without_a_readable_netcdf_member_fails_naming_it(fake_cds, florida, deliver, problem):
    cds = fake_cds(deliver=deliver)
    with pytest.raises(InputDataError, match=rf"^{FLORIDA} \(CDS job {JOB_ID}\): {problem}"):
        fetch("out", dataset=SINGLE)
    assert posts(cds) == 1 and cds.deleted == cds.jobs  # not retried: the same job would deliver the same zip
    assert list((florida / "out").iterdir()) == [] and list(transfer.CACHE_DIR.rglob("*.*")) == []


def test_a_persistent_server_error_stops_after_the_budget_and_leaves_no_file(fake_cds, env):
    cds = fake_cds()
    cds.fail("results", *[503] * 10)
    with pytest.raises(TerrapipeError, match="failed after 3 attempts.*HTTP 503.*re-run later"):
        fetch("out")
    assert posts(cds) == 1 and cds.deleted == cds.jobs  # the same job asked 3 times, then given up and deleted
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
    assert posts(cds) == n_posts and len(cds.requests) <= 7  # one attempt, no retries
    assert cds.deleted == cds.jobs  # a rejected job is deleted too
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
    fake_cds()

    def interrupted(session, url, part, *args, **kwargs):
        with open(part, "wb") as sink:
            sink.write(b"CDF\x01 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(transfer, "download_once", interrupted)
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
