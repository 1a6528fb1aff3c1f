"""EfficientNet (Tan & Le 2019): compound scaling of a searched MBConv baseline.

B0 is Table 1's rows (MBConv with squeeze-excite and SiLU/"swish"); B1..B7 scale its width
by w and its depth by d (Sec. 3.3, phi with alpha = 1.2, beta = 1.1, gamma = 1.15), with the
(w, d, resolution, dropout) of the reference code, which torchvision uses:
channels -> make_divisible(c * w, 8), repeats -> ceil(n * d).
Module names follow torchvision, so its state_dicts load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

from cnnlab.layers import ConvBNAct, DropPath, SqueezeExcite, make_divisible
from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

__all__ = ["B0_ROWS", "EfficientNet", "MBConv", "MBConvRow", "ScalingConfig"]

EFFICIENTNET_PAPER = Paper(
    title="EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
    authors="Tan, Le",
    year=2019,
    url="https://arxiv.org/abs/1905.11946",
)

ConvFactory = Callable[..., ConvBNAct]  # ConvBNAct with the variant's BN settings bound


@dataclass(frozen=True)
class MBConvRow:
    """One stage of Table 1: MBConv<expand>, kernel k x k, first stride, channels, layers."""

    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    num_layers: int


# Table 1, Tan & Le 2019 (EfficientNet-B0), stages 2..8 after the 32-channel 3x3/2 stem.
# The table lists resolutions, not strides; the strides follow from them (112 -> 56 ...).
B0_ROWS: tuple[MBConvRow, ...] = (
    MBConvRow(1, 3, 1, 32, 16, 1),
    MBConvRow(6, 3, 2, 16, 24, 2),
    MBConvRow(6, 5, 2, 24, 40, 2),
    MBConvRow(6, 3, 2, 40, 80, 3),
    MBConvRow(6, 5, 1, 80, 112, 3),
    MBConvRow(6, 5, 2, 112, 192, 4),
    MBConvRow(6, 3, 1, 192, 320, 1),
)


@dataclass(frozen=True)
class ScalingConfig:
    """Compound-scaled variant: width and depth multipliers, resolution, head dropout."""

    width: float
    depth: float
    resolution: int
    dropout: float
    # B5-B7 in torchvision are ports of the TF checkpoints and keep TF's BN settings
    # (eps 1e-3, decay 0.99 = momentum 0.01); B0-B4 use PyTorch's defaults.
    tf_bn: bool = False


# (w, d, r, dropout) of the reference implementation (Tan & Le's TPU code, "efficientnet_params").
SCALING = {
    "efficientnet_b0": ScalingConfig(1.0, 1.0, 224, 0.2),
    "efficientnet_b1": ScalingConfig(1.0, 1.1, 240, 0.2),
    "efficientnet_b2": ScalingConfig(1.1, 1.2, 260, 0.3),
    "efficientnet_b3": ScalingConfig(1.2, 1.4, 300, 0.3),
    "efficientnet_b4": ScalingConfig(1.4, 1.8, 380, 0.4),
    "efficientnet_b5": ScalingConfig(1.6, 2.2, 456, 0.4, tf_bn=True),
    "efficientnet_b6": ScalingConfig(1.8, 2.6, 528, 0.5, tf_bn=True),
    "efficientnet_b7": ScalingConfig(2.0, 3.1, 600, 0.5, tf_bn=True),
}


def scale_width(channels: int, width: float) -> int:
    return make_divisible(channels * width, 8)


def scale_depth(layers: int, depth: float) -> int:
    return int(math.ceil(layers * depth))


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) with SE (Hu et al. 2018) and SiLU:
    1x1 expand -> kxk depthwise -> SE (squeeze to in/4) -> 1x1 linear projection,
    plus an identity shortcut with stochastic depth when the shape is kept."""

    def __init__(
        self, in_channels: int, out_channels: int, row: MBConvRow, stride: int,
        drop_path: float, conv: ConvFactory,
    ) -> None:
        super().__init__()
        expanded = scale_width(in_channels, row.expand_ratio)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(conv(in_channels, expanded, 1, act_layer=nn.SiLU))
        layers.append(conv(expanded, expanded, row.kernel, stride, groups=expanded,
                           act_layer=nn.SiLU))
        # SE ratio 0.25 of the block's *input* channels (the reference code's se_ratio).
        layers.append(SqueezeExcite(expanded, max(1, in_channels // 4), nn.SiLU))
        layers.append(conv(expanded, out_channels, 1, act_layer=None))
        self.block = nn.Sequential(*layers)
        # Only residual blocks are dropped; torchvision's name, no parameters.
        self.stochastic_depth = DropPath(drop_path)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


def _mbconv_stages(
    rows: tuple[MBConvRow, ...], scaling: ScalingConfig, drop_path_rate: float,
    conv: ConvFactory,
) -> tuple[list[nn.Sequential], list[int], list[int]]:
    """One nn.Sequential per row; drop-path rises linearly from 0 towards ``drop_path_rate``
    over the blocks (block i of N: rate * i / N)."""
    total = sum(scale_depth(r.num_layers, scaling.depth) for r in rows)
    stages, strides, widths = [], [], []
    block_id = 0
    for row in rows:
        in_ch = scale_width(row.in_channels, scaling.width)
        out_ch = scale_width(row.out_channels, scaling.width)
        blocks = []
        for i in range(scale_depth(row.num_layers, scaling.depth)):
            p = drop_path_rate * block_id / total
            blocks.append(MBConv(in_ch if i == 0 else out_ch, out_ch, row,
                                 row.stride if i == 0 else 1, p, conv))
            block_id += 1
        stages.append(nn.Sequential(*blocks))
        strides.append(row.stride)
        widths.append(out_ch)
    return stages, strides, widths


class EfficientNet(Classifier):
    """``features``: stem (3x3/2, SiLU), seven MBConv stages, 1x1 conv to 4x the last width
    (1280 for B0); then GAP, dropout, FC (Table 1's stage 9)."""

    classifier_path = "classifier.1"  # the last layer: features -> class scores

    def __init__(
        self, scaling: ScalingConfig, *, rows: tuple[MBConvRow, ...] = B0_ROWS,
        num_classes: int = 1000, in_chans: int = 3, dropout: float | None = None,
        drop_path_rate: float = 0.2,
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.in_chans = in_chans
        conv: ConvFactory = (
            partial(ConvBNAct, bn_eps=1e-3, bn_momentum=0.01) if scaling.tf_bn else ConvBNAct
        )
        stem = scale_width(rows[0].in_channels, scaling.width)
        stages, strides, widths = _mbconv_stages(rows, scaling, drop_path_rate, conv)
        last_in = widths[-1]
        head = 4 * last_in
        self.features = nn.Sequential(
            conv(in_chans, stem, 3, 2, act_layer=nn.SiLU),
            *stages,
            conv(last_in, head, 1, act_layer=nn.SiLU),
        )
        self.feature_info = _feature_info(strides, widths, head)
        self.num_features = head
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=scaling.dropout if dropout is None else dropout, inplace=True),
            nn.Linear(head, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference code: He fan-out convs, FC uniform(+-1/sqrt(out)), BN to identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)


def _feature_info(strides: list[int], widths: list[int], head: int) -> list[dict]:
    """The last map at each resolution: ``features.0`` is the stem, ``features.{i+1}`` row i
    of Table 1, and the map before a stride-2 row is the previous resolution's output."""
    info, reduction = [], 2
    for i, s in enumerate(strides):
        if s == 2:
            prev = {"channels": widths[i - 1], "reduction": reduction, "module": f"features.{i}"}
            info.append(prev)
            reduction *= 2
    info.append({"channels": head, "reduction": reduction,
                 "module": f"features.{len(strides) + 1}"})
    return info


def _efficientnet(name: str, **kwargs) -> EfficientNet:
    return EfficientNet(SCALING[name], **kwargs)


def _register(name: str, params: int, ref_top1: float, ref_top5: float, paper_top1: float):
    # Declared facts are torchvision's, measured at its evaluation crop: the paper's resolution
    # except for B2, whose torchvision weights are evaluated (and their GFLOPs counted) at 288.
    res = _TORCHVISION_CROP.get(name, SCALING[name].resolution)
    deviations: tuple[str, ...] = (
        "torchvision's form: PyTorch BN defaults for B0-B4, TF's (eps 1e-3, momentum 0.01) "
        "for B5-B7",
        "stochastic depth rises linearly over blocks to 0.2 (the reference code's "
        "drop_connect_rate), as torchvision",
    )
    if name in _TORCHVISION_CROP:
        deviations += (
            f"declared input {res}x{res} (torchvision's crop for its weights), not the paper's "
            f"{SCALING[name].resolution}x{SCALING[name].resolution}",
        )
    return register_model(
        family="efficientnet",
        paper=EFFICIENTNET_PAPER,
        input_size=(3, res, res),
        dataset="imagenet",
        num_classes=1000,
        params=params,
        macs=_TORCHVISION_GMACS[name],
        top1_error=100 - ref_top1,
        top5_error=100 - ref_top5,
        error_source=f"torchvision reference weights (paper Table 2: {paper_top1}% top-1)",
        recipe="tan2019",
        torchvision=True,
        deviations=deviations,
    )


_TORCHVISION_CROP = {"efficientnet_b2": 288}


# torchvision's published GFLOPs (= GMACs of conv and linear layers) at its crop size.
_TORCHVISION_GMACS = {
    "efficientnet_b0": 386_000_000,
    "efficientnet_b1": 687_000_000,
    "efficientnet_b2": 1_088_000_000,
    "efficientnet_b3": 1_827_000_000,
    "efficientnet_b4": 4_394_000_000,
    "efficientnet_b5": 10_266_000_000,
    "efficientnet_b6": 19_068_000_000,
    "efficientnet_b7": 37_746_000_000,
}


@_register("efficientnet_b0", 5_288_548, 77.692, 93.532, 77.1)
def efficientnet_b0(**kwargs) -> EfficientNet:
    """EfficientNet-B0 (Table 1): 5.3M parameters, 0.39B FLOPs (Table 2)."""
    return _efficientnet("efficientnet_b0", **kwargs)


@_register("efficientnet_b1", 7_794_184, 79.838, 94.934, 79.1)
def efficientnet_b1(**kwargs) -> EfficientNet:
    """EfficientNet-B1: w 1.0, d 1.1, 240x240 (7.8M parameters, Table 2)."""
    return _efficientnet("efficientnet_b1", **kwargs)


@_register("efficientnet_b2", 9_109_994, 80.608, 95.31, 80.1)
def efficientnet_b2(**kwargs) -> EfficientNet:
    """EfficientNet-B2: w 1.1, d 1.2, 260x260 (9.2M parameters, Table 2)."""
    return _efficientnet("efficientnet_b2", **kwargs)


@_register("efficientnet_b3", 12_233_232, 82.008, 96.054, 81.6)
def efficientnet_b3(**kwargs) -> EfficientNet:
    """EfficientNet-B3: w 1.2, d 1.4, 300x300 (12M parameters, Table 2)."""
    return _efficientnet("efficientnet_b3", **kwargs)


@_register("efficientnet_b4", 19_341_616, 83.384, 96.594, 82.9)
def efficientnet_b4(**kwargs) -> EfficientNet:
    """EfficientNet-B4: w 1.4, d 1.8, 380x380 (19M parameters, Table 2)."""
    return _efficientnet("efficientnet_b4", **kwargs)


@_register("efficientnet_b5", 30_389_784, 83.444, 96.628, 83.6)
def efficientnet_b5(**kwargs) -> EfficientNet:
    """EfficientNet-B5: w 1.6, d 2.2, 456x456 (30M parameters, Table 2)."""
    return _efficientnet("efficientnet_b5", **kwargs)


@_register("efficientnet_b6", 43_040_704, 84.008, 96.916, 84.0)
def efficientnet_b6(**kwargs) -> EfficientNet:
    """EfficientNet-B6: w 1.8, d 2.6, 528x528 (43M parameters, Table 2)."""
    return _efficientnet("efficientnet_b6", **kwargs)


@_register("efficientnet_b7", 66_347_960, 84.122, 96.908, 84.3)
def efficientnet_b7(**kwargs) -> EfficientNet:
    """EfficientNet-B7: w 2.0, d 3.1, 600x600 (66M parameters, Table 2)."""
    return _efficientnet("efficientnet_b7", **kwargs)
