"""A real HTTP server on 127.0.0.1 for download tests (started in a thread, per test), and
published weights pointed at it."""

import dataclasses
import hashlib
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

import cnnlab
from cnnlab.deploy import weights as W

from seeded_weights import deterministic_state_dict


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; for a path in ``server.drop``
    it announces the full length, sends half, and closes the connection (once)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        name = self.path.lstrip("/")
        server.requests.append((name, self.headers.get("Range")))
        data = server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if (rng := self.headers.get("Range")) and not server.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in server.drop:
            server.drop.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def serving() -> Iterator[ThreadingHTTPServer]:
    """A server for ``httpd.files`` (name -> bytes) at ``httpd.url``; ``httpd.requests`` lists
    (name, Range header) of every request; names in ``httpd.drop`` are cut off once."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.drop, httpd.requests, httpd.ignore_range = {}, set(), [], False
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def checkpoint_bytes(name, **build):
    """A seeded state_dict of ``name`` as torchvision would publish it, saved by torch.save."""
    state = deterministic_state_dict(cnnlab.create_model(name, **build).state_dict())
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue(), state


def publish(monkeypatch, server, model, data, *, sha256=None, served=None):
    """Point ``model``'s default weight set at ``server``, serving ``served`` (default
    ``data``) under a torchvision-style file name; the table holds ``data``'s SHA-256."""
    ws = W.get_weights(model)
    digest = hashlib.sha256(data).hexdigest()
    filename = f"{model}-{digest[:8]}.pth"
    server.files[filename] = data if served is None else served
    new = dataclasses.replace(ws, url=f"{server.url}/{filename}",
                              sha256_prefix=sha256 or digest[:8])
    monkeypatch.setitem(W._TABLE[model], ws.name, new)
    return new
