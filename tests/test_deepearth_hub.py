"""DeepEarth's Hugging Face backend against a fake hub speaking the real protocol to the real huggingface_hub:
the raw layout and its pooling, bounded memory, the HF cache offline, retries and permanent errors, no token leak."""
from __future__ import annotations

import json
import logging
import subprocess
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_stage
from huggingface_hub import constants as hf_constants
from huggingface_hub import file_download as hf_download
from huggingface_hub.utils import _http as hf_http

from terrapipe.config import parse_params
from terrapipe.data.deepearth import tidy_deepearth
from terrapipe.errors import TerrapipeError
from terrapipe.sources.deepearth import OBSERVATIONS, VISION_OUT, embeddings_file, fetch_hf, pool_file
from terrapipe.sources.sample_deepearth import sample_deepearth
from terrapipe.sources.transfer import PermanentError
from terrapipe.study import write_default_inputs
from terrapipe.testing.fake_hub import FakeHub, make_hub_snapshot

STAGES = Path(__file__).parents[1] / "stages"
REPO_ID = "deepearth/central-florida-native-plants"
ATTEMPTS = 4
SECRET = "hf_PLANTEDsecretTOKEN4b9c2e7d1a"
SMALL = {"sources": {"deepearth": {
    "source": "huggingface",
    "sample": {"n_observations": 200, "language_dim": 32},
    "huggingface": {"retry": {"attempts": ATTEMPTS, "base_delay_s": 0.0}},
}}}


def small_params(**hub):
    raw = json.loads(json.dumps(SMALL))
    raw["sources"]["deepearth"]["huggingface"].update(hub)
    return parse_params(raw)


@pytest.fixture(scope="module")
def snapshot(study, tmp_path_factory):
    return make_hub_snapshot(small_params(), study, tmp_path_factory.mktemp("hub"))


def by_gbif_id(table: pa.Table) -> dict[int, np.ndarray]:
    embeddings = table.column("embedding").to_numpy(zero_copy_only=False)
    return dict(zip(table.column("gbif_id").to_pylist(), embeddings))


@pytest.fixture(scope="module")
def expected_vision(study):
    """gbif_id -> the sample's pooled vision embedding, which the snapshot's token grids average to."""
    return by_gbif_id(sample_deepearth(small_params(), study)[1])


@pytest.fixture(autouse=True)
def hf_env(tmp_path, monkeypatch):
    """Cache, token and flags in tmp_path only: nothing from the developer's HF login or cache leaks in."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("TERRAPIPE_CACHE", str(tmp_path / "cache"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub read these at import, before the environment above
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)   # else it asks huggingface.co about agents


@pytest.fixture
def hub_backoff(monkeypatch) -> list[float]:
    """huggingface_hub's own backoff sleeps (1, 2, 4 ... s), recorded instead of slept."""
    sleeps: list[float] = []
    for module in (hf_download, hf_http):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


def serve(snapshot, monkeypatch, **options) -> FakeHub:
    hub = FakeHub(snapshot, options.pop("repo_id", REPO_ID), **options)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    return hub


def fetch(tmp_path, study, name="raw", **hub) -> Path:
    out = tmp_path / name
    out.mkdir()
    fetch_hf(small_params(**hub), study, out)
    return out


def authorization(headers: dict) -> str | None:
    return {key.lower(): value for key, value in headers.items()}.get("authorization")


def assert_complete(out: Path, snapshot, expected_vision) -> None:
    assert (out / OBSERVATIONS).read_bytes() == snapshot[OBSERVATIONS].read_bytes()
    pooled = by_gbif_id(pq.read_table(out / VISION_OUT))
    assert pooled.keys() == expected_vision.keys()
    for gbif_id, vector in expected_vision.items():
        np.testing.assert_allclose(pooled[gbif_id], vector, atol=1e-6)


# -- the raw layout ------------------------------------------------------------------------------------
def test_fetch_writes_the_raw_layout_and_tidy_runs_on_it(tmp_path, study, snapshot, expected_vision, monkeypatch):
    with serve(snapshot, monkeypatch) as hub:
        out = fetch(tmp_path, study)
    assert sorted(p.name for p in out.iterdir()) == ["observations.parquet", "source.json", "vision_embeddings.parquet"]
    assert_complete(out, snapshot, expected_vision)
    observations, vision = sample_deepearth(small_params(), study)
    assert pq.read_schema(out / VISION_OUT) == vision.schema
    assert pq.read_schema(out / OBSERVATIONS).names == observations.schema.names

    assert json.loads((out / "source.json").read_text()) == {
        "repo_id": REPO_ID, "repo_type": "dataset", "revision": "main", "commit": hub.commit,
        "files": {name: path.stat().st_size for name, path in snapshot.items()}}
    assert "vision_embeddings/embeddings_000002.parquet" in snapshot      # the hub's names, zero-padded to 6
    heads = [path for method, path, _ in hub.server.requests if method == "HEAD"]
    assert heads[0] == hub.resolve_path(OBSERVATIONS)                    # the requested revision first ...
    assert heads[1:] == [hub.resolve_path(name, hub.commit) for name in list(snapshot)[1:]]   # ... then its commit

    (tmp_path / "tidy").mkdir()
    report = tidy_deepearth(out, tmp_path / "tidy")
    assert (report["rows"], report["with_vision"], report["vision_dim"]) == (200, len(expected_vision), 1408)
    assert report["has_vision_flag_without_embedding"] == 0


def test_without_vision_only_observations_are_fetched(tmp_path, study, snapshot, monkeypatch):
    with serve(snapshot, monkeypatch) as hub:
        out = fetch(tmp_path, study, include_vision=False)
    assert [path for _, path, _ in hub.cdn.requests] == ["/observations.parquet"]
    table = pq.read_table(out / VISION_OUT)
    assert table.num_rows == 0 and table.schema == sample_deepearth(small_params(), study)[1].schema
    (tmp_path / "tidy").mkdir()
    report = tidy_deepearth(out, tmp_path / "tidy")
    assert report["with_vision"] == 0 and report["rows"] == 200
    assert list(json.loads((out / "source.json").read_text())["files"]) == [OBSERVATIONS]


def test_pooling_decodes_a_row_at_a_time(tmp_path, study, expected_vision):
    """One 120-row file of 32x1408 grids (22 MB decoded): peak Arrow and Python memory stay a small fraction."""
    files = make_hub_snapshot(small_params(), study, tmp_path, tokens=(2, 4, 4), n_files=1)
    path = files[embeddings_file(0)]
    decoded = len(expected_vision) * 32 * 1408 * 4
    pool_file(path)                                   # warm up: first-use imports are not the pooling's memory
    arrow_pool = pa.proxy_memory_pool(pa.default_memory_pool())
    previous = pa.default_memory_pool()
    pa.set_memory_pool(arrow_pool)
    tracemalloc.start()
    try:
        gbif_id, pooled = pool_file(path)
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(previous)
    assert arrow_pool.max_memory() < decoded / 8, (arrow_pool.max_memory(), decoded)
    assert python_peak < decoded / 8, (python_peak, decoded)
    np.testing.assert_allclose(pooled, np.stack([expected_vision[g] for g in gbif_id]), atol=1e-6)


# -- the HF cache and offline mode ---------------------------------------------------------------------
def test_offline_fetch_reuses_the_hf_cache_with_the_hub_down(tmp_path, study, snapshot, expected_vision, monkeypatch):
    with serve(snapshot, monkeypatch) as hub:
        online = fetch(tmp_path, study, "online")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = fetch(tmp_path, study, "offline")
    assert_complete(offline, snapshot, expected_vision)
    assert json.loads((offline / "source.json").read_text())["commit"] == hub.commit
    assert (offline / "source.json").read_bytes() == (online / "source.json").read_bytes()


def test_offline_without_a_cache_says_how_to_fix_it(tmp_path, study, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PermanentError, match=r"not in the Hugging Face cache.*HF_HUB_OFFLINE.*hf download") as error:
        fetch(tmp_path, study)
    assert OBSERVATIONS in str(error.value)
    assert not any((tmp_path / "raw").iterdir())


# -- retries and permanent errors ----------------------------------------------------------------------
def test_transient_faults_are_retried_to_a_complete_output(tmp_path, study, snapshot, expected_vision, monkeypatch,
                                                           hub_backoff):
    emb0, emb1 = embeddings_file(0), embeddings_file(1)
    with serve(snapshot, monkeypatch) as hub:
        hub.server.faults.add(hub.resolve_path(OBSERVATIONS), "status:503", "status:502")   # metadata: 5xx burst
        hub.cdn.faults.add(f"/{OBSERVATIONS}", "status:500", "drop:4000")                    # body: 5xx, then a reset
        hub.server.faults.add(hub.resolve_path(emb0, hub.commit), "status:504")
        hub.cdn.faults.add(f"/{emb1}", "drop:100000", "status:503", "truncate:1000")         # reset, 5xx, short body
        out = fetch(tmp_path, study)
        gets = [path for _, path, _ in hub.cdn.requests]
    assert_complete(out, snapshot, expected_vision)
    # a 5xx or short body fails the download (our retry); a reset is re-requested by huggingface_hub itself
    assert (gets.count(f"/{OBSERVATIONS}"), gets.count(f"/{emb0}"), gets.count(f"/{emb1}")) == (3, 1, 4)
    assert hub_backoff, "huggingface_hub's own retries were not exercised"


@pytest.mark.parametrize("target", ["body", "metadata"])
def test_persistent_5xx_fails_after_the_budget_leaving_nothing(tmp_path, study, snapshot, monkeypatch, hub_backoff,
                                                               target):
    name = embeddings_file(2)
    with serve(snapshot, monkeypatch) as hub:
        faults, path = ((hub.cdn.faults, f"/{name}") if target == "body"
                        else (hub.server.faults, hub.resolve_path(name, hub.commit)))
        faults.add(path, *["status:503"] * 100)
        budget = rf"download {name}: failed after {ATTEMPTS} attempts.*HTTP 503"
        with pytest.raises(TerrapipeError, match=budget) as error:
            fetch(tmp_path, study)
        requests = [p for _, p, _ in hub.server.requests + hub.cdn.requests if p == path]
    assert not isinstance(error.value, PermanentError)
    # ours x huggingface_hub's: a 5xx body comes straight back; a metadata HEAD is tried up to 7 times
    assert len(requests) == ATTEMPTS if target == "body" else ATTEMPTS <= len(requests) <= 7 * ATTEMPTS
    assert list((tmp_path / "raw").iterdir()) == []


@pytest.mark.parametrize("hub_options, token, fix", [
    ({"token": SECRET}, None, r"HTTP 401.*set HF_TOKEN or run `hf auth login`"),
    ({"token": SECRET}, "hf_wrongTOKEN", r"HTTP 401.*Invalid credentials.*set HF_TOKEN"),
    ({"gated": True}, None, r"HTTP 403.*gated.*Accept the dataset's conditions on http://127\.0\.0\.1:\d+/datasets/"),
    ({"repo_id": "someone/else"}, None, r"HTTP 404.*Repository not found.*repo_id and \.revision in params\.yaml"),
    ({"revision": "v0.2.0"}, None, r"HTTP 404.*Invalid rev id: main.*repo_id and \.revision in params\.yaml"),
], ids=["no-token", "wrong-token", "gated", "no-repo", "no-revision"])
def test_permanent_errors_stop_at_once_with_the_fix(tmp_path, study, snapshot, monkeypatch, hub_options, token, fix):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with serve(snapshot, monkeypatch, **hub_options) as hub:
        with pytest.raises(PermanentError, match=fix):
            fetch(tmp_path, study)
    assert [method for method, _, _ in hub.server.requests] == ["HEAD"] and hub.cdn.requests == []
    assert list((tmp_path / "raw").iterdir()) == []


def test_the_token_appears_in_no_log_error_or_file(tmp_path, study, snapshot, monkeypatch, caplog, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    for name in ("huggingface_hub", "httpx2", "terrapipe"):
        caplog.set_level(logging.DEBUG, logger=name)
    with serve(snapshot, monkeypatch, token=SECRET) as hub:
        fetch(tmp_path, study, "ok")
    sent = [authorization(headers) for _, _, headers in hub.server.requests + hub.cdn.requests]
    assert sent == [f"Bearer {SECRET}"] * len(hub.server.requests) + [None] * len(hub.cdn.requests)  # not off the hub
    errors = []
    for options in ({"token": SECRET, "gated": True}, {"token": SECRET + "x"}):
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / f"empty-cache{len(errors)}"))   # else the cache answers
        with serve(snapshot, monkeypatch, **options), pytest.raises(PermanentError) as error:
            fetch(tmp_path, study, f"failed{len(errors)}")
        errors.append(f"{error.value!s} {error.value!r}")
    captured = capsys.readouterr()
    assert "authenticated: True" in caplog.text                     # the DEBUG log did cover the requests
    for text in (caplog.text, captured.out, captured.err, *errors):
        assert SECRET not in text
    leaking = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaking == []


# -- the stage -----------------------------------------------------------------------------------------
def test_stage_fetches_from_the_hub_end_to_end(tmp_path, snapshot, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL))
    write_default_inputs(tmp_path / "data" / "inputs")
    raw = tmp_path / "data" / "raw" / "deepearth"

    def stage(token: str) -> subprocess.CompletedProcess:
        return run_stage("fetch_deepearth", cwd=tmp_path, check=False, env={"HF_TOKEN": token})

    with serve(snapshot, monkeypatch, token=SECRET) as hub:
        refused = stage("hf_notTheRightOne")
        assert refused.returncode == 2, refused.stderr
        assert "HF_TOKEN" in refused.stderr and "Traceback" not in refused.stderr and not raw.exists()
        result = stage(SECRET)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in raw.iterdir()) == ["observations.parquet", "source.json", "vision_embeddings.parquet"]
    assert json.loads((raw / "source.json").read_text())["commit"] == hub.commit
    assert (raw / OBSERVATIONS).read_bytes() == snapshot[OBSERVATIONS].read_bytes()
    assert SECRET not in result.stderr + result.stdout + refused.stderr
    assert [p.name for p in raw.parent.iterdir()] == ["deepearth"]   # no temporary left behind
