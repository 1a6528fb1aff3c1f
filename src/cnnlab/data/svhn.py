"""SVHN cropped digits (Netzer et al. 2011) from the official ``*_32x32.mat`` files.

Each file holds ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1) with labels 1..10, where 10
stands for the digit 0. MATLAB files are read with scipy (``pip install cnnlab[svhn]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.data.dataset import DatasetError, ImageTensorDataset

__all__ = ["load_svhn", "read_svhn_mat"]

CLASSES = [str(d) for d in range(10)]
SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


def read_svhn_mat(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 3, 32, 32) and labels int64 0..9 from one SVHN .mat file."""
    try:
        import scipy.io
    except ImportError:
        raise ImportError("reading SVHN needs scipy: pip install 'cnnlab[svhn]'") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DatasetError(
            f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})"
        ) from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[:3] != (32, 32, 3) \
            or x.dtype != np.uint8:  # any other dtype would be silently wrapped into 0..255
        raise DatasetError(
            f"{path}: 'X' must be a uint8 (32, 32, 3, N) array, got "
            f"{getattr(x, 'dtype', type(x).__name__)} of shape {getattr(x, 'shape', None)}"
        )
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise DatasetError(
            f"{path}: {x.shape[3]} images but 'y' has shape {getattr(y, 'shape', None)}"
        )
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DatasetError(f"{path}: labels must be 1..10 (10 = digit 0), got "
                           f"{labels.min()}..{labels.max()}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return images, torch.from_numpy(labels % 10)


def load_svhn(root: str | Path, extra: bool = False) -> dict[str, ImageTensorDataset]:
    """SVHN's train (73,257) and test (26,032) digits; ``extra=True`` appends the 531,131
    extra digits to train, as Goodfellow et al. 2013 and the ResNet-era papers train."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    splits = {}
    for split in ("train", "test"):
        images, labels = read_svhn_mat(root / SPLIT_FILES[split])
        if split == "train" and extra:
            more_images, more_labels = read_svhn_mat(root / SPLIT_FILES["extra"])
            images, labels = torch.cat([images, more_images]), torch.cat([labels, more_labels])
        splits[split] = ImageTensorDataset(images, labels, CLASSES, name=f"svhn/{split}")
    return splits
