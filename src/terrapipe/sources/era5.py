"""ERA5 from the Copernicus Climate Data Store, through the real cdsapi client.

The requests are the sample backend's (``era5_requests``: one per AOI and year, area snapped to the
grid), so both backends write the same data/raw/era5/ layout. Credentials are whatever cdsapi itself
reads (CDSAPI_URL / CDSAPI_KEY, else ~/.cdsapirc or the file CDSAPI_RC names), never params.yaml.

Each request is answered by one CDS job: submitted, polled until it ends, its result downloaded into a
temporary file in the download cache, checked (the size the CDS announced, the ERA5 schema and units
through ``open_era5``) and only then copied into ``out_dir``, so an interrupted or failed fetch leaves
nothing partial there. Completed files stay in the cache under a hash of (dataset, request): a request
already answered is never sent again. The CDS splits some requests by GRIB stepType (single levels:
``data_stream-moda_stepType-avgua.nc`` for means of instantaneous fields, ``...-avgad.nc`` for
accumulations) and then delivers a zip of NetCDF files, even for ``download_format: unarchived``: its
members are merged into one NetCDF file of the usual layout.

Retries: cdsapi's own loop is switched off (``retry_max=1``: every HTTP call is made once) and
terrapipe's bounded backoff (sources.era5.cds.retry) is the only loop, one budget per request. A retry
goes on from where the last attempt stopped: a 5xx, reset or timeout while polling polls the same job
again, and a failed or short download fetches that job's result again, resuming with an HTTP Range
request. Only a job that itself ends ``failed`` is resubmitted. A job terrapipe abandons (ended without
a result, out of budget, a bad result) is deleted on the CDS. Permanent failures (key refused, licence
not accepted, job rejected, unknown dataset) stop at once.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from terrapipe.atomic import atomic_path, write_json
from terrapipe.data.era5 import open_era5, selected
from terrapipe.errors import InputDataError, TerrapipeError
from terrapipe.sources import transfer
from terrapipe.sources.sample_era5 import era5_requests, write_netcdf
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
ZIP_MAGIC = b"PK\x03\x04"
ZIP_FIX = "The CDS delivered a damaged archive: re-run `dvc repro fetch_era5` to fetch it again (nothing was cached)"


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
    client = None
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
            client = client or _client(era5.cds.poll_max_s)
            job_id = _retrieve(client, entry, cached, variables, policy)
            source, how = cached, f"from the CDS (job {job_id})"
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
_CLIENT_LEVELS = {"debug": logging.DEBUG, "info": logging.DEBUG, "warning": logging.WARNING, "error": logging.ERROR}


def _client_log(level: int, message, *args, **_) -> None:
    """cdsapi's log callback: every message goes to our logger, redacted (cdsapi logs its own settings, key
    included, at debug level), and at debug level except warnings and errors, keeping one INFO line per request."""
    log.log(level, "cdsapi: %s", redact(str(message) % args if args else str(message)))


def _client(poll_max_s: float):
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
    callbacks = {f"{name}_callback": functools.partial(_client_log, level) for name, level in _CLIENT_LEVELS.items()}
    return cdsapi.Client(progress=False, retry_max=1, sleep_max=poll_max_s, **callbacks)


def _retrieve(client, entry: dict, dest: Path, variables, policy: RetryPolicy) -> str:
    """Answer ``entry`` into ``dest`` through one CDS job (temporary files beside ``dest``); return the job id.

    Every attempt goes on from where the last one stopped: the same job, the same partial download.
    """
    job = _Job(client, entry)
    part, merged = dest.with_suffix(".part"), dest.with_suffix(".merged")

    def attempt() -> None:
        results = job.results()
        _download(client.session, results, part, job.id)
        netcdf = _as_netcdf(part, merged, f"{entry['target']} (CDS job {job.id})")
        _check(netcdf, entry["target"], variables)
        netcdf.replace(dest)

    try:
        with_retries(attempt, f"CDS request {entry['target']}", policy)
    except Exception:  # not on an interrupt (KeyboardInterrupt): that stops at once, without another HTTP call
        job.abandon("terrapipe gave up on it")
        raise
    finally:
        part.unlink(missing_ok=True)
        merged.unlink(missing_ok=True)
    return job.id


class _Job:
    """The CDS job answering one request, kept across attempts so that a retry polls it again instead of
    submitting the request anew (else a CDS answering 503 to the first poll of each job never succeeds).
    Only a job that is over without a result is replaced, and every job given up is deleted on the CDS."""

    OVER = ("failed", "rejected", "dismissed", "deleted")  # statuses of a job that will never have a result

    def __init__(self, client, entry: dict):
        self.client, self.entry = client, entry
        self.remote = None  # the ecmwf.datastores.Remote of the live job

    @property
    def id(self) -> str | None:
        return self.remote.request_id if self.remote else None

    def results(self):
        """The finished job's results (href and size), submitting the request first when no job is live."""
        import requests
        from ecmwf.datastores.processing import ProcessingFailedError

        try:
            self.remote = self.remote or self.client.client.submit(self.entry["dataset"], self.entry["request"])
            return self.remote.get_results()  # polls until the job ends (the client's own waits)
        except (requests.HTTPError, ProcessingFailedError) as exc:
            status = self.remote.last_status if self.remote else None
            error = (_http_error(exc, self.entry, status) if isinstance(exc, requests.HTTPError)
                     else _job_error(self.entry, status, str(exc)))
            if status in self.OVER:
                self.abandon(f"it ended {status}")
            raise error from None

    def abandon(self, why: str) -> None:
        """Delete the job on the CDS, which would keep it listed with the account, and forget it.
        A delete that fails is only logged: it must not hide why the job was given up."""
        if self.remote is None:
            return
        job_id, target, self.remote = self.remote.request_id, self.entry["target"], None
        try:
            self.client.client.delete(job_id)
        except Exception as exc:  # noqa: BLE001 - any failure of the clean-up is reported the same way
            log.warning("%s: could not delete CDS job %s (%s): %s", target, job_id, why, redact(str(exc)))
        else:
            log.info("%s: deleted CDS job %s (%s)", target, job_id, why)


def _download(session, results, part: Path, job_id: str) -> None:
    """Fetch the finished job's result into ``part``, resuming from the bytes an earlier attempt left there."""
    import requests

    announced = results.content_length
    try:
        transfer.download_once(session, results.location, part)
    except requests.exceptions.ChunkedEncodingError:
        pass  # the connection broke mid-body: the size check below says so, and the next attempt resumes
    size = part.stat().st_size if part.exists() else 0
    if size > announced:
        part.unlink()
        raise TransientError(f"got {size} bytes of the result of CDS job {job_id}, more than the {announced} "
                             "the CDS announced")
    if size < announced:
        raise TransientError(f"download truncated: got {size} of {announced} bytes of the result of CDS job {job_id}")


def _check(path: Path, target: str, variables) -> None:
    """A delivered file that fails the ERA5 check will not pass on a retry: the layout probably changed."""
    try:
        open_era5(path, variables)
    except InputDataError as exc:
        raise PermanentError(f"{target}: the CDS answered with a file that fails the ERA5 check ({exc.problem}). "
                             "Its NetCDF layout may have changed: see terrapipe.data.era5.normalize_schema") from None


# -- zip deliveries --------------------------------------------------------------------------------
def _as_netcdf(part: Path, merged: Path, where: str) -> Path:
    """The NetCDF file a download stands for: itself, or (a zip, told by its magic bytes) ``merged``,
    written from the zip's NetCDF members."""
    with open(part, "rb") as head:
        if head.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return part
    write_netcdf(_merged_members(part, where), merged)
    return merged


def _merged_members(archive_path: Path, where: str):
    """One dataset from the NetCDF members of a zip (one member per GRIB stepType, each with its variables)."""
    import xarray as xr

    try:
        with zipfile.ZipFile(archive_path) as archive, tempfile.TemporaryDirectory(dir=archive_path.parent) as tmp:
            names = [name for name in archive.namelist() if name.lower().endswith(".nc")]
            if not names:
                raise InputDataError(where, "the CDS delivered a zip without a NetCDF member (it holds: "
                                     f"{', '.join(archive.namelist()) or 'nothing'})", ZIP_FIX)
            members = [_read_member(archive, name, Path(tmp), where) for name in names]
    except zipfile.BadZipFile as exc:
        raise InputDataError(where, f"the CDS delivered a broken zip ({exc})", ZIP_FIX) from None
    try:
        return xr.merge(members, compat="no_conflicts", join="exact", combine_attrs="drop_conflicts")
    except ValueError as exc:  # members on different grids or times, or disagreeing on a variable
        raise InputDataError(where, f"the NetCDF members of the zip do not fit together ({exc})", ZIP_FIX) from None


def _read_member(archive: zipfile.ZipFile, name: str, tmp: Path, where: str):
    import xarray as xr

    try:
        with xr.open_dataset(archive.extract(name, tmp), engine="netcdf4", cache=False) as ds:
            return ds.load()
    except (OSError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # netCDF/HDF5 and CRC errors
        raise InputDataError(where, f"zip member {name} is not a readable NetCDF file ({exc})", ZIP_FIX) from None


# -- errors ----------------------------------------------------------------------------------------
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
