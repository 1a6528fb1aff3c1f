"""What every experiment shares: its description, its budgets, and the context it runs in.

An experiment module defines ``SPEC`` (an :class:`Experiment`) and ``run(ctx) -> Outcome``.
The context gives it the budget's settings, the data (a seeded subset), training that resumes
from the engine's own checkpoints (``out/runs/KEY/checkpoint.pt``), and figure saving;
:func:`cnnlab.experiments.run_experiment` writes result.json and report.md around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from rich.console import Console

__all__ = ["BUDGETS", "Context", "Experiment", "Outcome", "TrainedRun", "cifar_padding",
           "error_rows", "plot_error_curves", "short_recipe"]

BUDGETS = ("tiny", "quick", "paper")  # tiny: the tests' seconds; quick: minutes on a laptop


@dataclass(frozen=True)
class Experiment:
    """``budgets`` maps tiny/quick/paper to the settings ``run`` reads (plain JSON values);
    ``uses_data``: whether it trains (analytic experiments ignore --data)."""

    name: str
    claim: str
    paper: str  # the paper and figure/table it reproduces
    budgets: Mapping[str, Mapping[str, Any]]
    uses_data: bool = True


@dataclass
class Outcome:
    """What ``run`` found: every number (JSON values), and the report's three paragraphs."""

    numbers: dict[str, Any]
    shows: str  # what the figures and numbers show
    versus_paper: str  # how that compares with the paper's figure
    limits: str  # what this budget cannot show


@dataclass
class TrainedRun:
    model: nn.Module
    history: list[dict[str, Any]]
    run_dir: Path
    resumed: bool


@dataclass
class Context:
    """Where and how one experiment runs; ``settings`` is the chosen budget's."""

    spec: Experiment
    out: Path
    budget: str
    data: str = "mnist-sample"
    root: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    console: Console = field(default_factory=Console)
    figures: list[str] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # e.g. --samples

    @property
    def settings(self) -> Mapping[str, Any]:
        return {**self.spec.budgets[self.budget], **self.overrides}

    def figure(self, fig: Any, name: str) -> None:
        """Save ``fig`` as NAME.png and NAME.svg in the output folder."""
        from cnnlab.viz.figure import save_figure

        for path in save_figure(fig, self.out / name):
            self.figures.append(path.name)

    def log(self, text: str) -> None:
        self.console.print(f"[dim]{self.spec.name}:[/] {text}")

    def datasets(self, train: int | None, test: int | None, seed: int = 0) -> tuple[Any, Any]:
        """Seeded subsets of the train and test splits (None: the whole split)."""
        from cnnlab.data import load_dataset

        splits = load_dataset(self.data, self.root)
        if "test" not in splits:
            raise ValueError(f"dataset {self.data!r} has no test split to measure on")
        return (_subset(splits["train"], train, seed, self.data),
                _subset(splits["test"], test, seed + 1, self.data))

    def train(self, key: str, build: Callable[[], nn.Module], recipe: Any, train_ds: Any,
              test_ds: Any, *, pad_to: tuple[int, int] | None = None,
              model_name: str = "") -> TrainedRun:
        """Train ``build()`` under ``recipe`` in out/runs/KEY with the engine's ``fit``; a
        checkpoint already there is resumed (an interrupted experiment continues where its
        last epoch ended, a finished run is only loaded)."""
        from cnnlab.data.loader import make_loader
        from cnnlab.train import fit, load_checkpoint, seed_everything
        from cnnlab.train.run import train_transform

        run_dir = self.out / "runs" / key
        ckpt_path = run_dir / "checkpoint.pt"
        resume = load_checkpoint(ckpt_path) if ckpt_path.is_file() else None
        seed_everything(recipe.seed)
        model = build()
        mean, std = list(train_ds.mean), list(train_ds.std)
        c, h, w = train_ds.images.shape[1:]
        shape = (c, *(pad_to or (h, w)))
        common = dict(mean=mean, std=std, device=self.device, pad_to=pad_to)
        train_loader = make_loader(train_ds, recipe.batch_size, shuffle=True,
                                   drop_last=recipe.drop_last,
                                   seed=recipe.seed,
                                   train_transform=train_transform(recipe, shape), **common)
        test_loader = make_loader(test_ds, 500, shuffle=False, **common)
        self.log(f"{key}: {'resuming' if resume else 'training'} in {run_dir}")
        result = fit(model, recipe, train_loader, out_dir=run_dir, model_name=model_name or key,
                     test_loader=test_loader, device=self.device, resume=resume,
                     run_info={"model": model_name or key, "data": self.data, "root": self.root,
                               "classes": list(train_ds.classes),
                               "num_classes": len(train_ds.classes), "in_chans": c,
                               "image_size": list(shape), "mean": mean, "std": std},
                     console=self.console, progress=False)
        self.runs[key] = {"folder": str(run_dir.relative_to(self.out)),
                          "resumed": resume is not None, "epochs": len(result.history),
                          "train_s": result.history[-1]["elapsed_s"] if result.history else 0.0,
                          "stopped": result.stopped, "diverged": result.diverged}
        return TrainedRun(model.eval(), result.history, run_dir, resume is not None)


def cifar_padding(ds: Any) -> tuple[int, int] | None:
    """(32, 32) for images smaller than the CIFAR nets' input (MNIST's 28x28 digits are then
    centred on the background), None when they already are 32x32 or larger."""
    h, w = ds.images.shape[2:]
    return (32, 32) if (h, w) != (32, 32) and h <= 32 and w <= 32 else None


def error_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per epoch: epoch, step, and training / test top-1 error (%) from the engine's history."""
    return [{"epoch": r["epoch"], "step": r["step"], "train_error": 100 - r["train_top1"],
             "test_error": 100 - r.get("test_top1", float("nan"))} for r in history]


def plot_error_curves(ax: Any, curves: Mapping[str, list[dict[str, Any]]], *,
                      x: str = "epoch", colours: Sequence[str] | None = None) -> None:
    """The lectures' style on ``ax``: thin = training error, bold = test error, per run."""
    for i, (label, rows) in enumerate(curves.items()):
        colour = colours[i] if colours else f"C{i}"
        xs = [r[x] for r in rows]
        ax.plot(xs, [r["train_error"] for r in rows], color=colour, lw=0.9, ls="--",
                marker=".", label=f"{label} train")
        ax.plot(xs, [r["test_error"] for r in rows], color=colour, lw=2.4, marker="o",
                label=f"{label} test {rows[-1]['test_error']:.2f}%")
    ax.set_xlabel("SGD steps" if x == "step" else x)
    ax.set_ylabel("top-1 error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def short_recipe(name: str, **overrides: Any) -> Any:
    """The recipe of the short budgets: SGD with Nesterov momentum and a one-cycle rate
    (cnnlab's ``fast_cpu``), no augmentation, whole batches only (every model of a comparison
    takes the same steps); ``overrides`` set epochs, batch size, lr..."""
    from dataclasses import replace

    from cnnlab.train import get_recipe

    base = get_recipe("fast_cpu")
    return replace(base, name=f"{name}-{base.name}", augment="none",
                   **{"drop_last": True, **overrides})


def _subset(ds: Any, n: int | None, seed: int, name: str) -> Any:
    if n is None or n >= len(ds):
        return ds
    if not hasattr(ds, "subset"):
        raise ValueError(f"dataset {name!r} is read from a folder; the experiments train on "
                         f"in-memory datasets (MNIST family, CIFAR, SVHN)")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return ds.subset(idx.sort().values)
