"""Top-1 against operations for the zoo, with the user's own runs added: Canziani et al.
(2016) Fig. 2, drawn by :func:`cnnlab.deploy.charts.accuracy_vs_macs`. A run folder becomes a
point at its final test (else validation) top-1, the analyser's MACs at the image size it was
trained on, and its exact parameter count."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnlab.viz.curves import load_metrics

__all__ = ["compare_figure", "run_point"]


def run_point(run_dir: str | Path) -> dict[str, Any]:
    """One run folder as a chart point: label, model, top1 (%), gmacs, params_m, dataset."""
    from cnnlab.analysis.summary import summarize
    from cnnlab.registry import create_model
    from cnnlab.train.checkpoint import load_checkpoint

    rows = load_metrics(run_dir)
    final = rows[-1]
    top1 = final.get("test_top1", final.get("val_top1"))
    if top1 is None:
        raise ValueError(f"{run_dir}: its last epoch has no test or validation top-1 to plot")
    ckpt = load_checkpoint(run_dir)
    run, name = ckpt["run"], ckpt["model_name"]
    model = create_model(name, num_classes=run.get("num_classes"), in_chans=run.get("in_chans"),
                         **run.get("model_kwargs", {}))
    macs = summarize(model, tuple(run["image_size"])).total_macs
    params = sum(p.numel() for p in model.parameters())
    return {"label": f"{Path(run_dir).name} ({name})", "model": name, "top1": float(top1),
            "gmacs": macs / 1e9, "params_m": params / 1e6, "dataset": run.get("data", "run")}


def compare_figure(run_dirs: Sequence[str | Path] = ()) -> tuple[Any, list[dict[str, Any]]]:
    """(figure, rows drawn): every registry model with a published top-1, plus one point per
    run folder in ``run_dirs``."""
    from cnnlab.deploy.charts import accuracy_vs_macs

    return accuracy_vs_macs([run_point(d) for d in run_dirs])
