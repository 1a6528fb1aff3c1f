"""Datasets in their official on-disk formats, a bundled MNIST sample, downloads, augmentation.

One entry point, :func:`load_dataset`, maps a dataset name to its splits. Images are uint8
(N, C, H, W) in memory (MNIST family, CIFAR, SVHN) or decoded per sample (image folders).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.data.dataset import DatasetError, ImageTensorDataset, channel_stats, split_train_val

__all__ = [
    "DATASETS",
    "DatasetError",
    "ImageTensorDataset",
    "SAMPLE_ROOT",
    "channel_stats",
    "load_dataset",
    "split_train_val",
]

SAMPLE_ROOT = Path(__file__).parent / "sample"

DATASETS = (
    "mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "svhn",
    "folder", "imagenet", "imagenette", "mnist-sample",
)


def _load_splits(name: str, root: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "mnist-sample":
        from cnnlab.data.idx import load_idx_dataset

        return load_idx_dataset(SAMPLE_ROOT, "mnist-sample")
    if root is None:
        raise ValueError(f"dataset {name!r} needs root= (the folder holding its files)")
    if name in ("mnist", "fashion-mnist", "kmnist"):
        from cnnlab.data.idx import load_idx_dataset

        return load_idx_dataset(root, name)
    if name in ("cifar10", "cifar100"):
        from cnnlab.data.cifar import load_cifar

        return load_cifar(root, name)
    if name == "svhn":
        from cnnlab.data.svhn import load_svhn

        return load_svhn(root, extra=options.pop("extra", False))
    from cnnlab.data.folder import load_folder  # "folder", "imagenet", "imagenette"

    return load_folder(root, name, skip_corrupt=options.pop("skip_corrupt", False))


def load_dataset(name: str, root: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """The splits of dataset ``name`` read from ``root``: {"train", "test"} (+ "val").

    Options: ``val_size`` (int) and ``seed`` hold out a seeded validation split from "train"
    (in-memory datasets; an image folder with a val/ subfolder has "val" already);
    ``extra=True`` (SVHN) appends the 531,131 extra digits to train; ``skip_corrupt=True``
    (folders) skips undecodable images and counts them in ``dataset.skipped``.
    """
    options = dict(options)
    val_size = options.pop("val_size", None)
    seed = options.pop("seed", 0)
    splits = _load_splits(name, None if root is None else Path(root), options)
    if options:
        raise ValueError(f"unknown option(s) for {name!r}: {', '.join(sorted(options))}")
    if val_size is not None:
        if not isinstance(splits["train"], ImageTensorDataset):
            raise ValueError(
                f"val_size applies to in-memory datasets; {name!r} reads a val/ folder instead"
            )
        splits["train"], splits["val"] = split_train_val(splits["train"], int(val_size), seed)
    return splits
