"""`cnnlab weights`: the published weight sets, and downloading them into the torch hub cache."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from rich.console import Console
from rich.table import Table

from cnnlab.cli.data import non_negative

COLUMNS = ("model", "weights", "acc@1", "acc@5", "params", "GFLOPs", "MiB", "eval", "cached")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="published weight sets: list and download")
    actions = p.add_subparsers(dest="weights_command", metavar="ACTION", parser_class=type(p))
    actions.required = True

    ls = actions.add_parser("list", help="weight sets with their accuracy, size and transforms")
    ls.add_argument("model", nargs="?", default="*", help="model name or pattern ('resnet*')")
    ls.add_argument("--json", action="store_true", help="every field as JSON")
    ls.set_defaults(func=run_list)

    dl = actions.add_parser("download", help="fetch into $TORCH_HOME/hub/checkpoints, checked")
    dl.add_argument("names", nargs="+", metavar="NAME",
                    help="MODEL (its default set), MODEL.SET or torchvision's Enum.SET")
    dl.add_argument("--retries", type=non_negative, default=3, help="retries (default 3)")
    dl.set_defaults(func=run_download)


def _row(ws) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    t = ws.transforms
    return (
        ws.model,
        ws.name + (" *" if ws.default else ""),
        "features only" if ws.acc1 is None else f"{ws.acc1:.3f}",
        "" if ws.acc5 is None else f"{ws.acc5:.3f}",
        f"{ws.num_params / 1e6:.2f}M",
        f"{ws.gflops:.3f}",
        f"{ws.file_size_mb:.1f}",
        f"{t.resize}->{t.crop} {t.interpolation}",
        "yes" if ws.cached else "",
    )


def run_list(args: argparse.Namespace) -> int:
    from cnnlab.deploy.weights import cache_dir, list_weights

    sets = list_weights(args.model)
    if not sets:
        raise ValueError(f"{args.model} has no published weights; see `cnnlab weights list`")
    if args.json:
        rows = [dataclasses.asdict(ws) | {"tag": ws.tag, "path": str(ws.path),
                                          "cached": ws.cached} for ws in sets]
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(*COLUMNS, title=f"published weights ({len(sets)}; * = DEFAULT)",
                  caption=f"eval: shorter side -> central crop; cache {cache_dir()}")
    for ws in sets:
        table.add_row(*_row(ws))
    Console().print(table)
    return 0


def run_download(args: argparse.Namespace) -> int:
    from cnnlab.deploy.weights import download_weights, resolve

    chosen = [resolve(name) for name in args.names]  # every name checked before fetching
    for ws in chosen:
        path = download_weights(ws, retries=args.retries,
                                log=lambda message: print(message, file=sys.stderr))
        print(f"{ws.tag}: {path} (SHA-256 {ws.sha256_prefix}... ok)")
    return 0
