"""A fake Hugging Face hub on 127.0.0.1 for huggingface_hub's real download path, and a snapshot builder.

``hf_hub_download`` makes two requests per file it does not hold. First ``HEAD {endpoint}/datasets/{repo}/
resolve/{revision}/{path}``: it needs ``X-Repo-Commit`` and an ETag (``X-Linked-Etag`` preferred) on the
answer, takes the size from ``X-Linked-Size``, follows redirects only within the hub's origin, and maps
errors by ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). Then a ``GET`` of
the location it was given. Like the real hub for LFS files, this fake answers the HEAD with a 302 to a
"CDN" on another origin, so the body comes from a second server: the token is not sent there (as on the
hub), and faults can be aimed at the metadata request (``hub.server.faults`` at ``hub.resolve_path(...)``)
or at the body (``hub.cdn.faults`` at ``"/" + path_in_repo``) separately. No Xet headers are sent, so
huggingface_hub downloads over plain HTTP even when hf_xet is installed.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from terrapipe.sources.transfer import file_digest
from terrapipe.testing.servers import FakeHTTPServer, send_json

TOKEN_NOISE = 0.5   # std of the per-token deviations around an observation's pooled vector


class FakeHub:
    """One dataset repository at one commit: ``with FakeHub(files, repo_id) as hub:`` then HF_ENDPOINT=hub.endpoint.

    ``files`` maps paths in the repository to local files. With ``token`` set, requests must carry it
    (401 otherwise, as the hub answers); ``gated`` answers 403 GatedRepo as for a user who has not
    accepted the dataset's conditions. ``revision`` (a branch) and ``commit`` both resolve.
    """

    def __init__(self, files: dict[str, str | Path], repo_id: str, revision: str = "main",
                 token: str | None = None, *, gated: bool = False):
        self.repo_id, self.revision, self.token, self.gated = repo_id, revision, token, gated
        self.commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()   # fixed, like a git sha
        self._cdn_root = tempfile.TemporaryDirectory(prefix="fake-hub-cdn-")
        self.sha256: dict[str, str] = {}
        for path_in_repo, local in files.items():
            target = Path(self._cdn_root.name) / path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
            self.sha256[path_in_repo] = file_digest(target)
        self.server = FakeHTTPServer()
        self.cdn = FakeHTTPServer(self._cdn_root.name)
        resolve = r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)"
        for method in ("HEAD", "GET"):
            self.server.route(method, resolve)(self._resolve)

    @property
    def endpoint(self) -> str:
        return self.server.url

    def resolve_path(self, path_in_repo: str, revision: str | None = None) -> str:
        """The URL path of a file's metadata request (to aim ``hub.server.faults`` at)."""
        return f"/datasets/{self.repo_id}/resolve/{revision or self.revision}/{path_in_repo}"

    def __enter__(self) -> FakeHub:
        self.server.__enter__()
        self.cdn.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        # each server's shutdown waits up to half a second for its poll loop: stop both at once
        stopping = threading.Thread(target=self.cdn.__exit__, args=exc)
        stopping.start()
        self.server.__exit__(*exc)
        stopping.join()
        self._cdn_root.cleanup()

    def _refusal(self, handler, repo_id: str, revision: str, path: str) -> tuple[int, str, str] | None:
        """(status, X-Error-Code, X-Error-Message) of the hub's refusal, in the hub's order of checks."""
        sent = handler.headers.get("Authorization")
        if self.token and not sent:
            return 401, "RepoNotFound", "Invalid username or password."
        if self.token and sent != f"Bearer {self.token}":
            return 401, "", "Invalid credentials in Authorization header"
        if repo_id != self.repo_id:
            return 404, "RepoNotFound", "Repository not found"
        if revision not in (self.revision, self.commit):
            return 404, "RevisionNotFound", f"Invalid rev id: {revision}"
        if self.gated:
            return 403, "GatedRepo", (f"Access to dataset {repo_id} is restricted and you are not in the authorized "
                                      f"list. Visit {self.endpoint}/datasets/{repo_id} to ask for access.")
        if path not in self.sha256:
            return 404, "EntryNotFound", f"{path} does not exist on \"{revision}\""
        return None

    def _resolve(self, handler, match) -> None:
        repo_id, revision, path = (unquote(group) for group in match.groups())
        refusal = self._refusal(handler, repo_id, revision, path)
        if refusal:
            status, code, message = refusal
            headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
            if code == "EntryNotFound":
                headers["X-Repo-Commit"] = self.commit
            return send_json(handler, status, {"error": message}, headers)
        size = (Path(self._cdn_root.name) / path).stat().st_size
        handler.send_response(302)
        for key, value in {"Location": f"{self.cdn.url}/{quote(path)}", "X-Repo-Commit": self.commit,
                           "X-Linked-Etag": f'"{self.sha256[path]}"', "ETag": f'"{self.sha256[path]}"',
                           "X-Linked-Size": str(size), "Content-Length": "0"}.items():
            handler.send_header(key, value)
        handler.end_headers()


def make_hub_snapshot(params, study, folder: str | Path, *, tokens: tuple[int, ...] = (1, 2, 2),
                      n_files: int = 3, rows_per_group: int = 4) -> dict[str, Path]:
    """Write a small copy of the hub dataset from the sample world; return {path in repo: local file}.

    observations.parquet is the sample backend's; vision_index.parquet maps gbif_id -> (file_idx,
    row_idx); vision_embeddings/embeddings_XXXXXX.parquet hold full token grids in the hub's layout
    (flat ``embedding``, ``original_shape`` "[T, dim]") with T = prod(``tokens``) instead of 8x24x24.
    Each grid is the sample's pooled vector plus noise of zero mean over the tokens, so pooling the
    grid gives back exactly the sample's ``vision_embeddings.parquet`` embedding.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from terrapipe.data.arrays import fixed_lists
    from terrapipe.sources.deepearth import OBSERVATIONS, VISION_INDEX, embeddings_file
    from terrapipe.sources.sample_deepearth import sample_deepearth

    folder = Path(folder)
    observations, vision = sample_deepearth(params, study)
    pooled = np.stack(vision.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    gbif = vision.column("gbif_id").to_numpy()
    n_tokens, dim = int(np.prod(tokens)), pooled.shape[1]
    rng = np.random.default_rng(params.seed)
    files = {OBSERVATIONS: folder / OBSERVATIONS, VISION_INDEX: folder / VISION_INDEX}
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(observations, files[OBSERVATIONS])

    parts = np.array_split(np.arange(len(gbif)), n_files)
    for file_idx, rows in enumerate(parts):
        noise = rng.normal(0.0, TOKEN_NOISE, (len(rows), n_tokens, dim))
        grids = (pooled[rows, None, :] + noise - noise.mean(axis=1, keepdims=True)).astype(np.float32)
        name = embeddings_file(file_idx)
        files[name] = folder / name
        files[name].parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "gbif_id": pa.array(gbif[rows], pa.int64()),
            "embedding": fixed_lists(grids.reshape(len(rows), n_tokens * dim)),
            "original_shape": pa.array([json.dumps([n_tokens, dim])] * len(rows), pa.string()),
        }), files[name], row_group_size=rows_per_group, use_dictionary=["original_shape"])
    pq.write_table(pa.table({
        "gbif_id": pa.array(gbif, pa.int64()),
        "file_idx": pa.array(np.repeat(np.arange(n_files), [len(p) for p in parts]), pa.int64()),
        "row_idx": pa.array(np.concatenate([np.arange(len(p)) for p in parts]), pa.int64()),
    }), files[VISION_INDEX])
    return files
