"""Class activation maps: CAM (Zhou et al. 2016), Grad-CAM (Selvaraju et al. 2017) and
Grad-CAM++ (Chattopadhyay et al. 2018), with a faithfulness check beside each map.

The layer's activation and its gradient are captured with a *tensor* hook put on the layer's
output during the forward pass, not a module backward hook: an in-place ReLU after the layer
rewrites that output, which breaks module backward hooks, while a tensor hook registered
before the rewrite still receives the gradient of the value the layer produced.

Each family's default target is its last stage's output (``feature_info[-1]``): for Inception
nets the concatenated output of the last block, never one branch; auxiliary heads do not run
in eval mode and are ignored.

Faithfulness, in the spirit of ROAD (Rong et al. 2022): the drop in the class probability when
the 20% of pixels the map ranks highest are replaced by a blurred copy of the image, against
the drop when a random 20% are. A map that points at the evidence gives the larger drop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.viz.source import find_layer

__all__ = ["METHODS", "CamResult", "Faithfulness", "class_activation_map", "default_cam_layer",
           "faithfulness", "gaussian_blur", "plot_cam"]

METHODS = ("cam", "gradcam", "gradcam++")


@dataclass(frozen=True)
class CamResult:
    """``map``: (H, W) at the input's resolution, scaled to [0, 1]; ``raw``: the layer's
    (h, w) map before upsampling and scaling; ``score``: the target's softmax probability."""

    map: torch.Tensor
    raw: torch.Tensor
    layer: str
    method: str
    target: int
    score: float


@dataclass(frozen=True)
class Faithfulness:
    """Class probability before, and its drop with the top / a random ``fraction`` of pixels
    blurred (the random drop is the mean over ``trials`` draws); the same for the class
    logit (the score Grad-CAM explains), which still moves when the probability saturates."""

    score: float
    top_drop: float
    random_drop: float
    logit: float
    logit_top_drop: float
    logit_random_drop: float
    fraction: float
    sigma: float
    trials: int


def default_cam_layer(model: nn.Module) -> str:
    """The last stage's output, as the model's ``feature_info`` names it."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} declares no feature_info; name a layer")
    return str(info[-1]["module"])


def _logits(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def class_activation_map(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: int | None = None,
    layer: str | None = None,
    method: str = "gradcam",
    valid_layers: list[str] | None = None,
) -> CamResult:
    """The map of class ``target`` (default: the predicted class) at ``layer`` (default: the
    family's, see :func:`default_cam_layer`) for the one image in ``x`` (1, C, H, W)."""
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image as a (1, C, H, W) batch, got {tuple(x.shape)}")
    layer = layer or default_cam_layer(model)
    valid = valid_layers if valid_layers is not None else [n for n, _ in model.named_modules()]
    module = find_layer(model, layer, [n for n in valid if n])
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        out = out[0] if isinstance(out, (tuple, list)) else out
        store["act"] = out.detach().clone()  # before any in-place op after the layer
        out.register_hook(lambda g: store.__setitem__("grad", g.detach()))

    was = model.training
    model.eval()
    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = _logits(model(x.detach().clone().requires_grad_(True)))
            if "act" not in store:
                raise ValueError(f"layer {layer!r} did not run in eval mode; pick another")
            if store["act"].dim() != 4:
                raise ValueError(f"layer {layer!r} gives shape {tuple(store['act'].shape)}, "
                                 f"not a feature map; pick a convolutional layer")
            classes = logits.shape[-1]
            cls = int(logits[0].argmax()) if target is None else int(target)
            if not 0 <= cls < classes:
                raise ValueError(f"--class {cls} out of range: the model has {classes} classes "
                                 f"(0..{classes - 1})")
            score = float(logits[0].detach().softmax(-1)[cls])
            if method != "cam":
                model.zero_grad(set_to_none=True)
                logits[0, cls].backward()
    finally:
        handle.remove()
        model.train(was)
    act = store["act"][0]  # (K, h, w)
    if method == "cam":
        raw = torch.einsum("k,khw->hw", _gap_weights(model, act.shape[0])[cls], act)
    else:
        raw = _grad_weighted(act, store["grad"][0], plus=method == "gradcam++")
    up = F.interpolate(raw[None, None].float(), size=x.shape[-2:], mode="bilinear",
                       align_corners=False)[0, 0]
    return CamResult(_unit(up), raw.detach(), layer, method, cls, score)


def _gap_weights(model: nn.Module, channels: int) -> torch.Tensor:
    """CAM's class weights: the last linear layer, which must read the pooled channels."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].in_features != channels:
        raise ValueError(
            f"--method cam needs a global-average-pooling net whose only linear layer reads the "
            f"layer's {channels} channels ({type(model).__name__} does not); use gradcam")
    return linears[-1].weight.detach()


def _grad_weighted(act: torch.Tensor, grad: torch.Tensor, *, plus: bool) -> torch.Tensor:
    if not plus:  # Grad-CAM, Eq. 1-2: channel weights = spatially averaged gradients
        weights = grad.mean(dim=(1, 2))
    else:  # Grad-CAM++, Eq. 19 with the exponential-score closed form for alpha
        g2, g3 = grad.pow(2), grad.pow(3)
        denom = 2 * g2 + act.sum(dim=(1, 2), keepdim=True) * g3
        alpha = torch.where(grad != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                            torch.zeros_like(grad))
        weights = (alpha * grad.clamp_min(0)).sum(dim=(1, 2))
    return torch.einsum("k,khw->hw", weights, act).clamp_min(0)


def _unit(m: torch.Tensor) -> torch.Tensor:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (N, C, H, W) batch, edges reflected."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1)
                 .expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1)
                    .expand(c, 1, -1, 1), groups=c)


@torch.no_grad()
def faithfulness(model: nn.Module, x: torch.Tensor, result: CamResult, *,
                 fraction: float = 0.2, trials: int = 5, sigma: float | None = None,
                 seed: int = 0) -> Faithfulness:
    """Blur the top ``fraction`` of pixels by the map, then a random ``fraction`` (``trials``
    times); report the class probability's drops. ``sigma`` defaults to 1/16 of the side."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    h, w = x.shape[-2:]
    sigma = sigma or max(1.0, min(h, w) / 16)
    was = model.training
    model.eval()
    blurred = gaussian_blur(x, sigma)
    k = max(1, round(fraction * h * w))

    def scores(image: torch.Tensor) -> torch.Tensor:  # (probability, logit)
        logits = _logits(model(image))[0]
        return torch.stack([logits.softmax(-1)[result.target], logits[result.target]])

    def with_blurred(idx: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(h * w, dtype=torch.bool)
        mask[idx] = True
        return scores(torch.where(mask.view(1, 1, h, w), blurred, x))

    try:
        base = scores(x)
        top = base - with_blurred(result.map.flatten().topk(k).indices)
        g = torch.Generator().manual_seed(seed)
        rand = base - torch.stack([with_blurred(torch.randperm(h * w, generator=g)[:k])
                                   for _ in range(trials)]).mean(0)
    finally:
        model.train(was)
    return Faithfulness(float(base[0]), float(top[0]), float(rand[0]), float(base[1]),
                        float(top[1]), float(rand[1]), fraction, sigma, trials)


def plot_cam(image: torch.Tensor, result: CamResult, faith: Faithfulness | None = None,
             *, class_name: str = "", title: str = ""):  # -> Figure
    """The image and the map overlaid on it (jet, half transparent), numbers below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = image.numpy()
    grey = img.shape[2] == 1
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.6))
    for ax in axes:
        ax.imshow(img[..., 0] if grey else img, cmap="gray" if grey else None)
        ax.set_axis_off()
    axes[1].imshow(result.map.numpy(), cmap="jet", alpha=0.5)
    label = class_name or str(result.target)
    axes[0].set_title(title or "input", fontsize=8)
    axes[1].set_title(f"{result.method} @ {result.layer}: class {label} (p={result.score:.3f})",
                      fontsize=8)
    if faith is not None:
        fig.text(0.5, 0.02, f"blur top {faith.fraction:.0%} of pixels: p drops "
                 f"{faith.top_drop:+.3f}, logit {faith.logit_top_drop:+.2f}; random "
                 f"{faith.fraction:.0%}: p {faith.random_drop:+.3f}, logit "
                 f"{faith.logit_random_drop:+.2f} (mean of {faith.trials}; Gaussian sigma "
                 f"{faith.sigma:g} px)", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
