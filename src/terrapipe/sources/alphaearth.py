"""HTTP backend of fetch_alphaearth: DeepEarth's published metadata CSV and [N, 64] embeddings tensor.

Writes the same raw layout as the sample source (``alphaearth_metadata.csv``, ``alphaearth_embeddings.pt``)
plus ``download.json`` recording where each file came from, its size and checksums. Downloads stream
through terrapipe.sources.transfer (progress bar, resume of a partial download, size and checksum
verification, bounded retries). A file already fetched (same URL, same size and published checksum
as the server reports now) is reused from the previous data/raw/alphaearth instead of downloaded again.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from terrapipe import paths
from terrapipe.errors import InputDataError
from terrapipe.sources.transfer import RetryPolicy, download, redact, remote_info, with_retries

log = logging.getLogger("terrapipe.alphaearth")
PREVIOUS = paths.raw("alphaearth")
FILES = {"metadata": "alphaearth_metadata.csv", "embeddings": "alphaearth_embeddings.pt"}
METADATA_COLUMNS = ("latitude", "longitude", "elevation_m", "event_date")


def _reusable(previous: dict, name: str, url: str, info: dict, pinned: str | None) -> Path | None:
    """The previous copy of ``name`` if it is the same file the server offers now, else None."""
    record = previous.get(name)
    path = PREVIOUS / name
    if not record or record["url"] != url or not path.is_file() or path.stat().st_size != record["size"]:
        return None
    same_remote = info["size"] == record["size"] and info["md5"] in (None, record.get("md5"))
    same_pin = pinned is None or pinned == record.get("sha256")
    return path if same_remote and same_pin else None


def check_metadata(path: Path) -> None:
    """The CSV has DeepEarth's columns (read from the header only: the file may hold millions of rows)."""
    import pandas as pd
    try:
        columns = pd.read_csv(path, nrows=5).columns
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same thing here
        raise InputDataError(path, f"not a readable CSV ({exc})", "Check metadata_url in params.yaml") from None
    missing = [c for c in METADATA_COLUMNS if c not in columns]
    if missing:
        raise InputDataError(path, f"missing column(s) {missing}", "Check metadata_url: DeepEarth's CSV has "
                             f"{list(METADATA_COLUMNS)}")


def check_embeddings(path: Path) -> None:
    """The tensor is [N, 64] float32 or int8 (memory-mapped: nothing is read but the header)."""
    import torch
    try:
        tensor = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise InputDataError(path, f"not a readable torch tensor file ({exc})", "Check embeddings_url") from None
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2 or tensor.shape[1] != 64 \
            or tensor.dtype not in (torch.float32, torch.int8):
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InputDataError(path, f"holds {shape}, expected a float32 or int8 tensor [N, 64]", "Check embeddings_url")


def fetch_http(params, study, out_dir: Path) -> None:
    """Download (or reuse) both files into ``out_dir`` and record their provenance in download.json."""
    import requests

    http = params.sources.alphaearth.http
    policy = RetryPolicy.from_params(http.retry)
    session = requests.Session()
    previous_record = PREVIOUS / "download.json"
    previous = json.loads(previous_record.read_text()) if previous_record.is_file() else {}
    record = {}
    for kind, url, pinned in (("metadata", http.metadata_url, http.metadata_sha256),
                              ("embeddings", http.embeddings_url, http.embeddings_sha256)):
        name = FILES[kind]
        target = out_dir / name
        info = with_retries(lambda url=url: remote_info(session, url, {}, (10, 60)), f"HEAD {name}", policy)
        reuse = _reusable(previous, name, url, info, pinned)
        if reuse is not None:
            log.info("%s: unchanged on the server, reusing %s", name, reuse)
            if reuse.stat().st_dev == out_dir.stat().st_dev:
                os.link(reuse, target)  # no copy of what may be ~800 MB
            else:
                shutil.copyfile(reuse, target)
            record[name] = previous[name]
            continue
        log.info("%s: downloading %s (%s bytes)", name, redact(url), info["size"])
        download(url, target, sha256=pinned, policy=policy, session=session, info=info)
        record[name] = {"url": url, "size": target.stat().st_size, "md5": info["md5"], "sha256": pinned}
    check_metadata(out_dir / FILES["metadata"])
    check_embeddings(out_dir / FILES["embeddings"])
    (out_dir / "download.json").write_text(json.dumps(record, indent=2) + "\n")
