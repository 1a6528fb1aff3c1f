"""Batches for training: in-memory datasets stay on the device as uint8 and are shuffled,
augmented and normalised there in whole batches; image folders stream through DataLoader
workers that decode (and per-image transform) in parallel.

Both loaders yield ``(x float32 normalised NCHW, y int64)`` on the device, reshuffle by
``set_epoch``, and shard by ``(rank, world_size)``: each rank takes every ``world_size``-th
index of the epoch's permutation, so batch ``b`` of all ranks together is exactly positions
``b*G .. (b+1)*G - 1`` of the permutation (G = batch_size x world_size, the global batch),
the batch one process with batch G would draw. Every rank serves the same number of batches
(DistributedDataParallel needs every rank in every step). The remainder r = n mod G: with
``drop_last`` it is left out, as in one process; without, it is the last, smaller step, split
over the ranks (their shares differ by at most one), so every sample is seen exactly once per
epoch, nothing padded or repeated; only if 0 < r < world_size, so that some rank would have
nothing to train on, are those r samples left out of that epoch (a different few each epoch).
The order and the augmentation depend only on (seed, epoch, rank), never on the number of
workers.

Each batch is augmented with its own generator, seeded by (seed, epoch, rank, batch), so the
position within an epoch is one number: ``state_dict()`` says how many batches were served and
``load_state_dict`` makes the next iteration continue after them (a run checkpointed in the
middle of an epoch resumes exactly, on every rank).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.dataset import DatasetError, ImageTensorDataset
from cnnlab.data.transforms import Normalizer
from cnnlab.data.transforms import resize as resize_images

__all__ = ["DeviceLoader", "FolderLoader", "epoch_indices", "make_loader", "mix_seed"]


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from several integers (seed, epoch, rank, index, ...)."""
    words = [int(p) & 0xFFFFFFFF for p in parts]
    state = np.random.SeedSequence(words).generate_state(1, np.uint64)
    return int(state[0]) >> 1


BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def epoch_indices(
    n: int, *, shuffle: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """The indices rank ``rank`` visits in ``epoch``: its stride of the epoch's permutation."""
    _check_rank(rank, world_size)
    if shuffle:
        generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    return order[rank::world_size]


class _EpochBatches:
    """What both loaders share: sharded, seeded order and batch counting."""

    def __init__(
        self, n: int, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool,
        rank: int, world_size: int,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0
        self.served = 0  # batches of the current epoch handed out so far
        self._resume: dict[str, Any] | None = None
        _check_rank(rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle (and augmentation) for ``epoch``."""
        self.epoch = int(epoch)
        self._resume = None

    def state_dict(self) -> dict[str, Any]:
        """The position within the current epoch: its number and the batches served."""
        return {"epoch": self.epoch, "batch": self.served}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue ``state``'s epoch after its served batches."""
        self.epoch = int(state["epoch"])
        self._resume = dict(state)

    @property
    def shard_size(self) -> int:
        """Samples of the epoch's permutation assigned to this rank."""
        return len(range(self.rank, self.n, self.world_size))

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (the shard, less a remainder left out)."""
        return min(len(self) * self.batch_size, self.shard_size)

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank (see the module's docstring)."""
        full, rest = divmod(self.n, self.batch_size * self.world_size)
        return full + int(not self.drop_last and rest >= self.world_size)

    def global_batch_images(self, batch: int) -> int:
        """Images batch ``batch`` of the epoch holds on all ranks together (the last one may
        hold fewer)."""
        per = self.batch_size * self.world_size
        return min(per, self.n - batch * per)

    def _start(self) -> int:
        """Begin an iteration: the first batch to serve (0, or where a loaded state was)."""
        resume, self._resume = self._resume, None
        self.served = 0 if resume is None else int(resume["batch"])
        return self.served

    def _augment_generator(self, batch: int) -> torch.Generator:
        return torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self.rank, 1, batch))

    def _batches(self, start: int = 0) -> Iterator[torch.Tensor]:
        order = epoch_indices(
            self.n, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
            rank=self.rank, world_size=self.world_size,
        )
        for b in range(start, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


def _centre_in(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None:
        return images
    h, w = images.shape[-2:]
    th, tw = size
    if th < h or tw < w:
        raise ValueError(f"pad_to {th}x{tw} is smaller than the {h}x{w} images")
    top, left = (th - h) // 2, (tw - w) // 2
    return F.pad(images, (left, tw - w - left, top, th - h - top), value=0)


class DeviceLoader(_EpochBatches):
    """An in-memory dataset kept on ``device`` as uint8, served in augmented, normalised batches.

    ``train_transform(x_uint8, generator) -> x_uint8`` runs per batch on the device (e.g.
    ``lambda x, g: random_flip(random_crop(x, 32, 4, generator=g), generator=g)``).
    ``mean``/``std`` default to the dataset's own. ``pad_to=(H, W)`` centres smaller images in
    a field of zeros (the background) once, up front, instead of padding every batch (LeNet-5's
    28x28 MNIST digits in its 32x32 input). ``resize=(H, W)`` resizes every batch (bilinear)
    before it is augmented (AlexNet on 28x28 digits).
    """

    def __init__(
        self,
        dataset: ImageTensorDataset,
        batch_size: int,
        *,
        shuffle: bool,
        train_transform: BatchTransform | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad_to: tuple[int, int] | None = None,
        resize: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(
            len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
            rank=rank, world_size=world_size,
        )
        self.device = torch.device(device)
        self.resize = resize
        self.images = _centre_in(dataset.images.to(self.device), pad_to)
        self.labels = dataset.labels.to(self.device)
        self.mean = list(dataset.mean if mean is None else mean)
        self.std = list(dataset.std if std is None else std)
        self._normalize = Normalizer(self.mean, self.std)
        self.train_transform = train_transform

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start = self._start()
        for b, idx in enumerate(self._batches(start), start):
            idx = idx.to(self.device)
            x = self.images.index_select(0, idx)
            if self.resize is not None:  # per batch: the enlarged dataset might not fit
                x = resize_images(x, self.resize)
            if self.train_transform is not None:
                x = self.train_transform(x, self._augment_generator(b))
            self.served += 1
            yield self._normalize(x), self.labels.index_select(0, idx)


SampleTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class _DecodedSamples(torch.utils.data.Dataset):
    """Decodes sample ``i`` in a worker and applies the per-image transform with a generator
    seeded by (seed, epoch, i), so the result does not depend on which worker ran it."""

    def __init__(self, dataset: Any, sample_transform: SampleTransform | None) -> None:
        self.dataset, self.sample_transform = dataset, sample_transform
        self.seed = self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        if self.sample_transform is not None:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index, 2))
            image = self.sample_transform(image, generator)
        return image, label


def _collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(image.shape) for image, _ in items}
    if len(shapes) > 1:
        raise ValueError(
            f"images of different shapes {sorted(shapes)[:3]} in one batch; give make_loader a "
            "sample_transform that brings every image to one size (e.g. resize + center_crop)"
        )
    images = torch.stack([image for image, _ in items])
    return images, torch.tensor([label for _, label in items], dtype=torch.int64)


class FolderLoader(_EpochBatches):
    """An image-folder dataset decoded by ``num_workers`` DataLoader workers.

    ``sample_transform(image_uint8_chw, generator) -> uint8 CHW`` runs per image in the
    workers (bring images to one size there); ``train_transform`` then runs per batch on the
    device, as in :class:`DeviceLoader`. ``mean``/``std`` default to the dataset's, estimated
    from 2,000 of its images (pass ``transforms.IMAGENET_MEAN``/``IMAGENET_STD`` for ImageNet).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        shuffle: bool,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        sample_transform: SampleTransform | None = None,
        train_transform: BatchTransform | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
            rank=rank, world_size=world_size,
        )
        self.dataset = dataset
        self.samples = _DecodedSamples(dataset, sample_transform)
        self.samples.seed = seed
        self.mean = list(dataset.mean if mean is None else mean)
        self.std = list(dataset.std if std is None else std)
        self._normalize = Normalizer(self.mean, self.std)
        self.train_transform = train_transform
        self.device = torch.device(device)
        self.num_workers = num_workers

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start = self._start()
        self.samples.epoch = self.epoch
        loader = torch.utils.data.DataLoader(
            self.samples,
            batch_sampler=[idx.tolist() for idx in self._batches(start)],
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            # Its own generator: DataLoader would otherwise draw its workers' base seed from
            # the global RNG, which a resumed run must find exactly as the checkpoint left it.
            generator=torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self.rank, 3)),
        )
        for b, (x, y) in enumerate(_worker_errors_unwrapped(loader), start):
            x = x.to(self.device, non_blocking=True)
            if self.train_transform is not None:
                x = self.train_transform(x, self._augment_generator(b))
            self.served += 1
            yield self._normalize(x), y.to(self.device, non_blocking=True)


def _worker_errors_unwrapped(loader: Any) -> Iterator[Any]:
    """A DatasetError raised in a worker arrives as "Caught DatasetError in DataLoader worker
    process 0." with the worker's traceback below; raise the original one-line message (which
    names the file) instead."""
    try:
        yield from loader
    except DatasetError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].startswith("Caught "):
            original = lines[-1].split(": ", 1)[-1]  # "cnnlab....DatasetError: <message>"
            raise DatasetError(original) from None
        raise


def make_loader(dataset: Any, batch_size: int, **options: Any) -> DeviceLoader | FolderLoader:
    """A :class:`DeviceLoader` for in-memory datasets, a :class:`FolderLoader` otherwise.

    ``sample_transform`` and ``num_workers`` apply to folders only and are ignored for
    in-memory datasets (their batches are augmented whole on the device).
    """
    if isinstance(dataset, ImageTensorDataset):
        options.pop("sample_transform", None)
        options.pop("num_workers", None)
        return DeviceLoader(dataset, batch_size, **options)
    return FolderLoader(dataset, batch_size, **options)
