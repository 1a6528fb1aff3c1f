"""The filter grid of a convolution: AlexNet's 96 11x11x3 first-layer kernels (Krizhevsky et
al. 2012, Fig. 3), ZFNet's 7x7 ones (Zeiler & Fergus 2014, Fig. 6).

Each filter is min-max normalised on its own (over all its input channels together), so the
contrast of one filter says nothing about its norm relative to the others. 3-channel kernels
are drawn in colour, 1-channel ones in grey; deeper kernels show one input channel's slice.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

__all__ = ["conv_layers", "filter_grid", "plot_filters"]

NORMALISATION = "each filter min-max scaled to [0, 1] on its own (over its input channels)"


def conv_layers(model: nn.Module) -> list[str]:
    """Qualified names of the 2-D convolutions, in definition order (the first is the stem)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def filter_grid(weight: torch.Tensor, *, columns: int | None = None, channel: int = 0,
                gap: int = 1) -> np.ndarray:
    """Tile the kernels of ``weight`` (out, in, kh, kw) into one image.

    Returns (rows * (kh + gap) - gap, columns * (kw + gap) - gap, 3) for in = 3, else the same
    with one channel (the slice ``channel`` of each kernel, or the only one). ``columns``
    defaults to ceil(sqrt(out)); gaps and unused cells are white (1.0).
    """
    if weight.dim() != 4:
        raise ValueError(f"expected a conv weight (out, in, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    out, cin, kh, kw = weight.shape
    if cin == 3:
        kernels = weight.detach().float()
    else:
        if not 0 <= channel < cin:
            raise ValueError(f"channel {channel} out of range for {cin} input channels")
        kernels = weight.detach().float()[:, channel : channel + 1]
    flat = kernels.reshape(out, -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    kernels = (kernels - lo.view(-1, 1, 1, 1)) / scale.view(-1, 1, 1, 1)
    cols = columns or math.ceil(math.sqrt(out))
    rows = math.ceil(out / cols)
    depth = kernels.shape[1]
    grid = np.ones((rows * (kh + gap) - gap, cols * (kw + gap) - gap, depth), dtype=np.float32)
    for i in range(out):
        r, c = divmod(i, cols)
        y, x = r * (kh + gap), c * (kw + gap)
        grid[y : y + kh, x : x + kw] = kernels[i].permute(1, 2, 0).numpy()
    return grid


def plot_filters(model: nn.Module, layer: str | None = None, *, title: str = ""):  # -> Figure
    """A figure of ``layer``'s filter grid (the first convolution by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnlab.viz.source import find_layer

    convs = conv_layers(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no 2-D convolution to show")
    name = layer or convs[0]
    conv = find_layer(model, name, convs)
    grid = filter_grid(conv.weight)
    out, cin, kh, kw = conv.weight.shape
    side = min(10.0, max(3.0, grid.shape[1] / 12))
    fig, ax = plt.subplots(figsize=(side, side * grid.shape[0] / grid.shape[1] + 0.6))
    if grid.shape[2] == 3:
        ax.imshow(grid, interpolation="nearest")
    else:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    shown = "" if cin in (1, 3) else ", input channel 0"
    ax.set_title(f"{title or type(model).__name__} {name}: {out} filters {kh}x{kw}x{cin}{shown}"
                 f"\n{NORMALISATION}", fontsize=8)
    fig.tight_layout()
    return fig
