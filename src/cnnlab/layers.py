"""Blocks shared across families: conv-BN-activation, squeeze-excite, drop-path, make-divisible."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

__all__ = ["ConvBNAct", "DropPath", "SqueezeExcite", "drop_path", "make_divisible"]


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
