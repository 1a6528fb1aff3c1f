"""`cnnlab serve`: the architecture explorer, a local web page over the registry,
the analyser and a runs folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnlab.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="browse, inspect and compare the models in a web page")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    p.add_argument("--runs", metavar="DIR", help="folder of training runs to show")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.explorer import serve

    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be between 0 and 65535, got {args.port}")
    if args.runs is not None and not Path(args.runs).is_dir():
        raise CliError(f"--runs {args.runs}: no such folder (give the folder that holds the "
                       "run folders, e.g. runs)")
    serve(args.host, args.port, runs=args.runs, open_browser=args.open)
    return 0
