"""What every real backend shares: bounded retries, resumable verified downloads, secret redaction.

Failures are sorted into two kinds. Transient ones (HTTP 5xx/408/429, a reset or dropped
connection, a timeout, a body shorter than announced) are retried with exponential backoff up to a
budget; permanent ones (401/403 credentials or licence, 404, a rejected request) stop at once with
a message saying what to fix. A download streams into a ``.part`` file in the download cache
(never into data/raw), resumes it with an HTTP Range request after a drop, is checked against the
announced size (and checksum when one is published) and only then renamed to its final name.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from terrapipe.errors import TerrapipeError

log = logging.getLogger("terrapipe.transfer")
CACHE_DIR = Path(os.environ.get("TERRAPIPE_CACHE", "data/cache"))
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_SECRET_ENV = ("CDSAPI_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


class TransientError(TerrapipeError):
    """Worth another try: the server or the network hiccupped."""


class PermanentError(TerrapipeError):
    """Retrying cannot help: the message says what the user must change."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: delays base, 2*base, 4*base ... capped at max_delay."""
    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** attempt)

    @classmethod
    def from_params(cls, retry) -> RetryPolicy:
        """From a params ``retry`` section (terrapipe.config.RetryParams)."""
        return cls(retry.attempts, retry.base_delay_s, retry.max_delay_s)


# -- secrets ---------------------------------------------------------------------------------------
def known_secrets() -> tuple[str, ...]:
    """Secret values this process could leak: provider keys from the environment and ~/.cdsapirc."""
    rc = Path(os.environ.get("CDSAPI_RC", Path.home() / ".cdsapirc"))
    try:
        stamp = rc.stat().st_mtime_ns
    except OSError:
        stamp = None
    return _secrets(tuple(os.environ.get(name, "") for name in _SECRET_ENV), rc, stamp)


@functools.lru_cache(maxsize=8)
def _secrets(env_values: tuple[str, ...], rc: Path, stamp: int | None) -> tuple[str, ...]:
    """Cached per environment and rc-file version: redaction runs on every log record."""
    secrets = list(env_values)
    if stamp is not None:
        for line in rc.read_text(errors="ignore").splitlines():
            if line.strip().startswith("key:"):
                secrets.append(line.split(":", 1)[1].strip())
    return tuple(s for s in secrets if len(s) >= 6)


_TOKEN_PATTERNS = [re.compile(r"(?i)(authorization|private-token|token|key)([\"']?\s*[:=]\s*[\"']?)(?:bearer\s+)?([^\s\"',}]+)")]


def redact(text: str) -> str:
    """``text`` with every known secret value and anything shaped like a credential replaced by ***."""
    for secret in known_secrets():
        text = text.replace(secret, "***")
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return text


class RedactingFilter(logging.Filter):
    """Installed on the root handlers by the stages: no secret reaches a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


# -- retries ---------------------------------------------------------------------------------------
def classify_status(status: int, url: str, body: str = "") -> TerrapipeError | None:
    """None for success, else the error an HTTP status means (transient or permanent, with a fix)."""
    if status < 400:
        return None
    where = redact(url)
    detail = redact(body.strip())[:300]
    if status in TRANSIENT_STATUS:
        return TransientError(f"{where}: HTTP {status} (server busy or failing){': ' + detail if detail else ''}")
    if status == 401:
        return PermanentError(f"{where}: HTTP 401 unauthorized. Check the credentials the provider's client reads "
                              "(see README 'Real data'); they are never taken from params.yaml")
    if status == 403:
        licence = "licen" in body.lower()
        fix = ("Accept the dataset's licence on the provider's website with this account, then re-run" if licence
               else "This account may not access it: check the credentials and the licence/terms of the dataset")
        return PermanentError(f"{where}: HTTP 403 forbidden{': ' + detail if detail else ''}. {fix}")
    if status == 404:
        return PermanentError(f"{where}: HTTP 404 not found. Check the URL / dataset name in params.yaml")
    return PermanentError(f"{where}: HTTP {status}{': ' + detail if detail else ''}")


def with_retries(action, what: str, policy: RetryPolicy = RetryPolicy(), sleep=time.sleep):
    """Call ``action()``; retry TransientError (and network errors) with backoff; raise the rest at once."""
    import requests

    for attempt in range(policy.attempts):
        try:
            return action()
        except PermanentError:
            raise
        except (TransientError, requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError) as exc:
            if attempt == policy.attempts - 1:
                raise TerrapipeError(f"{what}: failed after {policy.attempts} attempts; last error: "
                                     f"{redact(str(exc))}. The provider may be down: re-run later") from None
            delay = policy.delay(attempt)
            log.warning("%s: %s; retry %d/%d in %.1f s", what, redact(str(exc)), attempt + 1, policy.attempts - 1, delay)
            sleep(delay)


# -- downloads -------------------------------------------------------------------------------------
class _Digests:
    """Checksums computed on a worker thread while chunks arrive (hashlib releases the GIL), so
    verification overlaps the transfer instead of re-reading the file afterwards."""

    def __init__(self, algorithms: tuple[str, ...]):
        import queue
        import threading
        self.algorithms = algorithms
        self.consumed = 0
        self._hashes = {a: hashlib.new(a) for a in algorithms}
        self._queue: queue.Queue = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (chunk := self._queue.get()) is not None:
            for digest in self._hashes.values():
                digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.consumed += len(chunk)
        self._queue.put(chunk)

    def restart_from(self, part: Path, have: int) -> None:
        """Re-align with the bytes already on disk (a resumed or restarted download)."""
        if self.consumed == have:
            return
        self.finish()
        self.__init__(self.algorithms)
        if have:
            with open(part, "rb") as source:
                while block := source.read(1 << 22):
                    self.update(block)

    def finish(self) -> dict[str, str]:
        self._queue.put(None)
        self._thread.join()
        return {a: h.hexdigest() for a, h in self._hashes.items()}


def partial_path(url: str, cache_dir: Path | None = None) -> Path:
    """Where the unfinished download of ``url`` lives between attempts and runs (outside data/raw)."""
    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    return Path(cache_dir or CACHE_DIR) / "partial" / f"{key}.part"


def _stream_once(session, url: str, part: Path, headers: dict, chunk_size: int, progress, timeout,
                 digests: _Digests) -> int | None:
    """One attempt: append to ``part`` from its current size; return the total size if the server told it."""
    have = part.stat().st_size if part.exists() else 0
    request_headers = dict(headers)
    if have:
        request_headers["Range"] = f"bytes={have}-"
    with session.get(url, headers=request_headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416 and have:  # asked past the end: what we hold may already be whole
            match = re.search(r"/(\d+)", response.headers.get("Content-Range", ""))
            return int(match.group(1)) if match else None
        error = classify_status(response.status_code, url, "" if response.ok else response.text)
        if error:
            raise error
        if have and response.status_code == 200:  # the server ignored the range: start over
            have = 0
            part.unlink()
        total = None
        if response.status_code == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink(missing_ok=True)
                raise TransientError(f"{redact(url)}: unexpected Content-Range {response.headers.get('Content-Range')!r}")
            total = None if match.group(2) == "*" else int(match.group(2))
        elif "Content-Length" in response.headers:
            total = int(response.headers["Content-Length"])
        progress.reset(total=total)
        progress.update(have)
        digests.restart_from(part, have)
        with open(part, "ab" if have else "wb") as sink:
            for chunk in response.iter_content(chunk_size):
                sink.write(chunk)
                digests.update(chunk)
                progress.update(len(chunk))
    return total


def remote_info(session, url: str, headers: dict, timeout) -> dict:
    """Size and published checksum of ``url`` from a HEAD request (GCS sends ``x-goog-hash: md5=...``)."""
    response = session.head(url, headers=headers, timeout=timeout, allow_redirects=True)
    error = classify_status(response.status_code, url)
    if error:
        raise error
    size = response.headers.get("Content-Length")
    md5 = re.search(r"md5=([A-Za-z0-9+/=]+)", response.headers.get("x-goog-hash", ""))
    return {"size": int(size) if size is not None else None,
            "md5": base64.b64decode(md5.group(1)).hex() if md5 else None}


def download_once(session, url: str, part: Path, timeout=(10, 60)) -> None:
    """One attempt at ``url`` into ``part``, resuming from its current size with a Range request (starting
    over where the server ignores it). For a caller whose own retry loop spans more than the download (a CDS
    job: poll, fetch, check), so that two retry loops never nest; the caller checks the size it was announced."""
    from tqdm import tqdm

    digests = _Digests(())  # nothing to hash
    try:
        _stream_once(session, url, part, {}, 1 << 20, tqdm(disable=True), timeout, digests)
    finally:
        digests.finish()


def download(url: str, dest: Path, *, expected_size: int | None = None, sha256: str | None = None,
             headers: dict | None = None, policy: RetryPolicy = RetryPolicy(), session=None,
             cache_dir: Path | None = None, chunk_size: int = 1 << 20, timeout=(10, 60), show_progress: bool = True,
             sleep=time.sleep, info: dict | None = None) -> Path:
    """Fetch ``url`` to ``dest`` (whole and verified, or not at all); resume partial data across attempts and runs.

    The size comes from ``expected_size`` or a HEAD request (skipped when the caller passes its result
    as ``info``); a checksum from ``sha256`` or the one the server publishes. Memory stays flat: the body is streamed in ``chunk_size`` pieces and hashed from
    disk afterwards.
    """
    import requests
    from tqdm import tqdm

    dest = Path(dest)
    part = partial_path(url, cache_dir)
    part.parent.mkdir(parents=True, exist_ok=True)
    session = session or requests.Session()
    headers = headers or {}
    if info is None:
        info = with_retries(lambda: remote_info(session, url, headers, timeout), f"HEAD {dest.name}", policy, sleep)
    wanted = expected_size or info["size"]
    progress = tqdm(unit="B", unit_scale=True, desc=dest.name, mininterval=1, disable=not show_progress, leave=False)
    checks = {"sha256": sha256, "md5": None if sha256 else info["md5"]}
    digests = _Digests(tuple(a for a, expected in checks.items() if expected))

    def attempt() -> None:
        total = _stream_once(session, url, part, headers, chunk_size, progress, timeout, digests)
        size = part.stat().st_size if part.exists() else 0
        target = wanted or total
        if target is not None and size < target:
            raise TransientError(f"{redact(url)}: body ended after {size} of {target} bytes")
        if target is not None and size > target:
            part.unlink()
            raise TransientError(f"{redact(url)}: received {size} bytes, more than the {target} announced")

    try:
        with_retries(attempt, f"download {dest.name}", policy, sleep)
        digests.restart_from(part, part.stat().st_size)  # a 416 "already whole" attempt streamed nothing
    finally:
        progress.close()
        computed = digests.finish()
    for algorithm, expected in checks.items():
        if expected and computed[algorithm] != expected.lower():
            part.unlink()
            raise TerrapipeError(f"{redact(url)}: {algorithm} checksum mismatch (expected {expected}). The download "
                                 "was discarded; re-run to fetch it again, or check the checksum in params.yaml")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(part, dest)
    except OSError:  # the cache is on another filesystem
        import shutil
        shutil.copyfile(part, dest)
        part.unlink()
    return dest


def file_digest(path: Path, algorithm: str = "sha256", chunk_size: int = 1 << 22) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as source:
        while block := source.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()
