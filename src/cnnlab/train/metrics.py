"""Accuracy, the per-epoch log (JSONL + CSV) and the training-curves figure."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cnnlab.train.checkpoint import replacing

__all__ = ["FIELDS", "correct_topk", "plot_confusion", "plot_curves", "write_logs"]

# The columns of metrics.jsonl / metrics.csv, in order; accuracies in percent.
FIELDS = (
    "epoch", "step", "lr", "train_loss", "train_top1", "train_top5", "train_images", "val_loss",
    "val_top1", "val_top5", "test_loss", "test_top1", "test_top5", "images_per_s", "epoch_s",
    "elapsed_s",
)


def correct_topk(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)
                 ) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k logits, for each k (as tensors, so
    that counting does not force a device synchronisation every step)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    # A row holds its target at most once, so counting hits in the first k columns counts
    # the samples whose target is in the top k.
    hits = (top == target[:, None]).sum(dim=0).cumsum(0)
    return [hits[min(k, kmax) - 1] for k in ks]


def _rounded(key: str, value: Any) -> Any:
    """Log values as people read them: accuracies and losses to 4 and 6 decimals, the rate
    to 6 significant digits, times to milliseconds (the checkpoint keeps them exact)."""
    if not isinstance(value, float):
        return value
    if key == "lr":
        return float(f"{value:.6g}")
    if key.endswith("_s"):
        return round(value, 3)
    return round(value, 6 if key.endswith("_loss") else 4)


def write_logs(history: list[dict[str, Any]], out_dir: Path) -> None:
    """Rewrite metrics.jsonl and metrics.csv from the whole history (a resumed run's log
    therefore matches its checkpoint even if a crashed run had logged further)."""
    rows = [{k: _rounded(k, row[k]) for k in FIELDS if k in row} for row in history]
    lines = [json.dumps(row) for row in rows]
    with replacing(out_dir / "metrics.jsonl") as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
    with replacing(out_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as f:
        cols = [k for k in FIELDS if any(k in row for row in history)]
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Train/val/test top-1 error and training loss against epoch, as the lectures plot them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    epochs = [row["epoch"] for row in history]
    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("val", "--"), ("test", ":")):
        key = f"{split}_top1"
        pts = [(row["epoch"], 100.0 - row[key]) for row in history if row.get(key) is not None]
        if pts:
            ax_err.plot(*zip(*pts, strict=True), style, marker="o", ms=3, label=f"{split} error")
    ax_err.set(xlabel="epoch", ylabel="top-1 error (%)", yscale="log")
    # Plain numbers on the log axis (1, 2, 5 rather than 10^0, 2x10^0, ...).
    ax_err.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax_err.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax_err.grid(True, which="both", alpha=0.3)
    ax_err.legend()
    ax_loss.plot(epochs, [row["train_loss"] for row in history], marker="o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="training loss")
    ax_loss.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` atomically as the image ``path`` names, and free it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str],
                   path: str | Path, title: str = "") -> Path:
    """The confusion matrix as an image: rows the true class, columns the predicted one,
    each row shaded by the share of its images (counts written in the cells up to 20 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(confusion, dtype=torch.float64)
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    side = min(4 + 0.45 * n, 20)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    ticks = range(n) if n <= 40 else range(0, n, max(1, n // 20))
    ax.set_xticks(list(ticks), [classes[i] for i in ticks], rotation=90)
    ax.set_yticks(list(ticks), [classes[i] for i in ticks])
    ax.set(xlabel="predicted class", ylabel="true class")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    return _save(fig, path)
