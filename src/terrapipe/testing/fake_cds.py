"""A fake Climate Data Store on 127.0.0.1 that the real cdsapi client (ecmwf-datastores) talks to.

It answers the retrieve sequence of the new CDS (reference/stack-facts.md), under ``url`` = ``.../api``:

    GET  /api/catalogue/v1/messages                    {"messages": []}, public like the real catalogue
    GET  /api/retrieve/v1/processes/{dataset}          the process description; 404 for an unknown dataset
    POST /api/retrieve/v1/processes/{dataset}/execution   201, the job "accepted" with its monitor link
    GET  /api/retrieve/v1/jobs/{id}                    "running" for the first ``running_polls`` polls, then
                                                       the outcome (successful / failed / rejected) + results link
    GET  /api/retrieve/v1/jobs/{id}/results            asset href, file:size, type; 400 for a failed/rejected job
    HEAD/GET /download/{key}.nc                        the file, from FakeHTTPServer's root (Range, path faults);
                                                       no key needed, as on the CDS's object store

The API calls need the header ``PRIVATE-TOKEN: <key>`` (401 otherwise). A successful job's file is the
sample world's answer to exactly the posted request (``sample_response`` + ``write_netcdf``), so
everything downstream runs on it. Faults: ``fail(endpoint, *statuses)`` queues HTTP errors on an API
endpoint; ``failed_jobs`` submissions end ``failed``; ``rejected`` and ``licence_required`` refuse every
request; ``server.faults.add(download_path(entry), "drop:N" | "truncate:N" | "status:N")`` breaks a download.
Every request is recorded in ``requests`` as (method, path, headers); the posted requests in ``submitted``.
"""
from __future__ import annotations

import datetime
import json
import tempfile
import threading
import uuid
from pathlib import Path

from terrapipe.sources.era5 import request_key
from terrapipe.sources.sample_era5 import GRID_DEG, sample_response, write_netcdf
from terrapipe.testing.servers import FakeHTTPServer, Faults, send_json

ENDPOINTS = ("messages", "process", "execution", "job", "results")
LICENCE_DETAIL = ("required licences not accepted; please accept the following licences to proceed: "
                  "[{'id': 'licence-to-use-copernicus-products', 'revision': 12}]")


class FakeCDS:
    """The fake CDS as a context manager: ``with FakeCDS(seed) as cds:`` then CDSAPI_URL=cds.url, CDSAPI_KEY=cds.key."""

    def __init__(self, seed: int = 0, *, key: str = "fake-cds-token-0123456789", running_polls: int = 0,
                 failed_jobs: int = 0, rejected: bool = False, licence_required: bool = False,
                 datasets=tuple(GRID_DEG)):
        self.seed, self.key = seed, key
        self.running_polls, self.failed_jobs = running_polls, failed_jobs
        self.rejected, self.licence_required = rejected, licence_required
        self.datasets = set(datasets)
        self.submitted: list[tuple[str, dict]] = []  # (dataset, request) of every accepted POST
        self.faults = Faults()  # endpoint name -> queued "status:N"
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
                ("GET", f"{api}/jobs/([^/]+)/results", "results", self._results)):
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

    @staticmethod
    def download_path(entry: dict) -> str:
        """The path the answer to ``entry`` (dataset, request) is served at, for ``server.faults``."""
        return f"/download/{request_key(entry)}.nc"

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
        send_json(handler, 201, self._job_json(job_id, "accepted"))

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
        path = self._answer(job)
        send_json(handler, 200, {"asset": {"value": {
            "type": "application/netcdf", "href": f"{self.server.url}{path}",
            "file:size": (Path(self._files.name) / path.lstrip("/")).stat().st_size}}})

    def _status(self, job: dict) -> str:
        return "running" if job["polls"] <= self.running_polls else job["outcome"]

    def _job_json(self, job_id: str, status: str) -> dict:
        job, monitor = self._jobs[job_id], f"{self.url}/retrieve/v1/jobs/{job_id}"
        links = [{"href": monitor, "rel": "self"}, {"href": monitor, "rel": "monitor", "type": "application/json"}]
        if status in ("successful", "failed", "rejected"):
            links.append({"href": f"{monitor}/results", "rel": "results"})
        return {"processID": job["dataset"], "type": "process", "jobID": job_id, "status": status,
                "created": job["created"], "updated": job["created"], "links": links,
                "metadata": {"request": {"ids": job["request"]}}}

    def _answer(self, job: dict) -> str:
        """Write (once, like the CDS cache) the sample world's NetCDF for the job's request; return its path."""
        entry = {"dataset": job["dataset"], "request": job["request"]}
        path = self.download_path(entry)
        file = Path(self._files.name) / path.lstrip("/")
        with self._lock:
            if not file.exists():
                file.parent.mkdir(exist_ok=True)
                tmp = file.with_suffix(".tmp")
                write_netcdf(sample_response({**entry, "target": file.name}, self.seed), tmp)
                tmp.replace(file)
        return path


def _not_found(handler, what: str) -> None:
    send_json(handler, 404, {"title": "not found", "status": 404, "detail": f"{what} has not been found"})
