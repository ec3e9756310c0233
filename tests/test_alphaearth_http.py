"""AlphaEarth over HTTP: the real requests client against a local file server that speaks HTTP/1.1
with Range requests, GCS's published MD5 and injected faults."""
import hashlib
import json

import pytest
from conftest import SMALL_PARAMS, deep_update, run_stage

from terrapipe.config import parse_params
from terrapipe.data.alphaearth import clean_alphaearth
from terrapipe.errors import TerrapipeError
from terrapipe.sources.alphaearth import FILES, fetch_http
from terrapipe.sources.sample_alphaearth import fetch_alphaearth
from terrapipe.sources.transfer import PermanentError, RetryPolicy, download, partial_path
from terrapipe.study import load_study
from terrapipe.testing.servers import FakeHTTPServer

FAST_RETRY = {"attempts": 4, "base_delay_s": 0.01, "max_delay_s": 0.05}


@pytest.fixture
def published(workdir, small_params):
    """The sample world's AlphaEarth files, as DeepEarth publishes them, behind a local server."""
    folder = workdir / "bucket" / "datasets" / "alphaearth"
    folder.mkdir(parents=True)
    fetch_alphaearth(small_params, load_study("data/inputs", 1), folder)
    with FakeHTTPServer(workdir / "bucket", publish_md5=True) as server:
        yield server, folder


def _params(server, **http):
    base = f"{server.url}/datasets/alphaearth"
    section = {"metadata_url": f"{base}/{FILES['metadata']}", "embeddings_url": f"{base}/{FILES['embeddings']}",
               "retry": FAST_RETRY, **http}
    return parse_params(deep_update(SMALL_PARAMS, {"sources": {"alphaearth": {"source": "http", "http": section}}}))


def _gets(server, name):
    return [headers.get("Range") for method, path, headers in server.requests if method == "GET" and path.endswith(name)]


def test_fetch_writes_the_published_files_and_downstream_runs(published, workdir):
    server, folder = published
    out = workdir / "out"
    out.mkdir()
    fetch_http(_params(server), None, out)
    for name in FILES.values():
        assert (out / name).read_bytes() == (folder / name).read_bytes()
    record = json.loads((out / "download.json").read_text())
    published_md5 = hashlib.md5((folder / FILES["embeddings"]).read_bytes()).hexdigest()
    assert record[FILES["embeddings"]] == {"url": _params(server).sources.alphaearth.http.embeddings_url,
                                           "size": len((folder / FILES["embeddings"]).read_bytes()),
                                           "md5": published_md5, "sha256": None}
    processed = workdir / "processed"
    processed.mkdir()
    report = clean_alphaearth(out, processed, _params(server).normalize.alphaearth)
    assert report["rows_out"] > 0


def test_faults_end_in_a_complete_verified_file(published, workdir):
    server, folder = published
    path = f"/datasets/alphaearth/{FILES['embeddings']}"
    size = (folder / FILES["embeddings"]).stat().st_size
    # a 503 burst, a reset mid-body, a body cut short without a length (faults apply to HEAD and GET alike)
    server.faults.add(path, "status:503", "drop:2000", "status:502", f"truncate:{size // 2}")
    out = workdir / "out"
    out.mkdir()
    fetch_http(_params(server), None, out)
    assert (out / FILES["embeddings"]).read_bytes() == (folder / FILES["embeddings"]).read_bytes()
    assert any(r and r.startswith("bytes=") for r in _gets(server, FILES["embeddings"]))  # resumed, not restarted


def test_persistent_errors_exhaust_the_budget_and_leave_no_file(published, workdir):
    server, _ = published
    server.faults.add(f"/datasets/alphaearth/{FILES['metadata']}", *["status:503"] * 20)
    out = workdir / "out"
    out.mkdir()
    with pytest.raises(TerrapipeError, match="failed after 4 attempts"):
        fetch_http(_params(server), None, out)
    assert list(out.iterdir()) == []


def test_not_found_stops_at_once(published, workdir):
    server, _ = published
    params = _params(server, metadata_url=f"{server.url}/datasets/alphaearth/missing.csv")
    with pytest.raises(PermanentError, match="404 not found"):
        fetch_http(params, None, workdir)
    assert len(server.requests) == 1


def test_pinned_checksum_mismatch_is_refused(published, workdir):
    server, _ = published
    out = workdir / "out"
    out.mkdir()
    with pytest.raises(TerrapipeError, match="sha256 checksum mismatch"):
        fetch_http(_params(server, metadata_sha256="0" * 64), None, out)
    assert not (out / FILES["metadata"]).exists()


def test_published_md5_catches_corruption(workdir, tmp_path):
    (tmp_path / "f.bin").write_bytes(b"x" * 100_000)
    with FakeHTTPServer(tmp_path, publish_md5=True) as server:
        info = {"size": 100_000, "md5": "0" * 32}
        with pytest.raises(TerrapipeError, match="md5 checksum mismatch"):
            download(f"{server.url}/f.bin", tmp_path / "out.bin", info=info, cache_dir=tmp_path / "c", show_progress=False)


def test_partial_download_resumes_in_a_later_run(tmp_path):
    data = bytes(range(256)) * 8000  # 2 MB
    (tmp_path / "f.bin").write_bytes(data)
    with FakeHTTPServer(tmp_path) as server:
        server.faults.add("/f.bin", "drop:1200000", "status:503", "status:503")
        url = f"{server.url}/f.bin"
        with pytest.raises(TerrapipeError):
            download(url, tmp_path / "out.bin", policy=RetryPolicy(3, 0.01, 0.01), cache_dir=tmp_path / "c",
                     show_progress=False)
        kept = partial_path(url, tmp_path / "c").stat().st_size
        assert 0 < kept < len(data) and not (tmp_path / "out.bin").exists()
        download(url, tmp_path / "out.bin", cache_dir=tmp_path / "c", show_progress=False)
        assert (tmp_path / "out.bin").read_bytes() == data
        assert f"bytes={kept}-" in [h.get("Range") for m, p, h in server.requests]


def test_unchanged_files_are_not_downloaded_again(published, workdir):
    server, _ = published
    previous = workdir / "data" / "raw" / "alphaearth"
    previous.mkdir(parents=True)
    fetch_http(_params(server), None, previous)
    gets_before = len([r for r in server.requests if r[0] == "GET"])
    out = workdir / "out"
    out.mkdir()
    fetch_http(_params(server), None, out)
    assert len([r for r in server.requests if r[0] == "GET"]) == gets_before  # HEADs only
    assert (out / FILES["embeddings"]).read_bytes() == (previous / FILES["embeddings"]).read_bytes()


def test_stage_end_to_end(published, workdir):
    server, folder = published
    import yaml
    params = _params(server).model_dump(mode="json")
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage("fetch_alphaearth", cwd=workdir)
    run_stage("normalize_alphaearth", cwd=workdir)
    assert (workdir / "data" / "raw" / "alphaearth" / FILES["metadata"]).read_bytes() == (folder / FILES["metadata"]).read_bytes()
    assert (workdir / "data" / "processed" / "alphaearth" / "embeddings.npy").is_file()
