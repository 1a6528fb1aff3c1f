"""What a figure is drawn from: a model (a checkpoint's trained weights or a registered name's
random initialisation), an image brought to that model's input, and the layers it can show."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["Source", "find_layer", "layer_outputs", "load_image", "load_source", "map_layers"]


@dataclass
class Source:
    """A model in eval mode and what its inputs look like: ``image_size`` (C, H, W) of the
    images it was trained on, their per-channel ``mean``/``std`` and the class names."""

    name: str
    model: nn.Module
    image_size: tuple[int, int, int]
    mean: Sequence[float]
    std: Sequence[float]
    classes: list[str] = field(default_factory=list)
    trained: bool = True


def load_source(checkpoint_or_model: str | Path) -> Source:
    """A checkpoint file (``cnnlab train``'s checkpoint.pt), or a registered model name, whose
    weights are then the paper's random initialisation (seeded, for repeatable pictures)."""
    from cnnlab.registry import create_model, list_models, model_info

    text = str(checkpoint_or_model)
    path = Path(text)
    if path.is_file():
        from cnnlab.train.inference import load_member

        m = load_member(path)
        c, h, w = m.run.get("image_size") or model_info(m.name).input_size
        classes = list(m.run.get("classes") or [])
        return Source(m.name, m.model, (c, h, w), m.run.get("mean", IMAGENET_MEAN[:c]),
                      m.run.get("std", IMAGENET_STD[:c]), classes)
    if text not in list_models():
        close = difflib.get_close_matches(text, list_models(), n=3, cutoff=0.6)
        hint = f" (closest model names: {', '.join(close)})" if close else ""
        raise ValueError(f"{text!r} is neither a checkpoint file nor a registered model "
                         f"name{hint}; see `cnnlab models`")
    info = model_info(text)
    torch.manual_seed(0)
    model = create_model(text).eval()
    c = info.input_size[0]
    mean = IMAGENET_MEAN if c == 3 else (0.5,) * c
    std = IMAGENET_STD if c == 3 else (0.5,) * c
    return Source(text, model, info.input_size, mean, std, [], trained=False)


def load_image(path: str | Path, source: Source) -> tuple[torch.Tensor, torch.Tensor]:
    """``path`` read with Pillow and brought to the model's input as training did (resize the
    shorter side, centre crop, normalise, pad to a fixed input): the batch ``(1, C, H, W)``
    and the same picture in [0, 1] for display, ``(H, W, C)``."""
    from PIL import Image

    from cnnlab.data import transforms as T
    from cnnlab.train.run import check_model_data

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"image {str(path)!r} is a folder; give an image file")
    if not path.is_file():
        raise ValueError(f"image {str(path)!r} does not exist")
    c, h, w = source.image_size
    try:
        with Image.open(path) as opened:
            im = opened.convert("L" if c == 1 else "RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    x = x.view(im.height, im.width, c).permute(2, 0, 1)[None].contiguous()
    x = T.center_crop(T.resize(x, min(h, w)), (h, w))
    fit_in = check_model_data(source.model, source.name, data_name=str(path), shape=(c, h, w),
                              num_classes=_num_classes(source), mean=source.mean, std=source.std)
    batch = fit_in(T.normalize(x, source.mean, source.std))
    mean = torch.tensor(source.mean).view(1, c, 1, 1)
    std = torch.tensor(source.std).view(1, c, 1, 1)
    display = (batch * std + mean).clamp(0, 1)[0].permute(1, 2, 0)
    return batch, display


def _num_classes(source: Source) -> int:
    if source.classes:
        return len(source.classes)
    linears = [m for m in source.model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1].out_features
    with torch.no_grad():  # a net without a linear head (NiN): ask it
        out = source.model(torch.zeros(1, *_model_input(source)))
    return int(out.shape[-1])


def _model_input(source: Source) -> tuple[int, int, int]:
    fixed = getattr(source.model, "fixed_input_size", None)
    c = source.image_size[0]
    return (c, *fixed) if fixed is not None else source.image_size


def map_layers(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, tuple[int, ...]]:
    """Every module whose output is a 4-D feature map, in execution order, with its shape
    (one forward on meta tensors, so any model and input size costs the same)."""
    from cnnlab.analysis.summary import summarize

    summary = summarize(model, input_size)
    return {name: tuple(shape[1:]) for name, (shape, _rf) in summary.module_outputs.items()
            if name and shape is not None and len(shape) == 4}


def find_layer(model: nn.Module, name: str, valid: Sequence[str]) -> nn.Module:
    """The module ``name``, or a one-line ValueError naming the valid layers."""
    modules = dict(model.named_modules())
    if name in valid and name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    shown = list(valid) if len(valid) <= 12 else [*valid[:6], "...", *valid[-3:]]
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ValueError(f"no feature-map layer {name!r} in {type(model).__name__}{hint}; valid: "
                     f"{', '.join(shown)} ({len(valid)} in all; `cnnlab viz cam --list-layers "
                     f"MODEL` lists them)")


@contextmanager
def layer_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, each forward of ``model`` fills the dict with the outputs of the
    named modules (the tensors themselves, so gradient hooks can be put on them)."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            captured[name] = out[0] if isinstance(out, (tuple, list)) else out

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
