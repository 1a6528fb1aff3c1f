"""Using trained checkpoints: ensemble evaluation (optionally ten-crop) and prediction.

Several checkpoints are averaged as an ensemble, as the ILSVRC entries were (Krizhevsky et
al. 2012, Sec. 6: "averaging the predictions of five similar CNNs"); the ten-crop view is
the four corners and the centre, and their mirror images (Sec. 4.1).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnlab.registry import create_model, model_info
from cnnlab.train.checkpoint import load_checkpoint, registered_model
from cnnlab.train.engine import InputFit
from cnnlab.train.run import IMAGENET_MEAN, IMAGENET_STD, check_model_data, image_shape

__all__ = ["EvalResult", "Member", "evaluate_checkpoints", "load_member", "predict_images"]


@dataclass
class Member:
    """A trained model ready for inference, and what it was trained on."""

    name: str
    model: nn.Module
    run: dict[str, Any]
    path: Path


@dataclass(frozen=True)
class EvalResult:
    """Accuracies in percent (as in training's metrics); the errors are 100 minus them."""

    top1: float
    top5: float
    images: int
    members: int
    split: str
    ten_crop: bool
    classes: list[str] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # [true][predicted] counts

    @property
    def top1_error(self) -> float:
        return 100.0 - self.top1

    @property
    def top5_error(self) -> float:
        return 100.0 - self.top5

    def per_class(self) -> list[tuple[str, int, float]]:
        """(class, images, top-1 accuracy %) for every class of the split."""
        rows = []
        for name, counts in zip(self.classes, self.confusion, strict=True):
            n = sum(counts)
            rows.append((name, n, 100.0 * counts[len(rows)] / n if n else float("nan")))
        return rows


def load_member(path: str | Path, device: torch.device | str = "cpu") -> Member:
    """The model of a checkpoint (its EMA weights when training kept them), in eval mode."""
    ckpt = load_checkpoint(path)
    run = dict(ckpt.get("run") or {})
    name = registered_model(ckpt, path)
    model = create_model(name, num_classes=run.get("num_classes"), in_chans=run.get("in_chans"),
                         **run.get("model_kwargs", {}))  # e.g. a fine-tuned transform_input
    model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    return Member(name, model.to(device).eval(), run, Path(path))


def _model_hw(member: Member) -> tuple[int, int]:
    fixed = getattr(member.model, "fixed_input_size", None)
    if fixed is not None:
        return tuple(fixed)  # type: ignore[return-value]
    h, w = model_info(member.name).input_size[1:]
    return h, w


def _resized(member: Member, in_memory: bool) -> tuple[int, int] | None:
    """The (H, W) an in-memory dataset's images were resized to in training (--set resize)."""
    if in_memory and member.run.get("resize"):
        return tuple(member.run["image_size"][1:])  # type: ignore[return-value]
    return None


@torch.no_grad()
def evaluate_checkpoints(
    paths: Sequence[str | Path],
    data: str,
    root: str | None = None,
    *,
    ten_crop: bool = False,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> EvalResult:
    """Top-1/top-5 error of the ensemble of ``paths`` (softmax probabilities averaged) on the
    dataset's test split (its val split when it has no test split)."""
    from cnnlab.data import ImageTensorDataset, load_dataset
    from cnnlab.data import transforms as T
    from cnnlab.data.loader import make_loader

    if not paths:
        raise ValueError("name at least one checkpoint to evaluate")
    members = [load_member(p, device) for p in paths]
    splits = load_dataset(data, root)
    split = "test" if "test" in splits else "val"
    ds = splits[split]
    shape = image_shape(ds)
    classes = len(ds.classes)
    in_memory = isinstance(ds, ImageTensorDataset)

    fits: list[InputFit] = []
    for m in members:
        mean = m.run.get("mean", IMAGENET_MEAN)
        std = m.run.get("std", IMAGENET_STD)
        if ten_crop:
            crop = _model_hw(m)
            if shape[1] <= crop[0] or shape[2] <= crop[1]:
                raise ValueError(
                    f"--ten-crop needs images larger than {m.name}'s {crop[0]}x{crop[1]} input; "
                    f"{data}'s are {shape[1]}x{shape[2]}"
                )
            probe_shape = (shape[0], *crop)
        elif _resized(m, in_memory):
            probe_shape = (shape[0], *_resized(m, in_memory))  # type: ignore[misc]
        else:
            probe_shape = shape
        fits.append(check_model_data(m.model, f"{m.name} ({m.path.name})", data_name=data,
                                     shape=probe_shape, num_classes=classes, mean=mean, std=std))
    # One pass over the data per member, each with its own training statistics.
    probs: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    for m, fit_in in zip(members, fits, strict=True):
        kw: dict[str, Any] = dict(mean=m.run.get("mean", IMAGENET_MEAN),
                                  std=m.run.get("std", IMAGENET_STD), device=device)
        if not in_memory:
            from cnnlab.train.run import WORKERS, _folder_sizing

            side = _model_hw(m)[0]
            # ten-crop: the whole central 256x256 (for 224 crops), as Krizhevsky et al. 2012
            sizing = (_folder_sizing(round(side * 256 / 224), round(side * 256 / 224))
                      if ten_crop else _folder_sizing(side))
            kw |= dict(sample_transform=sizing, num_workers=WORKERS)
        if _resized(m, in_memory):  # trained on resized images: tested on them too
            kw["resize"] = _resized(m, in_memory)
        loader = make_loader(ds, batch_size, shuffle=False, **kw)
        chunks, ys = [], []
        for x, y in loader:
            if ten_crop:
                n = x.shape[0]
                crops = T.ten_crop(x, _model_hw(m))
                p = m.model(fit_in(crops)).softmax(-1).view(n, 10, -1).mean(1)
            else:
                p = m.model(fit_in(x)).softmax(-1)
            chunks.append(p.float())
            ys.append(y)
        member_probs = torch.cat(chunks)
        probs = member_probs if probs is None else probs + member_probs
        labels = torch.cat(ys)
    assert probs is not None and labels is not None
    top = probs.topk(min(5, probs.shape[1]), dim=1).indices
    hit1 = (top[:, 0] == labels).double().mean().item()
    hit5 = (top == labels[:, None]).any(1).double().mean().item()
    pairs = labels.cpu() * classes + top[:, 0].cpu()  # (true, predicted) as one index
    confusion = torch.bincount(pairs, minlength=classes * classes).view(classes, classes)
    return EvalResult(100.0 * hit1, 100.0 * hit5, len(labels), len(members), split, ten_crop,
                      list(ds.classes), confusion.tolist())


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")


def _image_files(images: Sequence[str | Path]) -> list[Path]:
    """The files named, with each folder replaced by the images in it (sorted, recursive)."""
    files: list[Path] = []
    for item in map(Path, images):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"folder {str(item)!r} holds no image files "
                                 f"({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
            files.extend(found)
        elif not item.is_file():
            raise FileNotFoundError(f"image {str(item)!r} does not exist")
        else:
            files.append(item)
    return files


@torch.no_grad()
def predict_images(path: str | Path, images: Sequence[str | Path], topk: int = 5,
                   device: torch.device | str = "cpu",
                   on_skip: Callable[[str, str], None] | None = None,
                   ) -> list[tuple[str, list[tuple[str, float]]]]:
    """For each image file (folders: every image in them), the ``topk`` (class name,
    probability) pairs. An unreadable image is skipped and reported to ``on_skip(path,
    reason)``; when no image could be read, that is an error."""
    from PIL import Image

    from cnnlab.data import transforms as T

    m = load_member(path, device)
    c, h, w = m.run.get("image_size", [m.run.get("in_chans", 3), *_model_hw(m)])
    classes = m.run.get("classes") or [str(i) for i in range(m.run.get("num_classes", 0))]
    mean, std = m.run.get("mean", IMAGENET_MEAN), m.run.get("std", IMAGENET_STD)
    fit_in = check_model_data(m.model, m.name, data_name="the checkpoint's data",
                              shape=(c, h, w), num_classes=len(classes), mean=mean, std=std)
    if topk < 1:
        raise ValueError(f"--topk must be at least 1, got {topk}")
    files = _image_files(images)
    results, skipped = [], []
    for file in files:
        try:
            with warnings.catch_warnings():  # Pillow's bomb warning: refused, in one line
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file) as opened:
                    im = opened.convert("L" if c == 1 else "RGB")
            x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            x = x.view(im.height, im.width, c).permute(2, 0, 1)[None].contiguous()
        except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning,
                ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            reason = f"{file}: not a readable image ({why})"
            skipped.append(reason)
            if on_skip is not None and len(files) > 1:  # one image: the error says it
                on_skip(str(file), reason)
            continue
        x = T.center_crop(T.resize(x, min(h, w)), (h, w))
        x = fit_in(T.normalize(x, mean, std).to(device))
        p = m.model(x).softmax(-1)[0]
        values, idx = p.topk(min(topk, p.numel()))
        results.append((str(file), [(classes[i], float(v))
                                    for v, i in zip(values, idx.tolist(), strict=True)]))
    if not results:
        raise ValueError(skipped[0] if len(skipped) == 1
                         else f"none of the {len(files)} images could be read ({skipped[0]})")
    return results
