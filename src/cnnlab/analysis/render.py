"""Render a :class:`~cnnlab.analysis.summary.Summary` as a rich table, JSON, CSV or Markdown.

The analyser returns data; this module only formats it.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from cnnlab.analysis.receptive_field import ReceptiveField
from cnnlab.analysis.summary import Row, Summary, tree_rows

__all__ = ["COLUMNS", "COMPACT", "EXTRA", "fitted_table", "fitted_text", "rich_table", "to_csv",
           "to_dict", "to_json", "to_markdown"]

COLUMNS = (
    "layer", "type", "output shape", "params", "frozen", "MACs", "other ops",
    "act. values", "act. bytes", "RF size", "RF jump", "RF start",
)
# The columns that fit an 80-column terminal (the demo's table), with shorter headers.
COMPACT = {"layer": "layer", "type": "type", "output shape": "output", "params": "params",
           "MACs": "MACs", "act. values": "values", "RF size": "RF"}
# Optional columns (``extra``): the input shape, and the kernel and stride of conv/pool layers.
EXTRA = {"input shape": "input", "kernel": "kernel", "stride": "stride"}
# Compact columns dropped in this order when a terminal is too narrow (EXTRA ones, asked
# for, stay).
DROP_ORDER = ("act. values", "type", "RF size")


def _num(v: Any) -> str:
    if isinstance(v, tuple):
        return "x".join(_num(x) for x in v)
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}"
    return str(int(v))


# What the "(global)" mark means, and which field is the conventional one.
GLOBAL_NOTE = ("(global): every unit sees the whole input; with SE gates through their global "
               "average pool, in a transformer from its first global attention on. local: the "
               "conventional field of the conv/pool chain alone, without the SE gates' global "
               "context (a transformer token's: its own patch).")


def _rf_cells(rf: ReceptiveField | None, compact: bool = False) -> tuple[str, str, str]:
    if rf is None:
        return "", "", ""
    size = _num(rf.size) + (" (global)" if rf.covers_input and not compact else "")
    return size, _num(rf.jump), _num(rf.start)


def _shape(dims: tuple[int, ...] | None, compact: bool) -> str:
    if dims is not None and compact:
        dims = dims[1:]
    return "" if dims is None else "x".join(map(str, dims))


def _cells(row: Row, compact: bool = False) -> dict[str, str]:
    """One row's cells by column name (COLUMNS and EXTRA); ``compact`` shows shapes per image
    (no batch). A module row of the tree view shows no counts: its children carry them."""
    flagged = any("unknown" in n or "no op-count" in n for n in row.notes)
    counts = {
        "params": f"{row.params_trainable:,}", "frozen": f"{row.params_frozen:,}",
        "MACs": f"{row.macs:,}", "other ops": f"{row.other_ops:,}",
        "act. values": f"{row.activation_values:,}", "act. bytes": f"{row.activation_bytes:,}",
    }
    if row.kind == "module":
        counts = dict.fromkeys(counts, "")
    size, jump, start = _rf_cells(row.receptive_field, compact)
    return {
        "layer": row.name + (" *" if flagged else ""), "type": row.type,
        "input shape": _shape(row.input_shape, compact),
        "kernel": "" if row.kernel_size is None else _num(row.kernel_size),
        "stride": "" if row.stride is None else _num(_same(row.stride)),
        "output shape": _shape(row.output_shape, compact), **counts,
        "RF size": size, "RF jump": jump, "RF start": start,
    }


def _same(v: tuple[int, ...]) -> tuple[int, ...] | int:
    """A stride (s, s) reads as s; (2, 1) stays 2x1."""
    return v[0] if len(set(v)) == 1 else v


def _totals(summary: Summary) -> dict[str, Any]:
    rf = summary.receptive_field
    return {
        "params": summary.total_params,
        "trainable_params": summary.trainable_params,
        "macs": summary.total_macs,
        "flops": summary.total_flops,
        "other_ops": summary.total_other_ops,
        "activation_values": summary.activation_values,
        "activation_bytes": summary.activation_bytes,
        "param_bytes": summary.param_bytes,
        "training_bytes_sgd": summary.training_bytes(optimizer="sgd"),
        "training_bytes_adam": summary.training_bytes(optimizer="adam"),
        "receptive_field": None if rf is None else {
            "size": rf.size, "local_size": rf.local_size, "jump": rf.jump, "start": rf.start,
            "covers_input": rf.covers_input,
        },
    }


def _footer(summary: Summary) -> list[str]:
    t = _totals(summary)
    rf = summary.receptive_field
    lines = [
        f"params {t['params']:,} (trainable {t['trainable_params']:,}); MACs {t['macs']:,} "
        f"({t['macs'] / 1e9:.3f} G), FLOPs {t['flops']:,}; other ops {t['other_ops']:,}",
        f"forward activations {t['activation_values']:,} values = "
        f"{t['activation_bytes'] / 2**20:.2f} MiB per image; params {t['param_bytes'] / 2**20:.2f} "
        f"MiB; training estimate at batch {summary.batch_size}: "
        f"{t['training_bytes_sgd'] / 2**20:.2f} MiB (SGD+momentum), "
        f"{t['training_bytes_adam'] / 2**20:.2f} MiB (Adam)",
        "receptive field of forward_features: " + (
            "unknown" if rf is None else
            f"{_num(rf.size)} px, jump {_num(rf.jump)}, start {_num(rf.start)}"
            + (" (global)" if rf.covers_input else "")
            + (f"; local {_num(rf.local_size)} px" if rf.local_size != rf.size else "")
            + (f" [{GLOBAL_NOTE}]" if rf.covers_input else "")),
        f"conventions: {summary.conventions}",
    ]
    lines += [f"UNACCOUNTED: {u}" for u in summary.unaccounted]
    return lines


def _tree_label(rows: list[tuple[int, Row]], i: int) -> str:
    """The last part of a row's path, behind tree guides: ├─ for a sibling follows, └─ else."""
    level, row = rows[i]
    if level == 0:
        return row.name
    last = row.name.split(" ")[0].split(".")[-1] + row.name[len(row.name.split(" ")[0]):]
    guides = ""
    for depth in range(1, level + 1):  # does a later row continue the branch at this depth?
        later = next((lv for lv, _ in rows[i + 1:] if lv <= depth), 0)
        if depth == level:
            guides += "├─ " if later == depth else "└─ "
        else:
            guides += "│  " if later == depth else "   "
    return guides + last


def rich_table(
    summary: Summary,
    compact: bool = False,
    *,
    extra: tuple[str, ...] = (),
    tree: bool = False,
    drop: tuple[str, ...] = (),
    slim: bool = False,
    fold: bool = False,
) -> Table:
    """All columns and the conventions, or with ``compact`` only COMPACT (shapes per image)
    and the totals. ``extra`` adds EXTRA columns, ``tree`` shows the modules as a tree (to
    ``summary.depth``), ``drop`` leaves columns out; ``slim`` leaves out the outer frame,
    ``fold`` lets a long layer name wrap inside its cell rather than widen the table."""
    c, h, w = summary.input_size
    names = [n for n in (COMPACT if compact else COLUMNS) if n not in drop]
    for col in ("kernel", "stride"):
        if col in extra and col not in drop:
            names.insert(names.index("output shape"), col)
    if "input shape" in extra and "input shape" not in drop:
        names.insert(names.index("output shape"), "input shape")
    header = {**COMPACT, **EXTRA} if compact else {}
    footer = _footer(summary)
    table = Table(
        title=f"{summary.model} @ {c}x{h}x{w}, batch {summary.batch_size}, {summary.dtype}",
        caption="\n".join(footer[:3] if compact else footer),
        caption_justify="left",
        show_edge=not slim,
        pad_edge=not slim,
    )
    first_number = next(i for i, n in enumerate(names) if n == "params")
    for i, name in enumerate(names):
        # narrow terminals squeeze headers, never a cell (but a folded name wraps whole)
        table.add_column(header.get(name, name), justify="right" if i >= first_number else "left",
                         no_wrap=not (fold and name == "layer"),
                         overflow="fold" if name == "layer" else "ellipsis")
    rows = tree_rows(summary) if tree else [(0, r) for r in summary.rows]
    for i, (_, row) in enumerate(rows):
        cells = _cells(row, compact)
        if tree:
            cells["layer"] = _tree_label(rows, i)
        table.add_row(*(cells[n] for n in names))
    return table


def natural_width(table: Table) -> int:
    """The width a table takes with room to spare."""
    return Console(width=100_000, file=io.StringIO()).measure(table).maximum


def fitted_table(
    summary: Summary,
    width: int | None,
    *,
    wide: bool = False,
    extra: tuple[str, ...] = (),
    tree: bool = False,
) -> Table:
    """The table for a terminal ``width`` columns wide (None: no limit). Compact, it leaves
    out columns in DROP_ORDER until it fits, then its outer frame, then wraps long layer names
    inside their cells; no cell is ever cut. ``wide`` keeps every column (a terminal wraps
    the long lines)."""
    if wide or width is None:
        return rich_table(summary, compact=not wide, extra=extra, tree=tree)
    dropped: tuple[str, ...] = ()
    for name in (None, *DROP_ORDER):
        dropped += (name,) if name else ()
        table = rich_table(summary, compact=True, extra=extra, tree=tree, drop=dropped)
        if natural_width(table) <= width:
            break
    else:
        table = rich_table(summary, compact=True, extra=extra, tree=tree, drop=dropped,
                           slim=True)
        if natural_width(table) > width:
            table = rich_table(summary, compact=True, extra=extra, tree=tree, drop=dropped,
                               slim=True, fold=True)
    if dropped:
        left_out = ", ".join(COMPACT[name] for name in dropped)
        table.caption = f"{table.caption}\nleft out to fit {width} columns: {left_out} (--wide)"
    return table


def fitted_text(summary: Summary, width: int | None = None, **options: Any) -> str:
    """``fitted_table`` as plain text (``print(summary)`` shows this)."""
    table = fitted_table(summary, width, **options)
    buf = io.StringIO()
    Console(file=buf, width=width or natural_width(table)).print(table)
    return buf.getvalue()


def to_dict(summary: Summary) -> dict[str, Any]:
    def row_dict(row: Row) -> dict[str, Any]:
        rf = row.receptive_field
        return {
            "name": row.name, "type": row.type, "kind": row.kind,
            "input_shape": None if row.input_shape is None else list(row.input_shape),
            "kernel_size": None if row.kernel_size is None else list(row.kernel_size),
            "stride": None if row.stride is None else list(row.stride),
            "output_shape": None if row.output_shape is None else list(row.output_shape),
            "params_trainable": row.params_trainable, "params_frozen": row.params_frozen,
            "macs": row.macs, "flops": row.flops, "other_ops": row.other_ops,
            "activation_values": row.activation_values,
            "activation_bytes": row.activation_bytes,
            "receptive_field": None if rf is None else {
                "size": rf.size, "local_size": rf.local_size, "jump": rf.jump, "start": rf.start,
                "covers_input": rf.covers_input,
            },
            "notes": row.notes,
        }

    return {
        "model": summary.model,
        "input_size": list(summary.input_size),
        "batch_size": summary.batch_size,
        "dtype": str(summary.dtype).replace("torch.", ""),
        "depth": summary.depth,
        "conventions": summary.conventions,
        "rows": [row_dict(r) for r in summary.rows],
        "totals": _totals(summary),
        "unaccounted": summary.unaccounted,
    }


def to_json(summary: Summary) -> str:
    return json.dumps(to_dict(summary), indent=2)


def to_csv(summary: Summary) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in summary.rows:
        cells = _cells(row)
        writer.writerow(cells[c].replace(",", "") if i >= 3 else cells[c]
                        for i, c in enumerate(COLUMNS))
    return buf.getvalue()


def to_markdown(summary: Summary) -> str:
    c, h, w = summary.input_size
    lines = [
        f"**{summary.model}** @ {c}x{h}x{w}, batch {summary.batch_size}, {summary.dtype}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * 3 + "---:|" * (len(COLUMNS) - 3),
    ]
    lines += ["| " + " | ".join(_cells(r)[c] for c in COLUMNS) + " |" for r in summary.rows]
    lines += [""] + [f"- {line}" for line in _footer(summary)]
    return "\n".join(lines) + "\n"
