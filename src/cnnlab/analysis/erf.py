"""Effective receptive field (Luo, Li, Urtasun, Zemel, NeurIPS 2016).

The theoretical receptive field says which pixels *can* affect a unit; the effective one
measures how much each does: the gradient of the centre unit of a layer w.r.t. the input
(Sec. 2 of the paper: set the output gradient to 1 at the centre, 0 elsewhere, and
back-propagate), averaged in absolute value over random inputs and summed over channels.
Its mass concentrates in a roughly Gaussian blob much smaller than the theoretical field.
This runs a real forward and backward, so use modest input sizes.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

__all__ = ["EffectiveRF", "effective_receptive_field"]


@dataclass(frozen=True)
class EffectiveRF:
    """``map``: |d centre / d input| (H, W), summed over channels and averaged over samples;
    ``radius``: Euclidean radius around ``centre`` (input pixels) holding ``mass`` of it."""

    map: torch.Tensor
    radius: float
    centre: tuple[float, float]
    mass: float


def _layer(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        close = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"no layer named {layer!r} in {type(model).__name__}{hint}")
    return modules[layer]


def effective_receptive_field(
    model: nn.Module | str,
    layer: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    *,
    samples: int = 4,
    mass: float = 0.95,
    seed: int = 0,
    max_bytes: int | None = None,
) -> EffectiveRF:
    """The ERF of the centre unit of ``layer``'s output (a registered name builds the model
    with its default random initialisation, as the paper studies untrained nets too).

    Before anything is allocated, the analyser's activation memory at ``input_size`` (kept
    for backward, plus as much again for the gradients) must fit in ``max_bytes`` (default:
    half the memory available now); otherwise a ValueError says how much it would need."""
    if isinstance(model, str):
        from cnnlab.registry import create_model

        model = create_model(model)
    c, h, w = input_size
    if min(input_size) < 1 or samples < 1 or not 0 < mass <= 1:
        raise ValueError(f"need positive sizes, samples >= 1 and 0 < mass <= 1, got "
                         f"{input_size}, {samples}, {mass}")
    target = _layer(model, layer)
    _check_memory(model, input_size, max_bytes)
    captured: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        captured["out"] = out[0] if isinstance(out, (tuple, list)) else out

    handle = target.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    grads = torch.zeros(h, w)
    try:
        for _ in range(samples):
            x = torch.randn(1, c, h, w, generator=generator).requires_grad_(True)
            model(x)
            if "out" not in captured:
                raise ValueError(f"layer {layer!r} is not run by {type(model).__name__}'s "
                                 f"forward in eval mode (an auxiliary head?); pick another layer")
            out = captured["out"]
            if out.dim() != 4:
                raise ValueError(f"layer {layer!r} gives shape {tuple(out.shape)}, not a 4-D map")
            oh, ow = out.shape[-2:]
            out[:, :, oh // 2, ow // 2].sum().backward()
            grads += x.grad[0].abs().sum(0)  # type: ignore[index]
    finally:
        handle.remove()
        model.train(was_training)
    grads /= samples
    cy, cx = _centre(grads)
    return EffectiveRF(grads, _radius(grads, (cy, cx), mass), (cy, cx), mass)


def available_memory() -> int:
    """Bytes of memory available now (Linux: MemAvailable; elsewhere the physical total)."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_memory(model: nn.Module, input_size: tuple[int, int, int], max_bytes: int | None
                  ) -> None:
    from cnnlab.analysis.summary import summarize

    summary = summarize(model, input_size)
    need = 2 * summary.activation_bytes + summary.param_bytes
    budget = available_memory() // 2 if max_bytes is None else max_bytes
    if need > budget:
        size = "x".join(map(str, input_size))
        raise ValueError(
            f"the ERF at {size} needs about {need / 2**30:,.1f} GiB (activations and their "
            f"gradients), more than the {budget / 2**30:,.1f} GiB it may use; "
            "try a smaller --input")


def _centre(grads: torch.Tensor) -> tuple[float, float]:
    """Centre of mass of the map: where the centre unit looks."""
    total = grads.sum()
    if total == 0:
        raise ValueError("the gradient is zero everywhere; the layer does not depend on the input")
    ys = torch.arange(grads.shape[0], dtype=grads.dtype)
    xs = torch.arange(grads.shape[1], dtype=grads.dtype)
    return float((grads.sum(1) * ys).sum() / total), float((grads.sum(0) * xs).sum() / total)


def _radius(grads: torch.Tensor, centre: tuple[float, float], mass: float) -> float:
    h, w = grads.shape
    ys = torch.arange(h, dtype=torch.float64)[:, None] - centre[0]
    xs = torch.arange(w, dtype=torch.float64)[None, :] - centre[1]
    dist = (ys**2 + xs**2).sqrt().flatten()
    order = dist.argsort()
    cum = grads.flatten().double()[order].cumsum(0)
    k = int(torch.searchsorted(cum, mass * cum[-1]).clamp(max=len(cum) - 1))
    return math.ceil(float(dist[order][k]) * 100) / 100
