"""`cnnlab models`: the zoo as a table, plain columns, JSON or Markdown.

In a terminal the table drops its least needed columns until it fits, so no name or number is
ever cut; piped, it prints plain aligned columns (one model per line, for grep and awk).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
import sys

from rich.console import Console
from rich.table import Table

from cnnlab.analysis.zoo import SORT_KEYS, ZooRow, computed_macs, zoo_rows
from cnnlab.registry import _DATASETS, model_info

COLUMNS = ("model", "family", "year", "params", "GMACs", "input", "dataset", "top-1 (%)")
NUMERIC = {"year", "params", "GMACs", "top-1 (%)"}
# Dropped in this order when a terminal is too narrow; model and params always stay.
DROP_ORDER = ("family", "year", "input", "GMACs", "dataset", "top-1 (%)")
COMPUTED_NOTE = "* computed by cnnlab's analyser at the model's input (no declared figure)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*",
                   help="shell-style pattern, any case, e.g. 'resnet*'")
    p.add_argument("--sort", choices=SORT_KEYS, default="name",
                   help="order: name (natural), params, macs, year ascending; top1 best first")
    p.add_argument("--family", default=None, help="only this family, e.g. resnet")
    p.add_argument("--dataset", choices=_DATASETS, default=None,
                   help="only models whose published figures are on this dataset")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="every ModelInfo field as JSON")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table")
    p.set_defaults(func=run)


def row(r: ZooRow) -> tuple[str, ...]:
    """One row's cells in COLUMNS order; the README's model table is made of these."""
    c, h, w = r.input_size
    return (
        r.name,
        r.family,
        str(r.year),
        f"{r.params:,}",
        f"{r.macs / 1e9:.3f}" + ("*" if r.macs_computed else ""),
        f"{c}x{h}x{w}",
        r.dataset,
        "" if r.top1 is None else f"{r.top1:.2f}",
    )


def markdown(rows: list[ZooRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in rows]
    return "\n".join(lines)


def markdown_table(pattern: str = "*") -> str:
    """The README's model table."""
    return markdown(zoo_rows(pattern))


def plain_table(rows: list[ZooRow]) -> str:
    """Aligned columns separated by two spaces, nothing cut, one model per line."""
    cells = [COLUMNS, *(row(r) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.rjust(width) if name in NUMERIC else cell.ljust(width)
                  for name, cell, width in zip(COLUMNS, line, widths, strict=True)).rstrip()
        for line in cells
    ]
    if any(r.macs_computed for r in rows):
        lines.append(COMPUTED_NOTE)
    return "\n".join(lines) + "\n"


def fitted_table(rows: list[ZooRow], width: int) -> Table | None:
    """The rich table with as many columns as fit ``width`` (None if not even model and params
    fit). Every cell keeps its full text."""
    console = Console(width=10_000, file=io.StringIO())  # measures the natural width
    dropped: list[str] = []
    for drop in (None, *DROP_ORDER):
        if drop is not None:
            dropped.append(drop)
        keep = [i for i, name in enumerate(COLUMNS) if name not in dropped]
        table = Table(title=f"cnnlab models ({len(rows)})", caption_justify="left")
        for i in keep:
            table.add_column(COLUMNS[i], no_wrap=True,
                             justify="right" if COLUMNS[i] in NUMERIC else "left")
        for r in rows:
            cells = row(r)
            table.add_row(*(cells[i] for i in keep))
        if console.measure(table).maximum <= width:
            notes = [COMPUTED_NOTE] if any(r.macs_computed for r in rows) else []
            if dropped:
                notes.append(f"left out to fit {width} columns: {', '.join(dropped)} "
                             f"(all of them when piped, or with --json)")
            table.caption = "\n".join(notes) or None
            return table
    return None


def terminal_table(rows: list[ZooRow], width: int) -> str:
    """What a terminal of ``width`` columns shows, as plain text."""
    table = fitted_table(rows, width)
    if table is None:
        return plain_table(rows)
    buf = io.StringIO()
    Console(file=buf, width=width).print(table)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    rows = zoo_rows(args.pattern, family=args.family, dataset=args.dataset, sort=args.sort)
    if not rows:
        raise ValueError(f"no model matches {args.pattern!r}"
                         + (f" in family {args.family!r}" if args.family else "")
                         + (f" on {args.dataset}" if args.dataset else "")
                         + "; try `cnnlab models` for the list")
    if args.json:
        infos = [dataclasses.asdict(model_info(r.name)) | {"computed_macs": computed_macs(r.name)}
                 for r in rows]
        print(json.dumps(infos, indent=2))
    elif args.markdown:
        print(markdown(rows))
    elif sys.stdout.isatty():
        table = fitted_table(rows, shutil.get_terminal_size().columns)
        if table is None:
            print(plain_table(rows), end="")
        else:
            Console().print(table)
    else:
        print(plain_table(rows), end="")
    return 0
