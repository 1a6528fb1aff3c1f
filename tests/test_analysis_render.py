"""Renderers: a small golden Markdown summary, and JSON/CSV agree with the Summary's data.

Set CNNLAB_UPDATE_GOLDEN=1 to rewrite the golden file, after checking the change is intended.
"""

from __future__ import annotations

import csv
import io
import json
import os

from rich.console import Console

from cnnlab.analysis import render, summarize

from conftest import DATA

GOLDEN = DATA / "golden" / "summary_alexnet.md"
UPDATE = os.environ.get("CNNLAB_UPDATE_GOLDEN") == "1"


def test_markdown_summary_matches_golden():
    text = render.to_markdown(summarize("alexnet"))
    if UPDATE:
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "summary changed: CNNLAB_UPDATE_GOLDEN=1 if intended"


def test_json_and_csv_carry_the_same_numbers():
    s = summarize("resnet18", (3, 64, 64), depth=2)
    data = json.loads(render.to_json(s))
    assert [r["name"] for r in data["rows"]] == [r.name for r in s.rows]
    assert [r["macs"] for r in data["rows"]] == [r.macs for r in s.rows]
    assert data["totals"]["macs"] == s.total_macs and data["depth"] == 2
    rows = list(csv.DictReader(io.StringIO(render.to_csv(s))))
    assert [int(r["MACs"]) for r in rows] == [r.macs for r in s.rows]
    assert [int(r["params"]) for r in rows] == [r.params_trainable for r in s.rows]


def test_rich_table_has_one_row_per_summary_row():
    s = summarize("alexnet", depth=1)
    table = render.rich_table(s)
    assert table.row_count == len(s.rows) == 4
    console = Console(width=200, record=True)
    console.print(table)
    assert "61,100,840" in console.export_text()


def test_compact_table_fits_80_columns_without_cutting_cells():
    table = render.rich_table(summarize("lenet5_modern", (1, 28, 28)), compact=True)
    console = Console(width=80, record=True)
    console.print(table)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    # per-image shapes (no batch dimension), the lecture's CxHxW
    assert "│ 6x28x28 " in text and "│ features.0 " in text and "48,120" in text
