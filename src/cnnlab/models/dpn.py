"""Dual Path Networks (Chen, Li, Xiao, Jin, Yan, Feng 2017).

Each block runs one ResNeXt-style bottleneck (1x1 -> grouped 3x3 -> 1x1) whose output is
split in two: the first ``bw`` channels are *added* to a residual path (feature re-use, as
ResNet), the last ``inc`` channels are *concatenated* to a dense path (new features, as
DenseNet). Blocks pass the concatenation [residual | dense] on. Units are
pre-activation (BN-ReLU-Conv), as in the authors' MXNet code.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn

from cnnlab.layers import ConvBNAct
from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

__all__ = ["DPN", "DPNConfig", "DPNStage", "DualPathBlock"]

DPN_PAPER = Paper(
    title="Dual Path Networks",
    authors="Chen, Li, Xiao, Jin, Yan, Feng",
    year=2017,
    url="https://arxiv.org/abs/1707.01629",
)

# The authors' MXNet code uses BatchNorm's default eps there (1e-3).
_BN_EPS = 1e-3


@dataclass(frozen=True)
class DPNStage:
    """One row of Table 1: [1x1 r, 3x3 r (G groups), 1x1 bw (+inc)] x blocks."""

    width: int  # r: the bottleneck's 1x1 and grouped 3x3 width
    residual: int  # bw: channels of the residual path
    increment: int  # inc: channels each block adds to the dense path (k)
    blocks: int


@dataclass(frozen=True)
class DPNConfig:
    stem_channels: int
    stem_kernel: int
    groups: int  # G, the 3x3 cardinality
    stages: tuple[DPNStage, ...]


class BnActConv(nn.Sequential):
    """Pre-activation unit: BN -> ReLU -> Conv (no bias)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(OrderedDict([
            ("bn", nn.BatchNorm2d(in_channels, eps=_BN_EPS)),
            ("act", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                               kernel_size // 2, groups=groups, bias=False)),
        ]))


class DualPathBlock(nn.Module):
    """Fig. 2(e) of the paper. The first block of a stage projects the input (1x1, with the
    stage's stride) into a new residual path of ``bw`` and a dense path of ``2 * inc``;
    the others take the two paths as they are."""

    def __init__(
        self, in_channels: int, stage: DPNStage, groups: int, stride: int, project: bool
    ) -> None:
        super().__init__()
        self.residual = stage.residual
        self.c1x1_w = (
            BnActConv(in_channels, stage.residual + 2 * stage.increment, 1, stride)
            if project else None
        )
        self.c1x1_a = BnActConv(in_channels, stage.width, 1)
        self.c3x3_b = BnActConv(stage.width, stage.width, 3, stride, groups=groups)
        self.c1x1_c = BnActConv(stage.width, stage.residual + stage.increment, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x is [residual | dense]; a projecting block first makes new paths from all of x.
        paths = x if self.c1x1_w is None else self.c1x1_w(x)
        out = self.c1x1_c(self.c3x3_b(self.c1x1_a(x)))
        bw = self.residual
        resid = paths[:, :bw] + out[:, :bw]  # shared features: added
        return torch.cat([resid, paths[:, bw:], out[:, bw:]], 1)  # new features: appended


class DualPathStage(nn.Sequential):
    """A stage of dual path blocks. Blocks pass the concatenated [residual | dense] map, so
    stages compose like any Sequential and their outputs can be hooked as feature maps."""

    def __init__(self, in_channels: int, stage: DPNStage, groups: int, stride: int) -> None:
        blocks = []
        channels = in_channels
        for i in range(stage.blocks):
            blocks.append(DualPathBlock(channels, stage, groups, stride if i == 0 else 1, i == 0))
            # After the first block: bw + 3 inc; every further block adds inc.
            channels = stage.residual + (i + 3) * stage.increment
        super().__init__(*blocks)
        self.out_channels = channels


class DPN(Classifier):
    """``features``: conv1 (+BN-ReLU, 3x3/2 max pool), conv2..conv5 dual path stages, and a
    final BN-ReLU on the concatenated paths; then global average pooling and FC (Table 1)."""

    classifier_path = "classifier"  # the last layer: features -> class scores

    def __init__(self, cfg: DPNConfig, *, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.in_chans = in_chans
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", ConvBNAct(in_chans, cfg.stem_channels, cfg.stem_kernel, 2, bn_eps=_BN_EPS)),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]
        channels, reduction = cfg.stem_channels, 4
        self.feature_info = []
        for i, stage in enumerate(cfg.stages, start=2):
            stride = 1 if i == 2 else 2  # conv2 follows the max pool at stride 1
            reduction *= stride
            block = DualPathStage(channels, stage, cfg.groups, stride)
            layers.append((f"conv{i}", block))
            channels = block.out_channels
            self.feature_info.append(
                {"channels": channels, "reduction": reduction, "module": f"features.conv{i}"}
            )
        layers.append(("final", nn.Sequential(OrderedDict([
            ("bn", nn.BatchNorm2d(channels, eps=_BN_EPS)), ("act", nn.ReLU(inplace=True)),
        ]))))
        self.feature_info[-1]["module"] = "features.final"
        self.features = nn.Sequential(OrderedDict(layers))
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)


# Table 1, Chen et al. 2017: DPN-92 (32x3d): 7x7 64-channel stem, G = 32.
DPN92 = DPNConfig(64, 7, 32, (
    DPNStage(96, 256, 16, 3),
    DPNStage(192, 512, 32, 4),
    DPNStage(384, 1024, 24, 20),
    DPNStage(768, 2048, 128, 3),
))
# DPN-68 as released by the authors (github.com/cypw/DPNs): a 3x3 10-channel stem, G = 32,
# and narrow residual paths (bw 64..512) with wider bottlenecks (r = 2 bw).
DPN68 = DPNConfig(10, 3, 32, (
    DPNStage(128, 64, 16, 3),
    DPNStage(256, 128, 32, 4),
    DPNStage(512, 256, 32, 12),
    DPNStage(1024, 512, 64, 3),
))

_COMMON = dict(
    family="dpn", paper=DPN_PAPER, input_size=(3, 224, 224), dataset="imagenet",
    num_classes=1000, recipe="chen2017",
)
_DEVIATIONS = (
    "final BN-ReLU on the concatenated paths before pooling (some ports use ELU there)",
    "no test-time mean-max pooling (Sec. 5.1); plain global average pooling",
)


@register_model(
    **_COMMON,
    params=37_668_392,  # Table 1: 37.7M; exact sum re-derived in tests/test_dpn.py
    macs=6_500_000_000,  # Table 1: 6.5 x 10^9 FLOPs (multiply-adds) at 224x224
    top1_error=20.7, top5_error=5.4,
    error_source="Chen et al. 2017, Table 2 (224x224 single crop)",
    deviations=_DEVIATIONS,
)
def dpn92(**kwargs) -> DPN:
    return DPN(DPN92, **kwargs)


@register_model(
    **_COMMON,
    params=12_611_602,  # 12.6M; exact sum re-derived in tests/test_dpn.py
    # The README's "2.5 GFLOPs" is not reproduced by counting conv+FC multiply-adds (2.33G,
    # tests/test_dpn.py), so no MAC count is declared.
    macs=None,
    top1_error=23.57, top5_error=6.93,
    error_source="authors' repository github.com/cypw/DPNs README (224x224 single crop)",
    deviations=(
        "not in the paper (Table 1 has DPN-92/98/131): the authors' released DPN-68",
        *_DEVIATIONS,
    ),
)
def dpn68(**kwargs) -> DPN:
    return DPN(DPN68, **kwargs)
