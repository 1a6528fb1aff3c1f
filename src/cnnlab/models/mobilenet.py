"""MobileNets: depthwise-separable convolutions (V1), inverted residuals (V2), and the
searched V3 with squeeze-excite and hard-swish.

- V1: Howard et al. 2017, Table 1 (body) and Sec. 3.3 (width multiplier alpha).
- V2: Sandler et al. 2018, Table 2 (t, c, n, s rows); torchvision's module names.
- V3: Howard et al. 2019, Tables 1 and 2; torchvision's module names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

from cnnlab.layers import ConvBNAct, SqueezeExcite, make_divisible
from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

__all__ = ["InvertedResidual", "MobileNetV1", "MobileNetV2", "MobileNetV3", "V3Block"]

MOBILENET_V1_PAPER = Paper(
    title="MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
    authors="Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam",
    year=2017,
    url="https://arxiv.org/abs/1704.04861",
)
MOBILENET_V2_PAPER = Paper(
    title="MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    authors="Sandler, Howard, Zhu, Zhmoginov, Chen",
    year=2018,
    url="https://arxiv.org/abs/1801.04381",
)
MOBILENET_V3_PAPER = Paper(
    title="Searching for MobileNetV3",
    authors="Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le, Adam",
    year=2019,
    url="https://arxiv.org/abs/1905.02244",
)

_WIDTH_DIVISOR = 8


def _check_width(width_mult: float) -> None:
    if not width_mult > 0:
        raise ValueError(f"width_mult must be a positive number, got {width_mult}")


def _init_mobilenet(model: nn.Module) -> None:
    """The reference init of V2/V3 (and torchvision): He fan-out convs, N(0, 0.01) FC."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _stage_info(strides: list[int], channels: list[int], prefix: str) -> list[dict]:
    """One feature_info entry for the last layer at each resolution of ``features``."""
    info, reduction = [], 1
    for i, s in enumerate(strides):
        if s == 2 and i > 0:
            info.append({"channels": channels[i - 1], "reduction": reduction,
                         "module": f"{prefix}.{i - 1}"})
        reduction *= s
    info.append({"channels": channels[-1], "reduction": reduction,
                 "module": f"{prefix}.{len(strides) - 1}"})
    return info


# ---------------------------------------------------------------------------------------------
# MobileNet V1


class DepthwiseSeparable(nn.Module):
    """Fig. 3 right: 3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pw = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


# Table 1, Howard et al. 2017: (pointwise output channels, depthwise stride) per separable layer
# after the 3x3/2 32-channel stem. The table's last "Conv dw / s2" acts on a 7x7 map and keeps
# it 7x7 (the next row is 7x7x1024 and the pool is 7x7), so it is stride 1 here: a known typo.
V1_LAYERS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)


class MobileNetV1(Classifier):
    """MobileNet V1: stem conv + 13 depthwise-separable layers, global average pool, FC.

    ``width_mult`` is alpha of Sec. 3.3: every layer's channels are alpha * c, rounded with
    :func:`cnnlab.layers.make_divisible` (multiple of 8). For the paper's alphas 1, 0.75, 0.5
    and 0.25 every alpha * c is already a multiple of 8, so the rounding changes nothing and
    the counts are the paper's; it only matters for other alphas.
    """

    classifier_path = "classifier.1"  # the last layer: features -> class scores

    def __init__(
        self, *, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_width(width_mult)
        self.in_chans = in_chans
        channels = make_divisible(32 * width_mult, _WIDTH_DIVISOR)
        layers: list[nn.Module] = [ConvBNAct(in_chans, channels, 3, 2)]
        strides, widths = [2], [channels]
        for c, s in V1_LAYERS:
            out = make_divisible(c * width_mult, _WIDTH_DIVISOR)
            layers.append(DepthwiseSeparable(channels, out, s))
            channels = out
            strides.append(s)
            widths.append(out)
        self.features = nn.Sequential(*layers)
        self.feature_info = _stage_info(strides, widths, "features")
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # The paper uses no dropout in the head (the official TF code keeps 0.999).
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        _init_mobilenet(self)


@register_model(
    family="mobilenet",
    paper=MOBILENET_V1_PAPER,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    params=4_231_976,  # Table 1 summed exactly (Table 6 says 4.2M); tests/test_mobilenet.py
    macs=569_000_000,  # Table 6: 569 million mult-adds at 1.0 MobileNet-224
    top1_error=100 - 70.6,  # Table 6
    error_source="Howard et al. 2017, Table 6",
    recipe="howard2017",
    deviations=(
        "Table 1's last depthwise layer is listed with stride 2 but keeps the 7x7 map: stride 1",
        "channels under width_mult rounded to multiples of 8 (make_divisible); exact for the "
        "paper's alphas",
    ),
)
def mobilenet_v1(*, width_mult: float = 1.0, **kwargs) -> MobileNetV1:
    return MobileNetV1(width_mult=width_mult, **kwargs)


# ---------------------------------------------------------------------------------------------
# MobileNet V2


class InvertedResidual(nn.Module):
    """Fig. 3b / Table 1: 1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection,
    with an identity shortcut when the shape is kept. torchvision's ``conv`` child names."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:  # t = 1 (the first row) has no expansion layer
            layers.append(ConvBNAct(in_channels, hidden, 1, act_layer=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act_layer=nn.ReLU6),
            # The linear bottleneck (Sec. 3.2): no activation after the projection.
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# Table 2, Sandler et al. 2018: expansion t, output channels c, repeats n, first stride s.
V2_ROWS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(Classifier):
    """MobileNet V2 (Table 2): 3x3/2 stem, 17 inverted residuals, 1x1 conv to 1280, GAP, FC.

    ``width_mult`` scales every layer (rounded to multiples of 8) except the last 1280-wide
    conv, which is only ever widened (Sec. 6.1: "for multipliers less than one ... we keep
    the last convolutional layer").
    """

    classifier_path = "classifier.1"  # the last layer: features -> class scores

    def __init__(
        self, *, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
        dropout: float = 0.2, rows: tuple[tuple[int, int, int, int], ...] = V2_ROWS,
    ) -> None:
        super().__init__()
        _check_width(width_mult)
        self.in_chans = in_chans
        channels = make_divisible(32 * width_mult, _WIDTH_DIVISOR)
        last = make_divisible(1280 * max(1.0, width_mult), _WIDTH_DIVISOR)
        layers: list[nn.Module] = [ConvBNAct(in_chans, channels, 3, 2, act_layer=nn.ReLU6)]
        strides, widths = [2], [channels]
        for t, c, n, s in rows:
            out = make_divisible(c * width_mult, _WIDTH_DIVISOR)
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(InvertedResidual(channels, out, stride, t))
                channels = out
                strides.append(stride)
                widths.append(out)
        layers.append(ConvBNAct(channels, last, 1, act_layer=nn.ReLU6))
        strides.append(1)
        widths.append(last)
        self.features = nn.Sequential(*layers)
        self.feature_info = _stage_info(strides, widths, "features")
        self.num_features = last
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _init_mobilenet(self)


@register_model(
    family="mobilenet",
    paper=MOBILENET_V2_PAPER,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    params=3_504_872,  # the paper's Table 4: 3.4M (torchvision: 3,504,872)
    macs=301_000_000,  # Table 4: 300M; torchvision 0.301 GFLOPs
    top1_error=100 - 72.154,  # the paper's Table 4: 72.0% top-1
    top5_error=100 - 90.822,
    error_source="torchvision IMAGENET1K_V2 weights (paper Table 4: 72.0% top-1)",
    recipe="sandler2018",
    torchvision=True,
    deviations=("dropout 0.2 before the classifier, as torchvision",),
)
def mobilenet_v2(*, width_mult: float = 1.0, **kwargs) -> MobileNetV2:
    return MobileNetV2(width_mult=width_mult, **kwargs)


# ---------------------------------------------------------------------------------------------
# MobileNet V3


@dataclass(frozen=True)
class V3Row:
    """One row of Tables 1/2 (Howard et al. 2019)."""

    kernel: int
    expanded: int  # "exp size"
    out: int  # "#out"
    se: bool  # "SE"
    hswish: bool  # "NL": HS (True) or RE (False)
    stride: int  # "s"


def _rows(*rows: tuple[int, int, int, bool, bool, int]) -> tuple[V3Row, ...]:
    return tuple(V3Row(*r) for r in rows)


RE, HS = False, True
# Table 1: MobileNetV3-Large (after the 16-channel 3x3/2 stem with h-swish).
V3_LARGE = _rows(
    (3, 16, 16, False, RE, 1),
    (3, 64, 24, False, RE, 2),
    (3, 72, 24, False, RE, 1),
    (5, 72, 40, True, RE, 2),
    (5, 120, 40, True, RE, 1),
    (5, 120, 40, True, RE, 1),
    (3, 240, 80, False, HS, 2),
    (3, 200, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 480, 112, True, HS, 1),
    (3, 672, 112, True, HS, 1),
    (5, 672, 160, True, HS, 2),
    (5, 960, 160, True, HS, 1),
    (5, 960, 160, True, HS, 1),
)
# Table 2: MobileNetV3-Small.
V3_SMALL = _rows(
    (3, 16, 16, True, RE, 2),
    (3, 72, 24, False, RE, 2),
    (3, 88, 24, False, RE, 1),
    (5, 96, 40, True, HS, 2),
    (5, 240, 40, True, HS, 1),
    (5, 240, 40, True, HS, 1),
    (5, 120, 48, True, HS, 1),
    (5, 144, 48, True, HS, 1),
    (5, 288, 96, True, HS, 2),
    (5, 576, 96, True, HS, 1),
    (5, 576, 96, True, HS, 1),
)


# The reference TF code (and torchvision) uses BN eps 1e-3, momentum 0.01 (TF decay 0.99).
_v3_conv = partial(ConvBNAct, bn_eps=1e-3, bn_momentum=0.01)


class V3Block(nn.Module):
    """Fig. 4: expand 1x1 -> depthwise kxk -> [SE with hard-sigmoid gate] -> linear 1x1.

    The SE squeeze is a quarter of the expanded width, rounded to a multiple of 8 (Sec. 5.3).
    torchvision's ``block`` child names.
    """

    def __init__(self, in_channels: int, row: V3Row, expanded: int, out: int) -> None:
        super().__init__()
        act: Callable[..., nn.Module] = nn.Hardswish if row.hswish else nn.ReLU
        self.use_res_connect = row.stride == 1 and in_channels == out
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(_v3_conv(in_channels, expanded, 1, act_layer=act))
        layers.append(_v3_conv(expanded, expanded, row.kernel, row.stride, groups=expanded,
                               act_layer=act))
        if row.se:
            squeeze = make_divisible(expanded // 4, _WIDTH_DIVISOR)
            layers.append(SqueezeExcite(expanded, squeeze, nn.ReLU, nn.Hardsigmoid))
        layers.append(_v3_conv(expanded, out, 1, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(Classifier):
    """MobileNet V3: h-swish stem, the searched bneck rows, 1x1 conv to 6x the last width,
    GAP, FC-hswish (1280 or 1024, without BN: Sec. 5.1 "efficient last stage"), dropout, FC."""

    classifier_path = "classifier.3"  # the last layer: features -> class scores

    def __init__(
        self, rows: tuple[V3Row, ...], last_channel: int, *, num_classes: int = 1000,
        in_chans: int = 3, width_mult: float = 1.0, dropout: float = 0.2,
    ) -> None:
        super().__init__()
        _check_width(width_mult)
        self.in_chans = in_chans

        def width(c: int) -> int:
            return make_divisible(c * width_mult, _WIDTH_DIVISOR)

        channels = width(16)
        layers: list[nn.Module] = [
            _v3_conv(in_chans, channels, 3, 2, act_layer=nn.Hardswish)
        ]
        strides, widths = [2], [channels]
        for row in rows:
            out = width(row.out)
            layers.append(V3Block(channels, row, width(row.expanded), out))
            channels = out
            strides.append(row.stride)
            widths.append(out)
        last_conv = 6 * channels
        layers.append(_v3_conv(channels, last_conv, 1, act_layer=nn.Hardswish))
        strides.append(1)
        widths.append(last_conv)
        self.features = nn.Sequential(*layers)
        self.feature_info = _stage_info(strides, widths, "features")
        hidden = width(last_channel)
        self.num_features = last_conv
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, hidden),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(hidden, num_classes),
        )
        _init_mobilenet(self)


_V3 = dict(
    family="mobilenet", paper=MOBILENET_V3_PAPER, input_size=(3, 224, 224),
    dataset="imagenet", num_classes=1000, recipe="howard2019", torchvision=True,
    deviations=("SE squeeze rounded to a multiple of 8, as the reference code and torchvision",),
)


@register_model(
    **_V3,
    params=5_483_032,  # Table 3: 5.4M
    macs=217_000_000,  # Table 3: 219M MAdds; torchvision 0.217 GFLOPs
    top1_error=100 - 75.274,  # Table 3: 75.2%
    top5_error=100 - 92.566,
    error_source="torchvision reference (paper Table 3: 75.2% top-1)",
)
def mobilenet_v3_large(*, width_mult: float = 1.0, **kwargs) -> MobileNetV3:
    return MobileNetV3(V3_LARGE, 1280, width_mult=width_mult, **kwargs)


@register_model(
    **_V3,
    params=2_542_856,  # Table 3: 2.5M
    macs=57_000_000,  # Table 3: 56M MAdds; torchvision 0.057 GFLOPs
    top1_error=100 - 67.668,  # Table 3: 67.4%
    top5_error=100 - 87.402,
    error_source="torchvision reference (paper Table 3: 67.4% top-1)",
)
def mobilenet_v3_small(*, width_mult: float = 1.0, **kwargs) -> MobileNetV3:
    return MobileNetV3(V3_SMALL, 1024, width_mult=width_mult, **kwargs)
