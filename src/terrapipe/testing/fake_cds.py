"""A fake Climate Data Store on 127.0.0.1 that the real cdsapi client (ecmwf-datastores) talks to.

It answers the retrieve sequence of the new CDS (reference/stack-facts.md), under ``url`` = ``.../api``:

    GET  /api/catalogue/v1/messages                    {"messages": []}, public like the real catalogue
    GET  /api/retrieve/v1/processes/{dataset}          the process description; 404 for an unknown dataset
    POST /api/retrieve/v1/processes/{dataset}/execution   201, the job "accepted" with its monitor link
    GET  /api/retrieve/v1/jobs/{id}                    "running" for the first ``running_polls`` polls, then
                                                       the outcome (successful / failed / rejected) + results link
    GET  /api/retrieve/v1/jobs/{id}/results            asset href, file:size, type; 400 for a failed/rejected job
    POST /api/retrieve/v1/jobs/delete                  {"job_ids": [...]}: the jobs are deleted (404 from then on)
    HEAD/GET /download/{id}.nc (or .zip)               the job's file, from FakeHTTPServer's root (Range/206 and
                                                       Accept-Ranges, path faults); no key needed, as on the CDS's
                                                       object store

The API calls need the header ``PRIVATE-TOKEN: <key>`` (401 otherwise). A successful job's file is the
sample world's answer to exactly the posted request (``sample_response`` + ``write_netcdf``), so
everything downstream runs on it; ``deliver`` (DELIVERIES) sends it as the CDS sends split requests
instead: a zip with one NetCDF member per GRIB stepType, or a zip with a broken member, or one without
any NetCDF member.

Faults: ``fail(endpoint, *statuses)`` queues HTTP errors on an API endpoint, whatever the job;
``fault_each_job(poll=..., results=..., download=...)`` gives every job submitted afterwards its own
faults (e.g. 503 to its first poll, its first download cut short); ``failed_jobs`` submissions end
``failed``; ``rejected`` and ``licence_required`` refuse every request. Every request is recorded in
``requests`` as (method, path, headers); the posted requests in ``submitted``, their job ids in
``jobs`` and the ids of the jobs deleted through the API in ``deleted``.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
import threading
import uuid
import zipfile
from pathlib import Path

from terrapipe.sources.era5 import request_key
from terrapipe.sources.sample_era5 import GRID_DEG, sample_response, write_netcdf
from terrapipe.testing.servers import FakeHTTPServer, Faults, send_json

ENDPOINTS = ("messages", "process", "execution", "job", "results", "delete")
JOB_ENDPOINTS = {"poll": "job", "results": "results"}  # fault_each_job's names for the per-job API endpoints
DELIVERIES = ("netcdf", "zip", "zip-broken-member", "zip-without-netcdf")
CUT_BYTES = 4096  # where a "truncate" or "drop" download fault cuts the body (answers are tens of kB)
ACCUMULATED = {"tp"}  # variables with GRIB stepType avgad (monthly means of accumulations); the rest are avgua
LICENCE_DETAIL = ("required licences not accepted; please accept the following licences to proceed: "
                  "[{'id': 'licence-to-use-copernicus-products', 'revision': 12}]")


class FakeCDS:
    """The fake CDS as a context manager: ``with FakeCDS(seed) as cds:`` then CDSAPI_URL=cds.url, CDSAPI_KEY=cds.key."""

    def __init__(self, seed: int = 0, *, key: str = "fake-cds-token-0123456789", running_polls: int = 0,
                 failed_jobs: int = 0, rejected: bool = False, licence_required: bool = False,
                 datasets=tuple(GRID_DEG), deliver: str = "netcdf"):
        if deliver not in DELIVERIES:
            raise ValueError(f"unknown delivery {deliver!r}; one of {DELIVERIES}")
        self.seed, self.key, self.deliver = seed, key, deliver
        self.running_polls, self.failed_jobs = running_polls, failed_jobs
        self.rejected, self.licence_required = rejected, licence_required
        self.datasets = set(datasets)
        self.submitted: list[tuple[str, dict]] = []  # (dataset, request) of every accepted POST
        self.jobs: list[str] = []     # the id of every job submitted, in order
        self.deleted: list[str] = []  # the ids of the jobs deleted through the API, in order
        self.faults = Faults()  # endpoint name, or "endpoint:job id" -> queued "status:N" | "reset"
        self._each_job: dict[str, tuple[str, ...]] = {}  # fault_each_job's faults by endpoint or "download"
        self._jobs: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._files = tempfile.TemporaryDirectory(prefix="fake-cds-")
        self.server = FakeHTTPServer(self._files.name)
        api = "/api/retrieve/v1"
        for method, pattern, endpoint, handle in (
                ("GET", "/api/catalogue/v1/messages", "messages", lambda h: send_json(h, 200, {"messages": []})),
                ("GET", f"{api}/processes/([^/]+)", "process", self._process),
                ("POST", f"{api}/processes/([^/]+)/execution", "execution", self._execute),
                ("GET", f"{api}/jobs/([^/]+)", "job", self._job),
                ("GET", f"{api}/jobs/([^/]+)/results", "results", self._results),
                ("POST", f"{api}/jobs/delete", "delete", self._delete)):
            self.server.route(method, pattern)(self._endpoint(endpoint, handle))

    # -- the test's side -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.server.url}/api"

    @property
    def requests(self) -> list[tuple[str, str, dict]]:
        return self.server.requests

    def fail(self, endpoint: str, *statuses: int) -> None:
        """Answer the next calls to ``endpoint`` (one of ENDPOINTS) with these HTTP statuses, one each."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        self.faults.add(endpoint, *(f"status:{status}" for status in statuses))

    def fault_each_job(self, *, poll=(), results=(), download=()) -> None:
        """Give every job submitted from now on these faults, one per call, on its own status polls,
        results calls and downloads: an HTTP status (int) or ``"reset"`` (the connection closed without an
        answer) for the API calls; ``"truncate"`` (a short body, clean close), ``"drop"`` (the full length
        announced, then a reset), their ``:BYTES`` forms or a status for the downloads. A string alone
        stands for a list of one: ``fault_each_job(poll=[503], download="truncate")``."""
        faults = {"poll": poll, "results": results, "download": download}
        self._each_job = {name: tuple(map(_fault, [given] if isinstance(given, (str, int)) else given))
                          for name, given in faults.items()}

    def __enter__(self) -> FakeCDS:
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)
        self._files.cleanup()

    # -- the server's side ---------------------------------------------------------------------------
    def _endpoint(self, name: str, handle):
        """Check the key (except on the public catalogue) and apply queued faults before ``handle``."""
        def respond(handler, match):
            if name != "messages" and handler.headers.get("PRIVATE-TOKEN") != self.key:
                return send_json(handler, 401, {"title": "Authentication failed", "status": 401,
                                                "detail": "the API key is missing or not valid"})
            fault = self.faults.next(name, handler.command)
            if fault is None and name in JOB_ENDPOINTS.values():
                fault = self.faults.next(f"{name}:{match.group(1)}", handler.command)
            if fault == "reset":
                handler.close_connection = True
                return handler.connection.shutdown(socket.SHUT_RDWR)
            if fault:
                status = int(fault.split(":")[1])
                return send_json(handler, status, {"title": f"injected {status}", "status": status})
            return handle(handler, *match.groups())
        return respond

    def _process(self, handler, dataset: str):
        if dataset not in self.datasets:
            return _not_found(handler, f"process {dataset}")
        send_json(handler, 200, {"id": dataset, "links": [], "inputs": {}, "outputs": {}})

    def _execute(self, handler, dataset: str):
        if dataset not in self.datasets:
            return _not_found(handler, f"process {dataset}")
        if self.licence_required:
            return send_json(handler, 403, {"title": "required licences not accepted", "status": 403,
                                            "detail": LICENCE_DETAIL})
        request = json.loads(handler.request_body)["inputs"]
        with self._lock:
            outcome = "rejected" if self.rejected else "failed" if self.failed_jobs > 0 else "successful"
            if outcome == "failed":
                self.failed_jobs -= 1
            job_id = str(uuid.uuid4())
            self._jobs[job_id] = {"dataset": dataset, "request": request, "outcome": outcome, "polls": 0,
                                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
            self.submitted.append((dataset, request))
            self.jobs.append(job_id)
        self._give_faults(job_id)
        send_json(handler, 201, self._job_json(job_id, "accepted"))

    def _give_faults(self, job_id: str) -> None:
        """Queue fault_each_job's faults for this job: on its API calls, and on the path of its file."""
        for name, endpoint in JOB_ENDPOINTS.items():
            self.faults.add(f"{endpoint}:{job_id}", *self._each_job.get(name, ()))
        self.server.faults.add(self._download_path(job_id), *self._each_job.get("download", ()))

    def _job(self, handler, job_id: str):
        job = self._jobs.get(job_id)
        if job is None:
            return _not_found(handler, f"job {job_id}")
        with self._lock:
            job["polls"] += 1
        send_json(handler, 200, self._job_json(job_id, self._status(job)))

    def _results(self, handler, job_id: str):
        job = self._jobs.get(job_id)
        if job is None:
            return _not_found(handler, f"job {job_id}")
        status = self._status(job)
        if status in ("failed", "rejected"):
            reason = ("The job failed with: MARS returned no data (injected failure)" if status == "failed"
                      else "the request is too large or not valid for the dataset (injected rejection)")
            return send_json(handler, 400, {"type": "job results failed", "title": f"job {status}", "status": 400,
                                            "traceback": reason})
        if status != "successful":
            return send_json(handler, 404, {"title": "results not ready", "status": 404})
        size = self._file(job_id).stat().st_size
        kind = "application/netcdf" if self.deliver == "netcdf" else "application/zip"
        send_json(handler, 200, {"asset": {"value": {
            "type": kind, "href": f"{self.server.url}{self._download_path(job_id)}", "file:size": size}}})

    def _delete(self, handler):
        job_ids = json.loads(handler.request_body)["job_ids"]
        with self._lock:
            gone = [(job_id, self._jobs.pop(job_id)) for job_id in job_ids if job_id in self._jobs]
            self.deleted.extend(job_id for job_id, _ in gone)
        send_json(handler, 200, {"jobs": [_job_json(job_id, job, "dismissed", self.url) for job_id, job in gone]})

    def _status(self, job: dict) -> str:
        return "running" if job["polls"] <= self.running_polls else job["outcome"]

    def _job_json(self, job_id: str, status: str) -> dict:
        return _job_json(job_id, self._jobs[job_id], status, self.url)

    def _download_path(self, job_id: str) -> str:
        return f"/download/{job_id}{'.nc' if self.deliver == 'netcdf' else '.zip'}"

    def _file(self, job_id: str) -> Path:
        """The job's file: the sample world's answer to its request, written once per request and delivery
        (like the CDS cache) and linked at the job's own path."""
        job, root = self._jobs[job_id], Path(self._files.name)
        entry = {"dataset": job["dataset"], "request": job["request"]}
        file = root / self._download_path(job_id).lstrip("/")
        answer = root / "answers" / f"{request_key(entry)}-{self.deliver}{file.suffix}"
        with self._lock:
            if not answer.exists():
                answer.parent.mkdir(exist_ok=True)
                tmp = answer.with_suffix(".tmp")
                _write_answer(sample_response({**entry, "target": file.name}, self.seed), tmp, self.deliver)
                tmp.replace(answer)
            if not file.exists():
                file.parent.mkdir(exist_ok=True)
                os.link(answer, file)
        return file


def _job_json(job_id: str, job: dict, status: str, url: str) -> dict:
    monitor = f"{url}/retrieve/v1/jobs/{job_id}"
    links = [{"href": monitor, "rel": "self"}, {"href": monitor, "rel": "monitor", "type": "application/json"}]
    if status in ("successful", "failed", "rejected"):
        links.append({"href": f"{monitor}/results", "rel": "results"})
    return {"processID": job["dataset"], "type": "process", "jobID": job_id, "status": status,
            "created": job["created"], "updated": job["created"], "links": links,
            "metadata": {"request": {"ids": job["request"]}}}


def _fault(given) -> str:
    """fault_each_job's spelling of a fault -> the queued form (Faults' ``status:N``, ``truncate:N``, ...)."""
    if isinstance(given, int):
        return f"status:{given}"
    return f"{given}:{CUT_BYTES}" if given in ("truncate", "drop") else given


def _write_answer(ds, path: Path, deliver: str) -> None:
    """Write ``ds`` as the CDS delivers it (DELIVERIES): one NetCDF file, or a zip of one per stepType."""
    if deliver == "netcdf":
        write_netcdf(ds, path)
        return
    with zipfile.ZipFile(path, "w") as archive:
        if deliver == "zip-without-netcdf":
            archive.writestr("README.txt", "this request produced no NetCDF file\n")
            return
        for step in sorted({_step_type(name) for name in ds.data_vars}, reverse=True):  # avgua first, as the CDS
            data = _step_type_netcdf(ds, step)
            broken = deliver == "zip-broken-member" and step == "avgad"
            archive.writestr(f"data_stream-moda_stepType-{step}.nc", data[:len(data) // 2] if broken else data)


def _step_type_netcdf(ds, step: str) -> bytes:
    """The NetCDF file of the variables of ``ds`` with this GRIB stepType, as the CDS splits a request."""
    member = ds[[name for name in ds.data_vars if _step_type(name) == step]].copy(deep=False)
    for name in member.data_vars:
        member[name].attrs = {**member[name].attrs, "GRIB_stepType": step}
    with tempfile.TemporaryDirectory() as tmp:
        write_netcdf(member, Path(tmp) / "member.nc")
        return (Path(tmp) / "member.nc").read_bytes()


def _step_type(variable: str) -> str:
    return "avgad" if variable in ACCUMULATED else "avgua"


def _not_found(handler, what: str) -> None:
    send_json(handler, 404, {"title": "not found", "status": 404, "detail": f"{what} has not been found"})
