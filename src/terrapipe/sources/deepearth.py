"""The Hugging Face backend of fetch_deepearth: deepearth/central-florida-native-plants -> the raw layout.

Files come through huggingface_hub and its cache (HF_ENDPOINT, HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE;
the token from HF_TOKEN or `hf auth login`, never from params), so a second run, or an offline one,
reuses what was fetched. Every file after the first is pinned to the commit the requested revision
resolved to, so all of them come from one release even if the branch moves during the fetch.
The raw layout is the sample backend's (terrapipe.sources.sample_deepearth):

    observations.parquet        the hub's file, byte for byte
    vision_embeddings.parquet   gbif_id, embedding: each [4608, 1408] V-JEPA-2 token grid mean-pooled to 1408
    source.json                 repo_id, requested revision, resolved commit, hub files and their sizes

Pooling streams each embeddings file (about 45 rows of 26 MB each) one row at a time. Everything is
downloaded before anything is written and each output is written atomically, so a failed fetch leaves
nothing in out_dir.

Retries: each file is retried on transient errors (5xx, 408/429, resets, timeouts, short bodies) with
the params' backoff; 401/403/404 stop at once with the fix. huggingface_hub retries on its own too:
a failed metadata HEAD up to 6 more times, a dropped body up to 5 times by Range resume (a 5xx on the
body comes straight back). A file therefore costs at most ``attempts`` x 7 HEAD requests.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terrapipe.errors import InputDataError
from terrapipe.sources.transfer import (
    PermanentError,
    RetryPolicy,
    TransientError,
    classify_status,
    redact,
    with_retries,
)

log = logging.getLogger("terrapipe")

OBSERVATIONS = "observations.parquet"
VISION_INDEX = "vision_index.parquet"
VISION_OUT = "vision_embeddings.parquet"
SOURCE_FILE = "source.json"
POOL_BATCH_ROWS = 1   # observations decoded at a time; Arrow holds about 6x a row's 26 MB while decoding it
READ_BUFFER = 1 << 20  # read pages through a 1 MB buffer; pre-buffering would read the whole file at once
_REFETCH = "Remove the dataset from the Hugging Face cache (`hf cache rm dataset/<repo_id>`) and re-run fetch_deepearth"


def embeddings_file(file_idx: int) -> str:
    """The hub path of vision embeddings file ``file_idx`` (vision_index.parquet's file_idx)."""
    return f"vision_embeddings/embeddings_{file_idx:06d}.parquet"


@dataclass(frozen=True)
class HubAccess:
    """How to reach one dataset repository, as the environment says when the fetch starts.

    huggingface_hub reads HF_ENDPOINT, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE once, at import: a
    long-lived worker (or a test) that sets them later would otherwise be ignored.
    """
    repo_id: str
    endpoint: str
    cache_dir: str
    offline: bool
    policy: RetryPolicy

    @classmethod
    def from_env(cls, settings) -> HubAccess:
        """From params' ``sources.deepearth.huggingface`` section and the environment."""
        from huggingface_hub import constants

        env = os.environ
        cache_dir = env.get("HF_HUB_CACHE") or (os.path.join(env["HF_HOME"], "hub") if env.get("HF_HOME")
                                                else constants.HF_HUB_CACHE)
        offline = constants.is_offline_mode() or env.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES
        return cls(settings.repo_id, (env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/"), cache_dir, offline,
                   RetryPolicy.from_params(settings.retry))

    def _hf_download(self, filename: str, revision: str, *, local_only: bool = False, dry_run: bool = False):
        from huggingface_hub import hf_hub_download

        return hf_hub_download(self.repo_id, filename, repo_type="dataset", revision=revision, endpoint=self.endpoint,
                               cache_dir=self.cache_dir, local_files_only=self.offline or local_only, dry_run=dry_run)

    def download(self, filename: str, revision: str) -> Path:
        """The cached copy of ``filename`` at ``revision``: downloaded with retries unless the cache has it."""
        def attempt() -> Path:
            try:
                return Path(self._hf_download(filename, revision))
            except Exception as exc:  # noqa: BLE001 - sorted below; anything else is re-raised as is
                error = self._classify(exc, filename, revision)
                if error is None:
                    raise
                raise error from None

        return with_retries(attempt, f"download {filename}", self.policy)

    def resolved_commit(self, filename: str, revision: str) -> str:
        """The commit ``revision`` pointed to when ``filename`` was fetched (the cache's refs; no request)."""
        return self._hf_download(filename, revision, local_only=True, dry_run=True).commit_hash

    def _classify(self, exc: Exception, filename: str, revision: str):
        """The TerrapipeError a failed hf_hub_download means, or None if ``exc`` is no hub or network failure."""
        import httpx2
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

        where = f"{self.repo_id}@{revision}: {filename}"
        if isinstance(exc, LocalEntryNotFoundError):
            if self.offline:
                return PermanentError(
                    f"{where} is not in the Hugging Face cache ({self.cache_dir}) and HF_HUB_OFFLINE is set. Unset "
                    f"HF_HUB_OFFLINE to download it, or pre-download it into this cache (same HF_HOME / HF_HUB_CACHE) "
                    f"with `hf download {self.repo_id} --repo-type dataset --revision {revision}`")
            exc = exc.__cause__ or exc   # huggingface_hub wraps the failed metadata request
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code
            detail = f": {redact(exc.server_message)}" if exc.server_message else ""
            if isinstance(exc, GatedRepoError):
                return PermanentError(
                    f"{where}: HTTP {status}, the dataset is gated and this account has no access{detail}. Accept the "
                    f"dataset's conditions on {self.endpoint}/datasets/{self.repo_id} while logged in, make sure "
                    "HF_TOKEN (or `hf auth login`) holds that account's token, then re-run")
            if status == 401:
                return PermanentError(
                    f"{where}: HTTP 401 unauthorized{detail}. The token is missing or invalid (the hub also answers "
                    "so for private or non-existent repositories): set HF_TOKEN or run `hf auth login`, and check "
                    "sources.deepearth.huggingface.repo_id in params.yaml. Tokens are never read from params.yaml")
            if status == 403:
                return PermanentError(f"{where}: HTTP 403 forbidden{detail}. Use a token (HF_TOKEN or `hf auth login`) "
                                      "with read access to this dataset")
            if status == 404:
                return PermanentError(f"{where}: HTTP 404 not found{detail}. Check sources.deepearth.huggingface."
                                      "repo_id and .revision in params.yaml")
            return classify_status(status, where, exc.server_message or "")
        # An OSError without errno is huggingface_hub's own (a body shorter than announced, a reply without
        # hub headers); with an errno it is the local disk, which another try cannot fix.
        if isinstance(exc, httpx2.TransportError) or (isinstance(exc, OSError) and exc.errno is None):
            return TransientError(f"{where}: {redact(str(exc))}")
        return None


def fetch_hf(params, study, out_dir: Path) -> None:
    """Fill ``out_dir`` with the raw DeepEarth layout from the hub (``study`` is unused: the data has its own area)."""
    from terrapipe.atomic import atomic_path, write_json

    settings = params.sources.deepearth.huggingface
    hub = HubAccess.from_env(settings)
    fetched = {OBSERVATIONS: hub.download(OBSERVATIONS, settings.revision)}
    commit = hub.resolved_commit(OBSERVATIONS, settings.revision)
    log.info("deepearth: %s@%s is commit %s%s", settings.repo_id, settings.revision, commit,
             " (offline, from the Hugging Face cache)" if hub.offline else "")
    grids: list[str] = []
    if settings.include_vision:
        fetched[VISION_INDEX] = hub.download(VISION_INDEX, commit)
        grids = embedding_files(fetched[VISION_INDEX])
        fetched.update((name, hub.download(name, commit)) for name in grids)

    out_dir = Path(out_dir)
    with atomic_path(out_dir / OBSERVATIONS) as tmp:
        shutil.copyfile(fetched[OBSERVATIONS], tmp)
    rows = write_pooled([fetched[name] for name in grids], out_dir / VISION_OUT)
    write_json(out_dir / SOURCE_FILE, {
        "repo_id": settings.repo_id, "repo_type": "dataset", "revision": settings.revision, "commit": commit,
        "files": {name: path.stat().st_size for name, path in fetched.items()},
    })
    log.info("deepearth: %d files from the hub, %d vision embeddings pooled", len(fetched), rows)


def embedding_files(index_path: Path) -> list[str]:
    """The embeddings files vision_index.parquet refers to, in file_idx order."""
    import pyarrow.parquet as pq

    try:
        file_idx = pq.read_table(index_path, columns=["file_idx"]).column("file_idx").to_numpy()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a corrupt file or missing column
        raise InputDataError(index_path, f"no readable column 'file_idx' ({exc})", _REFETCH) from None
    return [embeddings_file(int(i)) for i in np.unique(file_idx)]


def pool_file(path: Path, batch_rows: int = POOL_BATCH_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(gbif_id [n], float32 [n, dim]) of one embeddings file: each row's token grid averaged over its tokens.

    A row's flat ``embedding`` is laid out as ``original_shape`` ("[4608, 1408]": 8x24x24 tokens x dim).
    The file is read ``batch_rows`` rows at a time through a small buffer, never whole.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids, pooled, row = [], [], 0
    source = pq.ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False)
    for batch in source.iter_batches(batch_size=batch_rows, columns=["gbif_id", "embedding", "original_shape"]):
        grids = batch.column("embedding")
        if grids.null_count:
            raise InputDataError(path, f"column 'embedding' is null in rows {row}..{row + len(batch) - 1}", _REFETCH)
        ends = np.cumsum(pc.list_value_length(grids).to_numpy())
        values = grids.flatten().to_numpy(zero_copy_only=False)
        for start, end, shape in zip(np.r_[0, ends[:-1]], ends, batch.column("original_shape").to_pylist()):
            pooled.append(_mean_over_tokens(values[start:end], shape, path, row))
            row += 1
        ids.append(batch.column("gbif_id").to_numpy(zero_copy_only=False))
    dim = pooled[0].shape[0] if pooled else 0
    return (np.concatenate(ids).astype(np.int64) if ids else np.empty(0, np.int64),
            np.array(pooled).reshape(len(pooled), dim))


def _mean_over_tokens(values: np.ndarray, shape_text, path: Path, row: int) -> np.ndarray:
    try:
        shape = [int(n) for n in json.loads(shape_text)]
    except (TypeError, ValueError):
        raise InputDataError(path, f"row {row}: original_shape {shape_text!r} is not a list like \"[4608, 1408]\"",
                             _REFETCH) from None
    if not shape or int(np.prod(shape)) != len(values):
        raise InputDataError(path, f"row {row}: embedding has {len(values)} values but original_shape is {shape_text}",
                             _REFETCH)
    return values.reshape(-1, shape[-1]).mean(axis=0, dtype=np.float64).astype(np.float32)


def write_pooled(paths: list[Path], dest: Path, batch_rows: int = POOL_BATCH_ROWS) -> int:
    """Write gbif_id + pooled embedding of every row of ``paths`` to ``dest`` (one row group per file); return the rows.

    With no paths the file is empty but has the schema the tidy step reads.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from terrapipe.atomic import atomic_path
    from terrapipe.data.arrays import fixed_lists

    schema = pa.schema([("gbif_id", pa.int64()), ("embedding", pa.list_(pa.float32()))])
    rows = 0
    with atomic_path(dest) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for path in paths:
            gbif_id, pooled = pool_file(path, batch_rows)
            writer.write_table(pa.table([pa.array(gbif_id, pa.int64()), fixed_lists(pooled)], schema=schema))
            rows += len(gbif_id)
    return rows
