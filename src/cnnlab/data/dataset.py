"""In-memory image datasets: uint8 NCHW images, int64 labels, class names, and the seeded split."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch

__all__ = [
    "DatasetError",
    "ImageTensorDataset",
    "PixelMoments",
    "channel_stats",
    "split_train_val",
]


class DatasetError(ValueError):
    """A dataset file or folder that cannot be read: the message names it and what is wrong."""


class PixelMoments:
    """Running float64 sums over pixels, in [0, 1] units: per-channel totals and the channel
    cross-products, from which the mean, std and channel covariance follow."""

    def __init__(self, channels: int) -> None:
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.products = torch.zeros(channels, channels, dtype=torch.float64)
        self.pixels = 0

    def add(self, images: torch.Tensor) -> None:
        """Add uint8 images, (N, C, H, W) or one (C, H, W)."""
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.shape[1] != len(self.total):
            raise ValueError(f"expected {len(self.total)} channels, got {images.shape[1]}")
        x = images.transpose(0, 1).reshape(images.shape[1], -1).to("cpu", torch.float64) / 255
        self.total += x.sum(dim=1)
        self.products += x @ x.T
        self.pixels += x.shape[1]

    def mean(self) -> torch.Tensor:
        if self.pixels == 0:
            raise DatasetError("cannot compute statistics of an empty dataset")
        return self.total / self.pixels

    def covariance(self) -> torch.Tensor:
        mean = self.mean()
        return self.products / self.pixels - torch.outer(mean, mean)

    def mean_std(self) -> tuple[list[float], list[float]]:
        std = self.covariance().diagonal().clamp_min(0.0).sqrt()
        return self.mean().tolist(), std.tolist()


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 NCHW images, in [0, 1] units.

    Sums run over chunks, so 60,000 MNIST digits never become one float64 copy.
    """
    moments = PixelMoments(images.shape[1])
    for part in images.split(chunk):
        moments.add(part)
    return moments.mean_std()


class ChannelStatsMixin:
    """``mean``/``std`` per channel in [0, 1] units, from the dataset's ``stats()``, cached."""

    def stats(self) -> tuple[list[float], list[float]]:
        raise NotImplementedError

    @cached_property
    def _cached_stats(self) -> tuple[list[float], list[float]]:
        return self.stats()

    @property
    def mean(self) -> list[float]:
        return self._cached_stats[0]

    @property
    def std(self) -> list[float]:
        return self._cached_stats[1]


class ImageTensorDataset(ChannelStatsMixin, torch.utils.data.Dataset):
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

    def stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std over every pixel (use ``mean``/``std``: cached)."""
        return channel_stats(self.images)

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

