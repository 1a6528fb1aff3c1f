"""Render a :class:`~cnnlab.analysis.summary.Summary` as a rich table, JSON, CSV or Markdown.

The analyser returns data; this module only formats it.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.table import Table

from cnnlab.analysis.receptive_field import ReceptiveField
from cnnlab.analysis.summary import Row, Summary

__all__ = ["COLUMNS", "COMPACT", "rich_table", "to_csv", "to_dict", "to_json", "to_markdown"]

COLUMNS = (
    "layer", "type", "output shape", "params", "frozen", "MACs", "other ops",
    "act. values", "act. bytes", "RF size", "RF jump", "RF start",
)
# The columns that fit an 80-column terminal (the demo's table), with shorter headers.
COMPACT = {"layer": "layer", "type": "type", "output shape": "output", "params": "params",
           "MACs": "MACs", "act. values": "values", "RF size": "RF"}


def _num(v: Any) -> str:
    if isinstance(v, tuple):
        return "x".join(_num(x) for x in v)
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}"
    return str(int(v))


# What the "(global)" mark means, and which field is the conventional one.
GLOBAL_NOTE = ("(global): every unit sees the whole input; with SE gates through their global "
               "average pool. local: the conventional field of the conv/pool chain alone, "
               "without the SE gates' global context.")


def _rf_cells(rf: ReceptiveField | None, compact: bool = False) -> tuple[str, str, str]:
    if rf is None:
        return "", "", ""
    size = _num(rf.size) + (" (global)" if rf.covers_input and not compact else "")
    return size, _num(rf.jump), _num(rf.start)


def _cells(row: Row, compact: bool = False) -> list[str]:
    """One row's cells in COLUMNS order; ``compact`` shows shapes per image (no batch)."""
    dims = row.output_shape
    if dims is not None and compact:
        dims = dims[1:]
    shape = "" if dims is None else "x".join(map(str, dims))
    flagged = any("unknown" in n or "no op-count" in n for n in row.notes)
    flag = " *" if flagged else ""
    return [
        row.name + flag, row.type, shape, f"{row.params_trainable:,}", f"{row.params_frozen:,}",
        f"{row.macs:,}", f"{row.other_ops:,}", f"{row.activation_values:,}",
        f"{row.activation_bytes:,}", *_rf_cells(row.receptive_field, compact),
    ]


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


def rich_table(summary: Summary, compact: bool = False) -> Table:
    """All columns and the conventions, or with ``compact`` only COMPACT (shapes per image)
    and the totals."""
    c, h, w = summary.input_size
    columns = tuple(COMPACT.values()) if compact else COLUMNS
    keep = [COLUMNS.index(name) for name in (COMPACT if compact else COLUMNS)]
    footer = _footer(summary)
    table = Table(
        *columns,
        title=f"{summary.model} @ {c}x{h}x{w}, batch {summary.batch_size}, {summary.dtype}",
        caption="\n".join(footer[:3] if compact else footer),
        caption_justify="left",
    )
    for col in table.columns[3:]:
        col.justify = "right"
    for col in table.columns:  # narrow terminals squeeze headers, never a cell
        col.no_wrap = True
    for row in summary.rows:
        cells = _cells(row, compact)
        table.add_row(*(cells[i] for i in keep))
    return table


def to_dict(summary: Summary) -> dict[str, Any]:
    def row_dict(row: Row) -> dict[str, Any]:
        rf = row.receptive_field
        return {
            "name": row.name, "type": row.type, "kind": row.kind,
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
        writer.writerow(c.replace(",", "") if i >= 3 else c for i, c in enumerate(_cells(row)))
    return buf.getvalue()


def to_markdown(summary: Summary) -> str:
    c, h, w = summary.input_size
    lines = [
        f"**{summary.model}** @ {c}x{h}x{w}, batch {summary.batch_size}, {summary.dtype}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * 3 + "---:|" * (len(COLUMNS) - 3),
    ]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in summary.rows]
    lines += [""] + [f"- {line}" for line in _footer(summary)]
    return "\n".join(lines) + "\n"
