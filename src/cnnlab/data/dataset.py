"""In-memory image datasets: uint8 NCHW images, int64 labels, class names, and the seeded split."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch

__all__ = [
    "DatasetError",
    "ImageTensorDataset",
    "channel_stats",
    "split_train_val",
]


class DatasetError(ValueError):
    """A dataset file or folder that cannot be read: the message names it and what is wrong."""


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 NCHW images, in [0, 1] units.

    Sums run in float64 over chunks, so 60,000 MNIST digits never become one float copy.
    """
    n, c = images.shape[:2]
    if n == 0:
        raise DatasetError("cannot compute mean/std of an empty dataset")
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for part in images.split(chunk):
        x = part.to("cpu", torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    return mean.tolist(), var.sqrt().tolist()


class ImageTensorDataset(torch.utils.data.Dataset):
    """A dataset held in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,).

    ``ds[i]`` is ``(uint8 CHW tensor, int)``; ``mean``/``std`` are per-channel in [0, 1] units,
    computed from the images on first use.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        *,
        name: str = "",
    ) -> None:
        where = f"{name}: " if name else ""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DatasetError(
                f"{where}images must be a uint8 (N, C, H, W) tensor, "
                f"got {images.dtype} with shape {tuple(images.shape)}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetError(
                f"{where}{len(images)} images but labels of shape {tuple(labels.shape)}; "
                "expected one label per image"
            )
        labels = labels.to(torch.int64)
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise DatasetError(
                f"{where}labels range over [{int(labels.min())}, {int(labels.max())}] "
                f"but there are {len(classes)} classes"
            )
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    @cached_property
    def _stats(self) -> tuple[list[float], list[float]]:
        return channel_stats(self.images)

    @property
    def mean(self) -> list[float]:
        return self._stats[0]

    @property
    def std(self) -> list[float]:
        return self._stats[1]

    def subset(self, indices: torch.Tensor, name: str | None = None) -> ImageTensorDataset:
        """The samples at ``indices`` (in that order) as a new in-memory dataset."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageTensorDataset(
            self.images[indices], self.labels[indices], self.classes,
            name=self.name if name is None else name,
        )

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"ImageTensorDataset({self.name or 'unnamed'}: {len(self)} images {c}x{h}x{w}, "
            f"{len(self.classes)} classes)"
        )


def split_train_val(
    dataset: ImageTensorDataset, val_size: int, seed: int = 0
) -> tuple[ImageTensorDataset, ImageTensorDataset]:
    """Hold out ``val_size`` samples drawn by a seeded permutation (e.g. He et al. 2016's 45k/5k).

    Both parts keep the original order of their samples; the same seed gives the same split.
    """
    n = len(dataset)
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be between 1 and {n - 1} for {n} samples, got {val_size}")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    val_idx, _ = perm[:val_size].sort()
    train_idx, _ = perm[val_size:].sort()
    name = dataset.name or "dataset"
    return dataset.subset(train_idx, f"{name}/train"), dataset.subset(val_idx, f"{name}/val")


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from several integers (seed, epoch, rank, index, ...)."""
    words = [int(p) & 0xFFFFFFFF for p in parts]
    state = np.random.SeedSequence(words).generate_state(1, np.uint64)
    return int(state[0]) >> 1
