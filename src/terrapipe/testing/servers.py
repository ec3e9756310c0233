"""Local fake servers that speak real protocols, for tests and benchmarks (127.0.0.1 only).

``FakeHTTPServer`` serves files over HTTP/1.1 with HEAD, Range requests (206 / 416) and injectable
faults, so the real clients (requests, GDAL's /vsicurl/, cdsapi, huggingface_hub) exercise their real
code paths: 5xx bursts, dropped connections mid-body and truncated bodies. Backend-specific fakes
(CDS, STAC, HF hub) add routes on top of it.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 1 << 20


class Faults:
    """Per-path queues of faults, consumed one per request: ``"status:503"``, ``"drop:BYTES"`` (announce
    the full body, send BYTES bytes, then reset the connection), ``"truncate:BYTES"`` (send no length,
    BYTES bytes, then close cleanly: a short body only a known size or checksum can reveal)."""

    def __init__(self):
        self._queues: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def add(self, path: str, *faults: str) -> None:
        with self._lock:
            self._queues[path].extend(faults)

    def next(self, path: str, method: str) -> str | None:
        """The next fault for this request; body faults wait for a GET (a HEAD has no body to cut)."""
        with self._lock:
            queue = self._queues.get(path)
            if not queue or (method != "GET" and not queue[0].startswith("status:")):
                return None
            return queue.popleft()


class FakeHTTPServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 serving ``root`` plus registered JSON/handler routes."""

    def __init__(self, root: str | os.PathLike | None = None, *, token: str | None = None,
                 token_header: str = "Authorization", publish_md5: bool = False):
        self.root = Path(root) if root else None
        self.publish_md5 = publish_md5  # send GCS's ``x-goog-hash: md5=...`` with files
        self.faults = Faults()
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers) for assertions
        self.routes: dict[tuple[str, str], callable] = {}  # (method, regex) -> fn(handler, match) -> bool
        self.token, self.token_header = token, token_header
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each small response waits ~40 ms for a delayed ACK

            def log_message(self, *args):  # quiet: tests read server.requests instead
                pass

            def do_HEAD(self):
                server._handle(self, "HEAD")

            def do_GET(self):
                server._handle(self, "GET")

            def do_POST(self):
                server._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    def route(self, method: str, pattern: str):
        """Register ``fn(handler, match)`` for requests whose path matches ``pattern`` (decorator)."""
        def register(fn):
            self.routes[(method, pattern)] = fn
            return fn
        return register

    # -- request handling --------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?", 1)[0]
        self.requests.append((method, handler.path, dict(handler.headers)))
        body = b""
        if method == "POST":
            body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        handler.request_body = body
        if self.token and handler.headers.get(self.token_header, "") not in (self.token, f"Bearer {self.token}"):
            return send_json(handler, 401, {"title": "Authentication failed", "detail": "invalid token"})
        fault = self.faults.next(path, method)
        if fault and fault.startswith("status:"):
            status = int(fault.split(":")[1])
            return send_json(handler, status, {"title": f"injected {status}"})
        for (route_method, pattern), fn in self.routes.items():
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                return fn(handler, match)
        if self.root is not None and method in ("GET", "HEAD"):
            target = (self.root / path.lstrip("/")).resolve()
            if target.is_file() and self.root.resolve() in target.parents:
                return send_file(handler, target, method, fault, _md5_header(target) if self.publish_md5 else None)
        send_json(handler, 404, {"title": "not found", "path": path})


def _md5_header(path: Path) -> dict:
    stat = path.stat()
    return {"x-goog-hash": "md5=" + _md5_b64(path, stat.st_size, stat.st_mtime_ns)}


@functools.lru_cache(maxsize=64)
def _md5_b64(path: Path, size: int, mtime_ns: int) -> str:
    """Computed once per file version, as a bucket stores it with the object."""
    digest = hashlib.md5()
    with open(path, "rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def send_json(handler, status: int, payload, headers: dict | None = None) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


def send_file(handler, path: Path, method: str, fault: str | None = None, headers: dict | None = None) -> None:
    """Serve a file with Range support; apply a drop/truncate fault to the body if asked."""
    size = path.stat().st_size
    start, end, status = 0, size - 1, 200
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", handler.headers.get("Range", ""))
    if match:
        first, last = match.groups()
        start = int(first) if first else max(0, size - int(last))
        end = min(int(last), size - 1) if first and last else size - 1
        if start >= size:
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{size}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        status = 206
    length = end - start + 1
    send = length
    truncate = bool(fault and fault.startswith("truncate:"))
    if fault and (truncate or fault.startswith("drop:")):
        send = min(length, int(fault.split(":")[1]))
    handler.send_response(status)
    if not truncate:
        handler.send_header("Content-Length", str(length))
    handler.send_header("Accept-Ranges", "bytes")
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("ETag", f'"{size:x}-{int(path.stat().st_mtime):x}"')
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    if method == "HEAD":
        return
    with open(path, "rb") as source:
        source.seek(start)
        remaining = send
        while remaining > 0:
            block = source.read(min(CHUNK, remaining))
            if not block:
                break
            handler.wfile.write(block)
            remaining -= len(block)
    if send < length:  # dropped or truncated: close without finishing the body
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(2)
