"""Feature maps of chosen layers for one image (the lectures' "what each layer responds to")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from cnnlab.viz.source import layer_outputs

__all__ = ["default_feature_layers", "feature_maps", "plot_feature_maps"]


def default_feature_layers(model: nn.Module) -> list[str]:
    """The stage outputs the model declares in ``feature_info`` (stem to last stage)."""
    return [stage["module"] for stage in getattr(model, "feature_info", [])]


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, layers: Sequence[str]
                 ) -> dict[str, torch.Tensor]:
    """The (C, H, W) output of each named layer for the first image of ``x``, in eval mode."""
    was = model.training
    model.eval()
    try:
        with layer_outputs(model, layers) as captured:
            model(x)
            maps = {name: captured[name][0].detach().clone() for name in layers
                    if name in captured}
    finally:
        model.train(was)
    missing = [n for n in layers if n not in maps]
    if missing:
        raise ValueError(f"layer(s) {', '.join(missing)} did not run in eval mode (an auxiliary "
                         f"head?); pick others")
    return maps


def plot_feature_maps(maps: dict[str, torch.Tensor], *, channels: int = 16,
                      image: torch.Tensor | None = None, title: str = ""):  # -> Figure
    """One row per layer: the ``channels`` most active maps (largest mean), each scaled to
    its own range; the input image first when given (H, W, C in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(channels, max(m.shape[0] for m in maps.values())) + (image is not None)
    rows = len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.35 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, (name, fmap) in enumerate(maps.items()):
        start = 0
        if image is not None:
            img = image.numpy()
            axes[r][0].imshow(img[..., 0] if img.shape[2] == 1 else img,
                              cmap="gray" if img.shape[2] == 1 else None)
            start = 1
        order = fmap.flatten(1).mean(1).argsort(descending=True)[: cols - start]
        for j, ch in enumerate(order.tolist()):
            ax = axes[r][start + j]
            ax.imshow(fmap[ch].float().numpy(), cmap="viridis")
            shape = "x".join(map(str, fmap.shape))
            ax.set_title(f"{name} ({shape})\nchannel {ch}" if j == 0 else str(ch), fontsize=6,
                         loc="left" if j == 0 else "center")
    fig.suptitle(title or "feature maps: the most active channels per layer, each scaled to "
                 "its own range", fontsize=8)
    fig.tight_layout()
    return fig
