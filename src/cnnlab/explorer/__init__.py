"""The architecture explorer: `cnnlab serve`, a loopback JSON API over the registry, the
analyser and a runs folder, and the static page (plain ES modules) that shows it.

See docs/explorer.md for the API and the pages.
"""

from __future__ import annotations

import sys
import webbrowser
from pathlib import Path

from cnnlab.explorer.server import ExplorerServer, make_server

__all__ = ["ExplorerServer", "make_server", "serve"]


def serve(host: str = "127.0.0.1", port: int = 8000, runs: str | Path | None = None,
          open_browser: bool = False) -> None:
    """Serve until interrupted (Ctrl-C)."""
    try:
        server = make_server(host, port, runs=runs)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                         "try another --port") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"cnnlab serve: listening on {host}, reachable from other machines",
              file=sys.stderr)
    print(f"cnnlab explorer at {server.url} (Ctrl-C to stop)", flush=True)
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
