"""Blocks shared across families: conv-BN-activation, squeeze-excite, drop-path, make-divisible,
deformable convolution."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

__all__ = [
    "ConvBNAct", "DeformConv2d", "DeformConv2dOp", "DropPath", "Permute", "SqueezeExcite",
    "deform_conv2d", "drop_path", "make_divisible",
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (at least ``divisor``), never
    dropping more than 10%.

    The rule of the MobileNet and EfficientNet reference code (Sandler et al. 2018).
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation, as children ``0``, ``1``, ``2``.

    The numeric child names match torchvision's ``Conv2dNormActivation``, so state_dicts of
    MobileNet and EfficientNet load unchanged. ``padding`` defaults to "same" for odd kernels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        act_layer: Callable[..., nn.Module] | None = nn.ReLU,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        if padding is None:
            ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
            padding = tuple((k - 1) // 2 for k in ks)
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if act_layer is not None:
            layers.append(act_layer(inplace=True) if _takes_inplace(act_layer) else act_layer())
        super().__init__(*layers)
        self.out_channels = out_channels


def _takes_inplace(act_layer: Callable[..., nn.Module]) -> bool:
    return act_layer in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate (Hu et al. 2018): x * sigmoid(fc2(act(fc1(avgpool(x))))).

    ``fc1``/``fc2`` are 1x1 convolutions (equal to the paper's FC layers on a 1x1 map);
    the names match torchvision's ``SqueezeExcitation``.
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        gate_layer: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = act_layer()
        self.scale_activation = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): drop whole residual branches per sample.

    Survivors are scaled by 1/(1-p) at training time so that inference needs no rescaling.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --- Deformable convolution (Dai et al. 2017; modulated: Zhu et al. 2019) -------------------

def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable convolution in pure PyTorch, with ``torchvision.ops.deform_conv2d``'s
    arguments and layouts, so weights, offsets and masks interchange with it.

    ``offset``: (N, 2·G·kh·kw, H_out, W_out); channel ``2·(g·kh·kw + i·kw + j)`` is the dy and
    the next one the dx of kernel tap (i, j) for offset group g (the input's channels split
    into G = ``offset.shape[1] // (2·kh·kw)`` consecutive groups). ``mask`` (DCNv2, optional):
    (N, G·kh·kw, H_out, W_out), multiplied as given (apply the sigmoid before). Tap (i, j) of
    output (y, x) samples the input at (y·s - p + i·d + dy, x·s - p + j·d + dx) by bilinear
    interpolation; a sample's corners outside the image read 0. Convolution ``groups`` are
    ``in_channels // weight.shape[1]``.

    Cost, as the analyser counts the ops below: the final 1x1 convolution of the sampled
    columns holds exactly the regular convolution's C_out·(C_in/groups)·kh·kw·H_out·W_out
    MACs; the sampling is elementwise work (the analyser's "other ops"): 8 per sampled value
    (four corner products, a sum of four; C_in·kh·kw·H_out·W_out values), 1 more with a
    mask, 62 per sampling position (G·kh·kw·H_out·W_out: coordinates, floors, corner weights,
    bounds and indices) and kh + kw + (kh·kw + 2)·(H_out + W_out) for the regular grid; the
    corner gather is a read (0).
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    n, c, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    taps = kh * kw
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if c % c_per_group or c_out % (c // c_per_group):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit {c} input channels")
    groups = c // c_per_group
    offset_groups = offset.shape[1] // (2 * taps)
    if (offset.shape[1] != 2 * offset_groups * taps or offset_groups == 0
            or c % offset_groups or tuple(offset.shape[-2:]) != (h_out, w_out)):
        raise ValueError(f"offset {tuple(offset.shape)} must be (N, 2*offset_groups*{taps}, "
                         f"{h_out}, {w_out}) with offset_groups dividing {c} channels")
    if mask is not None and tuple(mask.shape[1:]) != (offset_groups * taps, h_out, w_out):
        raise ValueError(f"mask {tuple(mask.shape)} must be (N, {offset_groups * taps}, "
                         f"{h_out}, {w_out})")

    # Sampling positions, (N, G, taps, H_out, W_out): the regular grid plus the offsets.
    offset = offset.view(n, offset_groups, taps, 2, h_out, w_out)
    # Tap i·kw + j (row-major) sits at (i·d, j·d) in the kernel.
    kernel_y = (torch.arange(kh, device=x.device, dtype=x.dtype) * dh).view(kh, 1)
    kernel_x = (torch.arange(kw, device=x.device, dtype=x.dtype) * dw).view(1, kw)
    kernel_y, kernel_x = (k.expand(kh, kw).reshape(taps) for k in (kernel_y, kernel_x))
    grid_y = torch.arange(h_out, device=x.device, dtype=x.dtype) * sh - ph
    grid_x = torch.arange(w_out, device=x.device, dtype=x.dtype) * sw - pw
    pos_y = offset[:, :, :, 0] + (kernel_y.view(taps, 1, 1) + grid_y.view(1, h_out, 1))
    pos_x = offset[:, :, :, 1] + (kernel_x.view(taps, 1, 1) + grid_x.view(1, 1, w_out))
    columns = _bilinear_gather(x.view(n, offset_groups, c // offset_groups, h * w),
                               pos_y, pos_x, h, w)  # (N, G, C/G, taps, L)
    if mask is not None:
        columns = columns * mask.view(n, offset_groups, 1, taps, h_out * w_out)
    # The convolution proper is a 1x1 convolution of the sampled columns, (N, C·taps, H_out,
    # W_out) with channels in (c, tap) order, the weight's own (C/groups, kh, kw) order.
    columns = columns.reshape(n, c * taps, h_out, w_out)
    return F.conv2d(columns, weight.reshape(c_out, c_per_group * taps, 1, 1), bias,
                    groups=groups)


def _bilinear_gather(x: torch.Tensor, pos_y: torch.Tensor, pos_x: torch.Tensor,
                     h: int, w: int) -> torch.Tensor:
    """Bilinear samples of ``x`` (N, G, C', H·W) at positions (N, G, taps, H_out, W_out):
    (N, G, C', taps, H_out·W_out). A corner outside the image contributes 0 (torchvision's
    convention: a sample entirely beyond one pixel of the border is 0)."""
    n, groups, channels, _ = x.shape
    y0, x0 = pos_y.floor(), pos_x.floor()
    ly, lx = pos_y - y0, pos_x - x0
    y1, x1, hy, hx = y0 + 1, x0 + 1, 1 - ly, 1 - lx
    # The four corners along a new dim: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
    cy, cx = torch.stack((y0, y0, y1, y1), 2), torch.stack((x0, x1, x0, x1), 2)
    wy, wx = torch.stack((hy, hy, ly, ly), 2), torch.stack((hx, lx, hx, lx), 2)
    inside = (cy >= 0) & (cy <= h - 1) & (cx >= 0) & (cx <= w - 1)
    index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long()
    weight = (wy * wx * inside).view(n, groups, 1, 4, -1)
    values = x.gather(3, index.view(n, groups, 1, -1).expand(n, groups, channels, -1))
    values = (values.view(n, groups, channels, 4, -1) * weight).sum(3)
    return values.view(n, groups, channels, pos_y.shape[2], -1)


class DeformConv2dOp(nn.Module):
    """The sampling and convolution of :func:`deform_conv2d` as a leaf module without
    parameters, so the analyser reports it as one row (MACs: the regular convolution's
    count; other ops: the sampling), with the kernel and stride shown."""

    def __init__(self, kernel_size: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = (
            kernel_size, stride, padding, dilation)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return deform_conv2d(x, offset, weight, bias, self.stride, self.padding, self.dilation,
                             mask)


class DeformConv2d(nn.Module):
    """A deformable convolution that predicts its own offsets (Dai et al. 2017, Sec. 2.1).

    A regular ``conv_offset`` (same kernel, stride, padding, dilation; 2·G·kh·kw outputs)
    reads the input and predicts the offsets; it is "initialized to zero" (Sec. 2.1), so at
    initialisation the layer is exactly the regular convolution of ``weight``. With
    ``modulated=True`` (DCNv2, Zhu et al. 2019, Eq. 3) the same conv also predicts G·kh·kw
    modulation scalars, passed through a sigmoid (0.5 at initialisation, as in the paper).
    ``weight``/``bias`` have ``nn.Conv2d``'s (and ``torchvision.ops.DeformConv2d``'s) shapes.

    MACs (the analyser's convention): the convolution's C_out·(C_in/groups)·kh·kw·H_out·W_out
    plus the offset conv's own; bilinear sampling is counted as other ops.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        offset_groups: int = 1,
        modulated: bool = False,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups {groups} must divide in_channels {in_channels} and "
                             f"out_channels {out_channels}")
        if in_channels % offset_groups:
            raise ValueError(f"offset_groups {offset_groups} must divide in_channels "
                             f"{in_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.offset_groups, self.modulated = groups, offset_groups, modulated
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        predicted = offset_groups * kh * kw * (3 if modulated else 2)
        self.conv_offset = nn.Conv2d(in_channels, predicted, self.kernel_size, self.stride,
                                     self.padding, self.dilation)
        self.deform = DeformConv2dOp(self.kernel_size, self.stride, self.padding, self.dilation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The weight as nn.Conv2d initialises it; the offset (and mask) predictor at zero.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        predicted = self.conv_offset(x)
        mask = None
        if self.modulated:
            n_offsets = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
            predicted, mask = predicted[:, :n_offsets], predicted[:, n_offsets:].sigmoid()
        return self.deform(x, predicted, self.weight, self.bias, mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, offset_groups={self.offset_groups}, "
                f"modulated={self.modulated}, bias={self.bias is not None}")


class Permute(nn.Module):
    """``x.permute(*dims)`` as a layer (torchvision's), to switch between (B, C, H, W) maps
    and the channels-last (B, H, W, C) form that ConvNeXt's and Swin's blocks work on."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"
