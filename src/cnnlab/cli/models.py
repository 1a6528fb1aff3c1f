"""`cnnlab models`: the zoo as a table, JSON or Markdown."""

from __future__ import annotations

import argparse
import dataclasses
import json

from rich.console import Console
from rich.table import Table

from cnnlab.registry import ModelInfo, list_models, model_info

COLUMNS = ("model", "family", "year", "params", "GMACs", "input", "top-1 (%)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*'")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="every ModelInfo field as JSON")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table")
    p.set_defaults(func=run)


def row(info: ModelInfo) -> tuple[str, ...]:
    """One table row; the README's model table is made of these."""
    c, h, w = info.input_size
    return (
        info.name,
        info.family,
        str(info.year),
        f"{info.params:,}",
        "" if info.macs is None else f"{info.macs / 1e9:.3f}",
        f"{c}x{h}x{w}",
        "" if info.top1 is None else f"{info.top1:.2f}",
    )


def markdown_table(pattern: str = "*") -> str:
    rows = [row(model_info(n)) for n in list_models(pattern)]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; try `cnnlab models` for the list")
    if args.json:
        infos = [dataclasses.asdict(model_info(n)) for n in names]
        print(json.dumps(infos, indent=2))
    elif args.markdown:
        print(markdown_table(args.pattern))
    else:
        table = Table(*COLUMNS, title=f"cnnlab models ({len(names)})")
        for n in names:
            table.add_row(*row(model_info(n)))
        Console().print(table)
    return 0
