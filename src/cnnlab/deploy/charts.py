"""Canziani, Paszke & Culurciello 2016 ("An Analysis of Deep Neural Network Models for
Practical Applications", arXiv:1605.07678), redrawn from the registry and measured runs.

- Fig. 2: published top-1 accuracy against operations (GMACs per image), bubble area
  proportional to the parameter count; :func:`accuracy_vs_macs` takes extra points for a
  user's own runs.
- Fig. 3: measured time per image against batch size, log-log (:func:`time_vs_batch`).
- Fig. 10: accuracy per parameter, top-1 % per million parameters (:func:`accuracy_per_param`).

Each function returns the figure (or draws on the given axes) and the rows it drew, so a test
or a caller can check exactly what is on the chart.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cnnlab.analysis.zoo import computed_macs  # noqa: E402

__all__ = [
    "accuracy_per_param",
    "accuracy_vs_macs",
    "draw_charts",
    "published_points",
    "read_runs",
    "time_vs_batch",
]

_DATASET_COLOURS = {"imagenet": "tab:blue", "cifar10": "tab:orange", "cifar100": "tab:green",
                    "mnist": "tab:purple"}




def published_points() -> list[dict[str, Any]]:
    """Every registry model with a published top-1: its accuracy, GMACs at the paper's input
    size (declared, else from the analyser), parameters and dataset."""
    from cnnlab.registry import list_models, model_info

    rows = []
    for name in list_models():
        info = model_info(name)
        if info.top1 is None:
            continue
        macs = info.macs if info.macs is not None else computed_macs(name)
        rows.append({"model": name, "top1": info.top1, "gmacs": macs / 1e9,
                     "params_m": info.params / 1e6, "dataset": info.dataset,
                     "source": "published"})
    return rows


def read_runs(runs: Sequence[str | Path | dict[str, Any]]) -> list[dict[str, Any]]:
    """A user's points: dicts, or JSON/CSV files of them (a bench CSV/JSON too), each with a
    ``model`` (or ``label``), ``top1`` and ``gmacs``, and optionally ``params_m`` or timm's
    ``param_count`` (millions). Rows without a top-1 are skipped."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        if isinstance(run, dict):
            items = [run]
        else:
            path = Path(run)
            if path.suffix == ".csv":
                with path.open(newline="") as f:
                    items = list(csv.DictReader(f))
            else:
                data = json.loads(path.read_text())
                items = data.get("rows", [data]) if isinstance(data, dict) else data
        for item in items:
            if item.get("top1") in (None, "", "not available"):
                continue
            params = item.get("params_m", item.get("param_count"))
            rows.append({"model": str(item.get("label") or item.get("model")),
                         "top1": float(item["top1"]), "gmacs": float(item["gmacs"]),
                         "params_m": float(params) if params not in (None, "") else None,
                         "dataset": item.get("dataset", "run"), "source": "run"})
    return rows


def _bubble(params_m: float | None) -> float:
    return 8.0 + 6.0 * (params_m or 1.0)  # area in points^2, proportional to parameters


def accuracy_vs_macs(runs: Sequence[str | Path | dict[str, Any]] = (),
                     ax: Axes | None = None) -> tuple[Figure, list[dict[str, Any]]]:
    """Canziani et al. Fig. 2: top-1 vs GMACs (log), bubble area = parameters; ``runs`` adds
    a user's own points (see :func:`read_runs`), drawn in black. Returns (figure, rows drawn)."""
    fig, ax = _figure(ax)
    published, own = published_points(), read_runs(runs)
    for dataset in sorted({r["dataset"] for r in published}):
        group = [r for r in published if r["dataset"] == dataset]
        ax.scatter([r["gmacs"] for r in group], [r["top1"] for r in group],
                   s=[_bubble(r["params_m"]) for r in group], alpha=0.5,
                   color=_DATASET_COLOURS.get(dataset, "tab:gray"), label=dataset,
                   edgecolors="none")
    if own:
        ax.scatter([r["gmacs"] for r in own], [r["top1"] for r in own],
                   s=[_bubble(r["params_m"]) for r in own], color="black", marker="*",
                   label="your runs")
    for r in published + own:
        ax.annotate(r["model"], (r["gmacs"], r["top1"]), fontsize=5, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("operations [G-MACs per image]")
    ax.set_ylabel("top-1 accuracy [%]")
    ax.set_title("Top-1 vs operations (bubble area = parameters)")
    ax.legend(fontsize=6, markerscale=0.5)
    return fig, published + own


def time_vs_batch(rows: Sequence[dict[str, Any]],
                  ax: Axes | None = None) -> tuple[Figure, list[dict[str, Any]]]:
    """Canziani et al. Fig. 3: measured time per image [ms] vs batch size, log-log, one line
    per (model, variant). ``rows`` are bench rows (dicts or a bench CSV's records)."""
    fig, ax = _figure(ax)
    drawn = []
    for key in sorted({(r["model"], r.get("variant", "eager")) for r in rows}):
        series = sorted((int(r["batch"]), float(r["step_time_ms"]) / int(r["batch"]))
                        for r in rows if (r["model"], r.get("variant", "eager")) == key)
        ax.plot([b for b, _ in series], [t for _, t in series], marker="o",
                label=key[0] if key[1] == "eager" else f"{key[0]} ({key[1]})")
        drawn += [{"model": key[0], "variant": key[1], "batch": b, "ms_per_image": t}
                  for b, t in series]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size [images]")
    ax.set_ylabel("time per image [ms]")
    ax.set_title("Measured time per image vs batch")
    if drawn:
        ax.legend(fontsize=6)
    return fig, drawn


def accuracy_per_param(ax: Axes | None = None) -> tuple[Figure, list[dict[str, Any]]]:
    """Canziani et al. Fig. 10: top-1 % per million parameters, every model with a published
    accuracy, best first."""
    fig, ax = _figure(ax)
    rows = sorted(({**r, "density": r["top1"] / r["params_m"]} for r in published_points()),
                  key=lambda r: -r["density"])
    ax.bar(range(len(rows)), [r["density"] for r in rows],
           color=[_DATASET_COLOURS.get(r["dataset"], "tab:gray") for r in rows])
    ax.set_xticks(range(len(rows)), [r["model"] for r in rows], rotation=90, fontsize=5)
    ax.set_yscale("log")
    ax.set_ylabel("top-1 accuracy [%] per M parameters")
    ax.set_title("Accuracy per parameter")
    return fig, rows


def _figure(ax: Axes | None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig, ax = plt.subplots(figsize=(8, 5))
    return fig, ax


def draw_charts(bench_rows: Sequence[dict[str, Any]], out: str | Path,
                runs: Sequence[str | Path | dict[str, Any]] = ()) -> dict[str, list]:
    """Figs. 2, 3 and 10 in one PNG or SVG at ``out``; returns the rows each panel drew."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg"):
        raise ValueError(f"chart file must end in .png or .svg, got {str(out)!r}")
    fig, (a2, a3, a10) = plt.subplots(3, 1, figsize=(10, 16))
    drawn = {"fig2": accuracy_vs_macs(runs, a2)[1], "fig3": time_vs_batch(bench_rows, a3)[1],
             "fig10": accuracy_per_param(a10)[1]}
    fig.suptitle("After Canziani, Paszke & Culurciello 2016 (arXiv:1605.07678)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn
