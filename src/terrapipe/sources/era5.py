"""ERA5 from the Copernicus Climate Data Store, through the real cdsapi client.

The requests are the sample backend's (``era5_requests``: one per AOI and year, area snapped to the
grid), so both backends write the same data/raw/era5/ layout. Credentials are whatever cdsapi itself
reads (CDSAPI_URL / CDSAPI_KEY, else ~/.cdsapirc or the file CDSAPI_RC names), never params.yaml.

Each answer lands in a temporary file in the download cache, is checked (non-empty, the size the CDS
announced, the ERA5 schema and units through ``open_era5``) and only then copied into ``out_dir``, so
an interrupted or failed fetch leaves nothing partial there. Completed files stay in the cache under a
hash of (dataset, request): a request already answered is never sent again.

Retries: cdsapi's own loop is switched off (``retry_max=1``: every HTTP call is made once) and
terrapipe's bounded backoff (sources.era5.cds.retry) resubmits the whole request on a transient
failure (5xx, reset, timeout, short download, a job that ends ``failed``); the two never multiply.
Permanent failures (key refused, licence not accepted, job rejected, unknown dataset) stop at once.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path

from terrapipe.atomic import atomic_path, write_json
from terrapipe.data.era5 import open_era5, selected
from terrapipe.errors import InputDataError, TerrapipeError
from terrapipe.sources import transfer
from terrapipe.sources.sample_era5 import era5_requests
from terrapipe.sources.transfer import (
    PermanentError,
    RetryPolicy,
    TransientError,
    classify_status,
    redact,
    with_retries,
)

log = logging.getLogger(__name__)
RAW_DIR = Path("data/raw/era5")  # the previous output of the fetch_era5 stage
CDS_SITE = "https://cds.climate.copernicus.eu"
CREDENTIALS = ("cdsapi reads the key from CDSAPI_KEY, else from ~/.cdsapirc (or the file CDSAPI_RC names), as a "
               "line 'key: <personal access token>' beside 'url: https://cds.climate.copernicus.eu/api'; copy the "
               f"token from {CDS_SITE}/profile. It is never read from params.yaml")


def request_key(entry: dict) -> str:
    """The download cache's name for a request: same dataset and request, same file."""
    canonical = json.dumps({"dataset": entry["dataset"], "request": entry["request"]}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def fetch_cds(params, study, out_dir: Path, previous: Path | None = RAW_DIR) -> None:
    """Write ``era5_<aoi>_<year>.nc`` and its ``.request.json`` for every request into ``out_dir``.

    A request is answered from the download cache, else from ``previous`` (the last fetch's output) when
    the file there was fetched from the CDS for exactly this request, else from the CDS.
    """
    era5 = params.sources.era5
    variables = selected(era5.variables)
    cache = transfer.CACHE_DIR / "era5"
    cache.mkdir(parents=True, exist_ok=True)
    policy = RetryPolicy.from_params(era5.cds.retry)
    client, client_log = None, _ClientLog()
    for entry in era5_requests(params, study):
        started = time.perf_counter()
        record = {**entry, "source": "cds"}  # "source" tells a CDS file from a sample-world one
        cached = cache / f"{request_key(entry)}.nc"
        kept = Path(previous) / entry["target"] if previous else None
        if _valid(cached, variables, discard=True):
            source, how = cached, "from the download cache"
        elif kept and _record_of(kept) == record and _valid(kept, variables):
            source, how = kept, f"kept from {previous} (same request)"
        else:
            client = client or _client(era5.cds.poll_max_s, client_log)
            _retrieve(client, client_log, entry, cached, variables, policy)
            source, how = cached, f"from the CDS (job {client_log.job})"
        with atomic_path(Path(out_dir) / entry["target"]) as tmp:
            shutil.copyfile(source, tmp)
        write_json((Path(out_dir) / entry["target"]).with_suffix(".request.json"), record)
        log.info("%s: %s, %.0f kB in %.1f s", entry["target"], how, source.stat().st_size / 1e3,
                 time.perf_counter() - started)


def _record_of(path: Path) -> dict | None:
    try:
        return json.loads(path.with_suffix(".request.json").read_text())
    except (OSError, ValueError):
        return None


def _valid(path: Path, variables, discard: bool = False) -> bool:
    """Whether ``path`` is a readable ERA5 file with ``variables``; a bad cached copy is deleted."""
    if not path.is_file():
        return False
    try:
        open_era5(path, variables)
        return True
    except InputDataError as exc:
        log.warning("ignoring %s: %s", path, exc.problem)
        if discard:
            path.unlink()
        return False


# -- the cdsapi client -----------------------------------------------------------------------------
class _ClientLog:
    """cdsapi's log callbacks: every message goes to our logger, redacted (cdsapi logs its own settings,
    key included, at debug level), and at debug level except warnings and errors, keeping one INFO line
    per request. The job id and status are remembered: cdsapi reports failed and rejected jobs alike."""

    LEVELS = {"debug": logging.DEBUG, "info": logging.DEBUG, "warning": logging.WARNING, "error": logging.ERROR}

    def __init__(self):
        self.job = self.status = None

    def callbacks(self) -> dict:
        return {f"{name}_callback": functools.partial(self._emit, level) for name, level in self.LEVELS.items()}

    def _emit(self, level: int, message, *args, **_) -> None:
        text = redact(str(message) % args if args else str(message))
        if found := re.match(r"Request ID is (\S+)", text):
            self.job = found.group(1)
        if found := re.match(r"status has been updated to (\S+)", text):
            self.status = found.group(1)
        log.log(level, "cdsapi: %s", text)


def _client(poll_max_s: float, client_log: _ClientLog):
    """A cdsapi client on the new CDS that makes every HTTP call once (our policy does the retrying)."""
    import cdsapi
    import cdsapi.api

    try:
        _, key, _ = cdsapi.api.get_url_key_verify(None, None, None)
    except Exception:  # noqa: BLE001 - cdsapi raises a bare Exception when it finds no url and key
        raise PermanentError(f"no CDS credentials found. {CREDENTIALS}") from None
    if ":" in key:
        raise PermanentError("the CDS key has the old '<UID>:<key>' form, which the new Climate Data Store refuses: "
                             f"keep only the personal access token, without the 'UID:' prefix. {CREDENTIALS}")
    return cdsapi.Client(progress=False, retry_max=1, sleep_max=poll_max_s, **client_log.callbacks())


def _retrieve(client, client_log: _ClientLog, entry: dict, dest: Path, variables, policy: RetryPolicy) -> None:
    """Submit, wait, download to a temporary file beside ``dest``, check it, then rename it to ``dest``."""
    import requests
    from ecmwf.datastores.processing import DownloadError, ProcessingFailedError

    part = dest.with_suffix(".part")
    target = entry["target"]

    def attempt() -> None:
        client_log.job = client_log.status = None
        try:
            result = client.retrieve(entry["dataset"], entry["request"])  # submit and wait: the job's results
            announced = int(result.content_length)
            result.download(str(part))
        except requests.HTTPError as exc:
            raise _http_error(exc, entry, client_log.status) from None
        except ProcessingFailedError as exc:
            raise _job_error(entry, client_log.status, str(exc)) from None
        except (DownloadError, AssertionError) as exc:  # cdsapi's and multiurl's size checks
            raise TransientError(f"incomplete download ({redact(str(exc))})") from None
        size = part.stat().st_size
        if size == 0 or size != announced:
            raise TransientError(f"downloaded {size} bytes, the CDS announced {announced}")
        try:
            open_era5(part, variables)
        except InputDataError as exc:
            raise PermanentError(f"{target}: the CDS answered with a file that fails the ERA5 check ({exc.problem}). "
                                 "Its NetCDF layout may have changed: see terrapipe.data.era5.normalize_schema") from None
        part.replace(dest)

    try:
        with_retries(attempt, f"CDS request {target}", policy)
    finally:
        part.unlink(missing_ok=True)


def _http_error(exc, entry: dict, status: str | None) -> TerrapipeError:
    """What an HTTP error from the CDS means, with the fix."""
    from ecmwf.datastores.processing import error_json_to_message

    response = exc.response
    if response is None:
        return TransientError(redact(str(exc)))
    code, url = response.status_code, response.url
    try:
        detail = error_json_to_message(response.json()) or response.text
    except ValueError:
        detail = response.text
    dataset = entry["dataset"]
    if url.endswith("/results") and status in ("failed", "rejected"):
        return _job_error(entry, status, detail)
    if code == 401 or (code == 403 and "licen" not in detail.lower()):
        return PermanentError(f"{redact(url)}: HTTP {code}: the CDS refused the API key. {CREDENTIALS}")
    if code == 403:
        return PermanentError(f"{redact(url)}: HTTP 403: {_oneline(detail)}. The licence of {dataset} has "
                              f"not been accepted with this CDS account: accept it on the CDS website, logged in with "
                              f"the account of your key, at {CDS_SITE}/datasets/{dataset}?tab=download (section "
                              "'Terms of use'), then re-run")
    if code == 404 and "/processes/" in url:
        return PermanentError(f"{redact(url)}: HTTP 404: the CDS has no dataset {dataset!r}. Fix sources.era5.dataset "
                              "in params.yaml")
    return classify_status(code, url, _oneline(detail))


def _job_error(entry: dict, status: str | None, detail: str) -> TerrapipeError:
    """A job that ended without a result: a rejected request is permanent, a failed job is worth resubmitting."""
    detail = _oneline(detail)
    if status == "rejected":
        return PermanentError(f"{entry['target']}: the CDS rejected the request ({detail}). It refuses requests "
                              "that the dataset cannot answer or that are too large: check sources.era5 (dataset, "
                              "variables) and the AOIs and dates in data/inputs against what the dataset offers")
    return TransientError(f"the CDS job ended {status or 'without a result'} ({detail})")


def _oneline(detail: str) -> str:
    """A server's error text fit for one line of a message: redacted, lines joined, bounded."""
    return "; ".join(" ".join(line.split()) for line in redact(detail).splitlines() if line.strip())[:300]
