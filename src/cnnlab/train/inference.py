"""Using trained checkpoints: ensemble evaluation (optionally ten-crop) and prediction.

Several checkpoints are averaged as an ensemble, as the ILSVRC entries were (Krizhevsky et
al. 2012, Sec. 6: "averaging the predictions of five similar CNNs"); the ten-crop view is
the four corners and the centre, and their mirror images (Sec. 4.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnlab.registry import create_model, model_info
from cnnlab.train.checkpoint import load_checkpoint
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
    top1_error: float  # percent
    top5_error: float
    images: int
    members: int
    split: str
    ten_crop: bool


def load_member(path: str | Path, device: torch.device | str = "cpu") -> Member:
    """The model of a checkpoint (its EMA weights when training kept them), in eval mode."""
    ckpt = load_checkpoint(path)
    run = dict(ckpt.get("run") or {})
    name = ckpt["model_name"]
    model = create_model(name, num_classes=run.get("num_classes"), in_chans=run.get("in_chans"))
    model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    return Member(name, model.to(device).eval(), run, Path(path))


def _model_hw(member: Member) -> tuple[int, int]:
    fixed = getattr(member.model, "fixed_input_size", None)
    if fixed is not None:
        return tuple(fixed)  # type: ignore[return-value]
    h, w = model_info(member.name).input_size[1:]
    return h, w


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
    hit1 = (top[:, 0] == labels).float().mean().item()
    hit5 = (top == labels[:, None]).any(1).float().mean().item()
    return EvalResult(100.0 * (1 - hit1), 100.0 * (1 - hit5), len(labels), len(members),
                      split, ten_crop)


@torch.no_grad()
def predict_images(path: str | Path, images: Sequence[str | Path], topk: int = 5,
                   device: torch.device | str = "cpu") -> list[list[tuple[str, float]]]:
    """For each image file, the ``topk`` (class name, probability) pairs."""
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
    results = []
    for file in images:
        file = Path(file)
        if file.is_dir():
            raise IsADirectoryError(f"image {str(file)!r} is a folder; give image files")
        if not file.is_file():
            raise FileNotFoundError(f"image {str(file)!r} does not exist")
        try:
            with Image.open(file) as opened:
                im = opened.convert("L" if c == 1 else "RGB")
            x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            x = x.view(im.height, im.width, c).permute(2, 0, 1)[None].contiguous()
        except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"{file}: not a readable image ({exc})") from None
        x = T.center_crop(T.resize(x, min(h, w)), (h, w))
        x = fit_in(T.normalize(x, mean, std).to(device))
        p = m.model(x).softmax(-1)[0]
        values, idx = p.topk(min(topk, p.numel()))
        results.append([(classes[i], float(v)) for v, i in zip(values, idx.tolist(), strict=True)])
    return results
