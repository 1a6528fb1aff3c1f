"""The explorer's HTTP server: the standard library's ``http.server`` with a bounded pool.

Why the standard library: the explorer is a single-user page on loopback, so it needs no
new dependency; but ``ThreadingHTTPServer`` starts one thread per connection without a
limit, so here a fixed pool of workers handles connections, a bounded number may wait
(beyond that the answer is an immediate 503), and a slow client times out. Analyses run
at most ``ANALYSIS_SLOTS`` at a time and are cached by (model, input size), with one
computation per key however many requests ask for it at once.

Routes (GET only; any other method is a 405): ``/`` and ``/static/...`` (the page),
``/api/models``, ``/api/models/NAME?input=CxHxW``, ``/api/runs``, ``/api/runs/ID``,
``/api/lectures``. Every error is JSON ``{"error": message}``, never a traceback.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cnnlab.explorer import api
from cnnlab.explorer.runs import RunNotFound, RunsFolder
from cnnlab.registry import model_info

__all__ = ["ExplorerServer", "make_server"]

WORKERS = 8  # connections handled at once
BACKLOG = 256  # connections accepted and waiting for a worker; more get a 503
ANALYSIS_SLOTS = 2  # analyses computed at once (they are CPU-bound)
CACHE_ENTRIES = 64  # (model, input size) results kept
CLIENT_TIMEOUT_S = 30

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
          ".txt": "text/plain; charset=utf-8", ".json": "application/json"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the packaged page, read once: the server never opens a path a request
    names, it looks the name up in this table."""
    files: dict[str, tuple[bytes, str]] = {}

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            elif Path(child.name).suffix in _TYPES:
                files[rel] = (child.read_bytes(), _TYPES[Path(child.name).suffix])

    walk(resources.files("cnnlab.explorer") / "static", "")
    return files


class _Cache:
    """LRU of encoded answers with single-flight computation per key."""

    def __init__(self, entries: int, slots: int) -> None:
        self.entries = entries
        self.lock = threading.Lock()
        self.done: OrderedDict[Any, bytes] = OrderedDict()
        self.running: dict[Any, Future[bytes]] = {}
        self.slots = threading.BoundedSemaphore(slots)

    def get(self, key: Any, compute: Callable[[], bytes]) -> bytes:
        with self.lock:
            if key in self.done:
                self.done.move_to_end(key)
                return self.done[key]
            future = self.running.get(key)
            owner = future is None
            if owner:
                future = self.running[key] = Future()
        assert future is not None
        if not owner:
            return future.result()  # re-raises the owner's ApiError
        try:
            with self.slots:
                value = compute()
        except BaseException as exc:
            future.set_exception(exc)
            with self.lock:
                del self.running[key]
            raise
        future.set_result(value)
        with self.lock:
            del self.running[key]
            self.done[key] = value
            while len(self.done) > self.entries:
                self.done.popitem(last=False)
        return value


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


class ExplorerServer(HTTPServer):
    """An HTTPServer whose connections are served by a fixed pool of worker threads."""

    daemon_threads = True
    request_queue_size = BACKLOG  # the listen() backlog, for bursts of connections

    def __init__(self, address: tuple[str, int], runs: str | Path | None = None,
                 workers: int = WORKERS, backlog: int = BACKLOG, quiet: bool = False) -> None:
        super().__init__(address, _Handler)
        self.quiet = quiet  # no access log
        self.runs = RunsFolder(runs)
        self.static = _static_files()
        self.cache = _Cache(CACHE_ENTRIES, ANALYSIS_SLOTS)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="explorer")
        self.waiting = threading.BoundedSemaphore(workers + backlog)
        # MACs at each model's own input, as analysed here (for models the zoo's cache of
        # computed MACs lacks, e.g. ones a user registered)
        self.measured: dict[str, int] = {}

    def _detail(self, name: str, size: tuple[int, int, int]) -> bytes:
        summary = api.analyse(name, size)
        if size == model_info(name).input_size:
            self.measured[name] = summary.total_macs
        return _json(api.detail_payload(name, size, summary))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.waiting.acquire(blocking=False):
            try:
                request.sendall(_busy_response())
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.pool.submit(self._work, request, client_address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a broken connection must not kill the worker
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.waiting.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        print(f"cnnlab serve: {client_address[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- the API ---------------------------------------------------------------------
    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[bytes, str]:
        """(body, content type) for a GET, or ApiError."""
        if path in ("/", "/index.html"):
            return self.static["index.html"]
        if path.startswith("/static/"):
            found = self.static.get(path.removeprefix("/static/"))
            if found is None:
                raise api.ApiError(404, f"no file {path!r} in the explorer's page")
            return found
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] != "api":
            raise api.ApiError(404, f"no page {path!r}: the explorer is at /, its API at /api/")
        route = parts[1:]
        kind = "application/json"
        if route == ["models"]:
            return _json({"models": api.models_table(self.measured)}), kind
        if len(route) == 2 and route[0] == "models":
            name, size = api.check_model_request(route[1], _one(query, "input"))
            return self.cache.get(("model", name, size), lambda: self._detail(name, size)), kind
        if route == ["runs"]:
            return _json({"root": self.runs.root is not None,
                          "runs": self.runs.listing()}), kind
        if len(route) == 2 and route[0] == "runs":
            try:
                return _json(self.runs.get(route[1])), kind
            except RunNotFound as exc:
                raise api.ApiError(404, str(exc)) from None
        if route == ["lectures"]:
            return self.cache.get(("lectures",),
                                  lambda: _json({"sections": api.lecture_sections()})), kind
        raise api.ApiError(404, f"no API route {path!r}: see /api/models, /api/runs, "
                                "/api/lectures")


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


def _busy_response() -> bytes:
    body = _json({"error": "the explorer is busy: too many requests waiting; try again"})
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nRetry-After: 1\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class _Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    server_version = "cnnlab-explorer"
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive holds a worker
    timeout = CLIENT_TIMEOUT_S

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        try:
            body, kind = self.server.answer(url.path, parse_qs(url.query))
            status = 200
        except api.ApiError as exc:
            body, kind, status = _json({"error": exc.message}), "application/json", exc.status
        except Exception as exc:  # noqa: BLE001 - the client gets a message, never a traceback
            self.log_error("internal error on %s: %s: %s", url.path, type(exc).__name__, exc)
            body, kind = _json({"error": f"internal error: {type(exc).__name__}"}), \
                "application/json"
            status = 500
        self._send(status, body, kind)

    def _refuse(self) -> None:
        self._send(405, _json({"error": f"{self.command} is not allowed: the explorer is "
                                        "read-only (GET only)"}), "application/json",
                   extra={"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse  # noqa: N815

    def _send(self, status: int, body: bytes, kind: str,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # http.server's own errors (bad request line, unsupported method) as JSON too
        self.close_connection = True
        self._send(code, _json({"error": message or HTTPStatus(code).phrase}),
                   "application/json")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.quiet:
            return
        super().log_message(format, *args)


def make_server(host: str = "127.0.0.1", port: int = 8000, runs: str | Path | None = None,
                quiet: bool = False) -> ExplorerServer:
    """A bound, not yet serving, explorer server (port 0: any free port)."""
    return ExplorerServer((host, port), runs=runs, quiet=quiet)
