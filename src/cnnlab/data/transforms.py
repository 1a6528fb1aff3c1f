"""Batched augmentation on uint8 (or float) NCHW tensors, on whatever device they live on.

Every function takes a whole batch and returns one; randomness comes only from an explicit
CPU ``torch.Generator`` (a few numbers per image, moved to the batch's device), so a seed makes
the same draws on CPU and GPU (crops and flips are then the same bytes; resampling transforms
may differ by float rounding). uint8 in -> uint8 out (rounded and clamped), except
:func:`normalize`, which returns float32. Pixel-valued constants are in [0, 1] units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.data.dataset import PixelMoments

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_PCA",
    "IMAGENET_STD",
    "center_crop",
    "Normalizer",
    "normalize",
    "pca_lighting",
    "random_crop",
    "random_flip",
    "random_resized_crop",
    "resize",
    "resized_crop_boxes",
    "rgb_eigen",
    "scale_jitter",
    "ten_crop",
]

# ImageNet's per-channel mean and std in [0, 1] units, as torchvision's weights expect them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ImageNet's RGB eigenvalues/eigenvectors (columns) in [0, 1] units, as fb.resnet.torch and most
# ResNet-era code use them for Krizhevsky et al.'s colour augmentation; rgb_eigen recomputes.
IMAGENET_PCA = (
    torch.tensor([0.2175, 0.0188, 0.0045]),
    torch.tensor([
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]),
)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _check_batch(x: torch.Tensor, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} expects an (N, C, H, W) batch, got shape {tuple(x.shape)}")


def _uniform(shape: Sequence[int], generator: torch.Generator | None) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the CPU, so results do not depend on the device."""
    return torch.rand(*shape, generator=generator, dtype=torch.float64)


def _like_input(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cast a float result back to the input's dtype (uint8: round and clamp)."""
    if x.dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(x.dtype)


def random_crop(
    x: torch.Tensor,
    size: int | Sequence[int],
    padding: int = 0,
    mode: str = "zero",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random ``size`` window of each image after padding by ``padding`` pixels per side.

    Zero padding is the CIFAR recipe of He et al. 2016 (Sec. 4.2: "4 pixels are padded on each
    side, and a 32x32 crop is randomly sampled"); ``mode="reflect"`` mirrors the border instead.
    The batch is padded once; every output row is then a slice of that padded copy, and all
    N*C*size slices are taken by one ``index_select`` on a view whose row k is the
    ``size``-wide slice starting at flat offset k (no per-pixel index tensors).
    """
    _check_batch(x, "random_crop")
    n, c, h, w = x.shape
    th, tw = _pair(size)
    if mode == "zero":
        padded = F.pad(x, (padding,) * 4) if padding else x
    elif mode == "reflect":
        if padding >= min(h, w):
            raise ValueError(f"reflect padding {padding} must be smaller than the image ({h}x{w})")
        rows = _reflect_index(h, padding, x.device)
        cols = _reflect_index(w, padding, x.device)
        padded = x.index_select(2, rows).index_select(3, cols)
    else:
        raise ValueError(f"padding mode must be 'zero' or 'reflect', got {mode!r}")
    ph, pw = padded.shape[2:]
    if th > ph or tw > pw:
        raise ValueError(f"crop {th}x{tw} is larger than the padded image {ph}x{pw}")
    offsets = _uniform((n, 2), generator)
    top = (offsets[:, 0] * (ph - th + 1)).long().to(x.device)
    left = (offsets[:, 1] * (pw - tw + 1)).long().to(x.device)
    return _take_windows(padded.contiguous(), top, left, th, tw)


def _take_windows(
    padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, th: int, tw: int
) -> torch.Tensor:
    """Image i's ``th`` x ``tw`` window at (top[i], left[i]), for every image, as slices."""
    n, c, ph, pw = padded.shape
    flat = padded.reshape(-1)
    slices = flat.as_strided((flat.numel() - tw + 1, tw), (1, 1))  # row k = flat[k : k + tw]
    device = padded.device
    rows = (
        (torch.arange(n, device=device) * (c * ph) + top)[:, None, None]
        + (torch.arange(c, device=device) * ph)[None, :, None]
        + torch.arange(th, device=device)[None, None, :]
    )
    starts = rows * pw + left[:, None, None]
    return slices.index_select(0, starts.reshape(-1)).view(n, c, th, tw)


def _reflect_index(length: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source index of each position of a reflect-padded axis (edge not repeated: 2 1 | 0 1 2)."""
    i = torch.arange(-pad, length + pad, device=device).abs()
    return torch.where(i >= length, 2 * (length - 1) - i, i)


def random_flip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (Krizhevsky et al. 2012, Sec. 4.1)."""
    _check_batch(x, "random_flip")
    n = len(x)
    flipped = (_uniform((n,), generator) < p).to(x.device)
    # image i is row i of [x; mirrored x] or row n + i: one select, ~5x faster than torch.where
    source = torch.arange(n, device=x.device) + n * flipped.long()
    return torch.cat([x, x.flip(-1)]).index_select(0, source)


def _crop_and_resize(
    x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Resample each image's box (top, left, height, width in pixels) to ``size``, bilinearly.

    One batched ``grid_sample`` call; it does not antialias, so strong down-scaling aliases
    slightly more than PIL's resampling would.
    """
    n, _, h, w = x.shape
    top, left, bh, bw = boxes.to(torch.float64).unbind(1)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = bw / w
    theta[:, 0, 2] = (2 * left + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * top + bh) / h - 1
    src = x.float()
    grid = F.affine_grid(theta.to(x.device, src.dtype), [n, 1, *size], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _like_input(out, x)


def random_resized_crop(
    x: torch.Tensor,
    size: int | Sequence[int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> torch.Tensor:
    """Inception-style crop (Szegedy et al. 2015, Sec. 6: "patches of the image whose size is
    distributed evenly between 8% and 100% of the image area with aspect ratio constrained to
    the interval [3/4, 4/3]"), resized to ``size``; boxes from :func:`resized_crop_boxes`."""
    _check_batch(x, "random_resized_crop")
    n, _, h, w = x.shape
    boxes = resized_crop_boxes(n, h, w, scale, ratio, generator, attempts)
    return _crop_and_resize(x, boxes, _pair(size))


def resized_crop_boxes(
    n: int,
    h: int,
    w: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> torch.Tensor:
    """``n`` boxes (top, left, height, width) in an ``h`` x ``w`` image: area uniform in
    ``scale`` of the image, aspect ratio log-uniform in ``ratio`` (the paper says only
    "constrained to"; log-uniform is torchvision's reading), position uniform.

    Each box gets ``attempts`` tries; a box whose tries all miss falls back to the central
    crop with the ratio clamped into range (torchvision's rule).
    """
    area = h * w
    draws = _uniform((n, attempts, 4), generator)
    target = area * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draws[..., 1])
    bw = torch.sqrt(target * aspect).round()
    bh = torch.sqrt(target / aspect).round()
    ok = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
    first = ok.float().argmax(dim=1)  # first attempt that fits (0 if none)
    pick = torch.arange(n)
    bw, bh = bw[pick, first], bh[pick, first]
    top = (draws[pick, first, 2] * (h - bh + 1)).floor()
    left = (draws[pick, first, 3] * (w - bw + 1)).floor()

    fallback = ~ok.any(dim=1)
    if fallback.any():
        in_ratio = w / h
        if in_ratio < min(ratio):
            fw, fh = w, round(w / min(ratio))
        elif in_ratio > max(ratio):
            fw, fh = round(h * max(ratio)), h
        else:
            fw, fh = w, h
        bw[fallback], bh[fallback] = float(fw), float(fh)
        top[fallback], left[fallback] = float((h - fh) // 2), float((w - fw) // 2)
    return torch.stack([top, left, bh, bw], dim=1)


def scale_jitter(
    x: torch.Tensor,
    size: int,
    scale_range: tuple[int, int] = (256, 512),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """VGG's multi-scale training (Simonyan & Zisserman 2014, Sec. 3.1): rescale each image so
    its shorter side is S ~ U[S_min, S_max], then take a random ``size`` x ``size`` crop.

    Done as one resampling: the crop of side ``size`` in the rescaled image is a box of side
    ``size * min(H, W) / S`` in the original, resized to ``size``.
    """
    _check_batch(x, "scale_jitter")
    s_min, s_max = scale_range
    if not size <= s_min <= s_max:
        raise ValueError(f"scale_range {scale_range} must satisfy size ({size}) <= S_min <= S_max")
    n, _, h, w = x.shape
    draws = _uniform((n, 3), generator)
    s = (s_min + draws[:, 0] * (s_max - s_min + 1)).floor().clamp(max=s_max)
    side = size * min(h, w) / s
    top = draws[:, 1] * (h - side)
    left = draws[:, 2] * (w - side)
    return _crop_and_resize(x, torch.stack([top, left, side, side], dim=1), (size, size))


def pca_lighting(
    x: torch.Tensor,
    eigvals: torch.Tensor,
    eigvecs: torch.Tensor,
    std: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """AlexNet's "fancy PCA" (Krizhevsky et al. 2012, Sec. 4.1): add
    ``[p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T`` to every pixel of an image, with a_i ~ N(0, std)
    drawn once per image, l_i / p_i the training set's RGB eigenvalues / eigenvectors (columns)
    in [0, 1] units (:func:`rgb_eigen`). uint8 images are shifted in 0..255 units.
    """
    _check_batch(x, "pca_lighting")
    if x.shape[1] != 3:
        raise ValueError(f"pca_lighting needs RGB images, got {x.shape[1]} channels")
    alpha = torch.randn(len(x), 3, generator=generator, dtype=torch.float64) * std
    vals = torch.as_tensor(eigvals, dtype=torch.float64)
    vecs = torch.as_tensor(eigvecs, dtype=torch.float64)
    shift = (alpha * vals) @ vecs.T  # (N, 3): sum_i a_i l_i p_i
    if x.dtype == torch.uint8:
        shift = shift * 255.0
    out = x.float() + shift.to(x.device, torch.float32)[:, :, None, None]
    return _like_input(out, x)


def rgb_eigen(
    source: Any, max_images: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of the RGB covariance of a dataset's
    pixels in [0, 1] units: the statistics :func:`pca_lighting` needs.

    ``source`` is a uint8 (N, 3, H, W) tensor, an in-memory dataset (``.images``), or any
    dataset whose items are ``(uint8 CHW image, label)`` (e.g. an image folder);
    ``max_images`` draws that many images with ``seed`` instead of using all of them.
    """
    images = getattr(source, "images", source)
    count = len(images)
    if count == 0:
        raise ValueError("rgb_eigen needs at least one image")
    order: list[int] = list(range(count))
    if max_images is not None and max_images < count:
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(count, generator=generator)[:max_images].tolist()
    moments = PixelMoments(3)
    if isinstance(images, torch.Tensor):  # in memory: whole chunks at a time
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"rgb_eigen needs RGB images, got shape {tuple(images.shape)}")
        for chunk in torch.as_tensor(order).split(4096):
            moments.add(images.index_select(0, chunk.to(images.device)))
        order = []
    for i in order:
        image = images[i]
        if isinstance(image, tuple):  # a dataset item (image, label)
            image = image[0]
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"rgb_eigen needs RGB images, got shape {tuple(image.shape)}")
        moments.add(image)
    vals, vecs = torch.linalg.eigh(moments.covariance())
    return vals.flip(0).float(), vecs.flip(1).float()


def normalize(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``(x - mean) / std`` per channel as float32; uint8 input is read as ``x / 255`` first."""
    return Normalizer(mean, std)(x)


class Normalizer:
    """:func:`normalize` with its per-channel factors made once, for a loader's every batch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise ValueError(f"normalize: {len(mean)} means but {len(std)} stds")
        m = torch.tensor(mean, dtype=torch.float64)
        s = torch.tensor(std, dtype=torch.float64)
        # one multiply and one subtract, x / (255 s) - m / s, over (N, C, H*W) (fastest
        # broadcast); the factors are cached per (input dtype, device)
        self._factors = {
            scale: ((1.0 / (scale * s)).float()[None, :, None], (m / s).float()[None, :, None])
            for scale in (1.0, 255.0)
        }
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}
        self.channels = len(mean)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "normalize")
        n, c, h, w = x.shape
        if c != self.channels:
            raise ValueError(
                f"normalize: {c} channels but {self.channels} means and {self.channels} stds"
            )
        key = (x.dtype, x.device)
        if key not in self._cache:
            scale = 255.0 if x.dtype == torch.uint8 else 1.0
            self._cache[key] = tuple(t.to(x.device) for t in self._factors[scale])
        factor, offset = self._cache[key]
        out = x.reshape(n, c, h * w).to(torch.float32).mul_(factor).sub_(offset)
        return out.view(n, c, h, w)


def resize(
    x: torch.Tensor, size: int | Sequence[int], antialias: bool = True
) -> torch.Tensor:
    """Bilinear resize; an int is the shorter side (aspect ratio kept), a pair is (H, W)."""
    _check_batch(x, "resize")
    h, w = x.shape[2:]
    if isinstance(size, int):
        if h <= w:
            out_size = (size, max(1, round(w * size / h)))
        else:
            out_size = (max(1, round(h * size / w)), size)
    else:
        out_size = _pair(size)
    if out_size == (h, w):
        return x
    out = F.interpolate(
        x.float(), size=out_size, mode="bilinear", align_corners=False, antialias=antialias
    )
    return _like_input(out, x)


def center_crop(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """The central ``size`` window of every image.

    An odd margin puts the extra row (column) at the bottom (right): top = floor((H - h) / 2).
    torchvision rounds half to even (``round((H - h) / 2)``), so for margins 3, 7, 11, ...
    its window sits one pixel lower (further right) than this one; other margins agree."""
    _check_batch(x, "center_crop")
    h, w = x.shape[2:]
    th, tw = _pair(size)
    if th > h or tw > w:
        raise ValueError(f"center_crop {th}x{tw} is larger than the image {h}x{w}")
    top, left = (h - th) // 2, (w - tw) // 2
    return x[:, :, top : top + th, left : left + tw]


def ten_crop(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """AlexNet's test view (Krizhevsky et al. 2012, Sec. 4.1): the four corner and the centre
    patches and their mirror images, as ``(10 * N, C, size, size)`` grouped by image
    (``logits.view(N, 10, -1).mean(1)`` averages them)."""
    _check_batch(x, "ten_crop")
    n, c, h, w = x.shape
    th, tw = _pair(size)
    if th > h or tw > w:
        raise ValueError(f"ten_crop {th}x{tw} is larger than the image {h}x{w}")
    crops = [
        x[:, :, :th, :tw],
        x[:, :, :th, w - tw :],
        x[:, :, h - th :, :tw],
        x[:, :, h - th :, w - tw :],
        center_crop(x, (th, tw)),
    ]
    crops += [crop.flip(-1) for crop in crops]
    return torch.stack(crops, dim=1).reshape(n * 10, c, th, tw)
