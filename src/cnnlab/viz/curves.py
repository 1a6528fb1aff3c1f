"""Error against epoch for several runs on one plot, in the lectures' style (He et al. 2016,
Fig. 1 and 6): thin lines are training error, bold lines test error, dashed validation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_metrics", "plot_run_curves"]

STYLES = {"train": dict(lw=0.9, ls="-"), "val": dict(lw=1.4, ls="--"),
          "test": dict(lw=2.4, ls="-")}


def load_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir``/metrics.jsonl (one per epoch), or a one-line ValueError."""
    run = Path(run_dir)
    path = run / "metrics.jsonl" if run.is_dir() else run
    if not path.is_file():
        raise ValueError(f"{str(run)!r} holds no metrics.jsonl; give a run folder written by "
                         f"`cnnlab train`")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}: line {n} is not JSON") from None
        if not isinstance(row, dict) or "epoch" not in row:
            raise ValueError(f"{path}: line {n} has no 'epoch'")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} is empty: the run has not finished an epoch yet")
    return rows


def plot_run_curves(runs: dict[str, list[dict[str, Any]]], *, title: str = "",
                    splits: Sequence[str] = ("train", "val", "test")):  # -> Figure
    """Top-1 error (%) against epoch, one colour per run (its label), one style per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, rows) in enumerate(runs.items()):
        for split in splits:
            pts = [(r["epoch"], 100.0 - r[f"{split}_top1"]) for r in rows
                   if r.get(f"{split}_top1") is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, color=colours[i % len(colours)], marker="." if len(xs) < 3
                        else None, label=f"{label} ({split})", **STYLES[split])
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title(title or "thin: train error, bold: test error, dashed: validation", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
