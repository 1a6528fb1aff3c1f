"""Run folders in cnnlab's real on-disk format, for the explorer's tests."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab import create_model
from cnnlab.train.checkpoint import export_safetensors, save_atomic
from cnnlab.train.metrics import write_logs
from cnnlab.train.recipes import get_recipe

# Three epochs of a CIFAR-10 run: train/val/test top-1 in percent.
HISTORY = [
    {"epoch": 1, "step": 390, "lr": 0.1, "train_loss": 1.52, "train_top1": 44.0, "train_top5": 90.1,
     "val_top1": 50.0, "test_loss": 1.31, "test_top1": 52.5, "test_top5": 93.0,
     "images_per_s": 1000.0, "epoch_s": 50.0, "elapsed_s": 50.0},
    {"epoch": 2, "step": 780, "lr": 0.1, "train_loss": 1.01, "train_top1": 64.0, "train_top5": 96.0,
     "val_top1": 66.0, "test_loss": 0.95, "test_top1": 67.25, "test_top5": 97.0,
     "images_per_s": 1010.0, "epoch_s": 49.5, "elapsed_s": 99.5},
    {"epoch": 3, "step": 1170, "lr": 0.01, "train_loss": 0.7, "train_top1": 75.5,
     "train_top5": 98.0, "val_top1": 74.0, "test_loss": 0.8, "test_top1": 73.75, "test_top5": 98.2,
     "images_per_s": 990.0, "epoch_s": 50.5, "elapsed_s": 150.0},
]


def write_run(folder: Path, model_name: str = "resnet20", checkpoint: bool = True) -> Path:
    """A finished run as `cnnlab train` leaves it: metrics.jsonl/csv, checkpoint.pt
    (plain containers, loadable with weights_only=True) and model.safetensors."""
    folder.mkdir(parents=True)
    write_logs(HISTORY, folder)
    recipe = get_recipe("he2016_cifar")
    state = create_model(model_name, num_classes=10).state_dict()
    if checkpoint:
        save_atomic({
            "format": "cnnlab-checkpoint-1", "model_name": model_name, "model": state,
            "epoch": 3, "step": 1170, "config": recipe.to_dict(),
            "run": {"model": model_name, "data": "cifar10", "classes": [str(i) for i in range(10)],
                    "num_classes": 10, "image_size": [3, 32, 32]},
            "metrics": HISTORY,
        }, folder / "checkpoint.pt")
    export_safetensors(state, folder / "model.safetensors",
                       metadata={"model": model_name, "recipe": recipe.name, "epoch": "3"})
    return folder


def make_runs(root: Path) -> Path:
    """A runs folder: one full run, one with weights only, a folder that is no run, and a
    symlink pointing outside the folder (which the explorer must not follow)."""
    runs = root / "runs"
    write_run(runs / "resnet20-cifar10")
    write_run(runs / "weights-only", checkpoint=False)
    (runs / "notes").mkdir()
    outside = write_run(root / "outside")
    (runs / "escape").symlink_to(outside, target_is_directory=True)
    torch.manual_seed(0)
    return runs
