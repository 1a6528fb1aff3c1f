"""DenseNet (Huang, Liu, van der Maaten, Weinberger 2017): every layer sees all earlier maps.

A dense block's layer l takes the concatenation [x_0, ..., x_{l-1}] and adds k ("growth
rate") new maps; transitions between blocks (BN-ReLU-1x1 conv-2x2 avg pool) halve the
resolution and, in the -C/-BC forms, compress the channels by theta = 0.5. A network is its
growth rate and block config (Table 1 for ImageNet, Sec. 3 "Implementation Details" for CIFAR).

The ImageNet forms are torchvision's DenseNet-BC (same module names, so state_dicts load);
the CIFAR forms follow Sec. 3/4.1 with the same layer code.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

__all__ = ["DenseNet", "DenseNetConfig"]

DENSENET_PAPER = Paper(
    title="Densely Connected Convolutional Networks",
    authors="Huang, Liu, van der Maaten, Weinberger",
    year=2017,
    url="https://arxiv.org/abs/1608.06993",
)


@dataclass(frozen=True)
class DenseNetConfig:
    """One DenseNet: the paper's hyper-parameters, nothing derived."""

    growth_rate: int  # k
    block_config: tuple[int, ...]  # layers per dense block
    stem_channels: int  # output of the first convolution
    bottleneck: bool = True  # "-B": 1x1 conv to bn_size*k maps before each 3x3
    compression: float = 0.5  # "-C": theta, channel factor of each transition
    bn_size: int = 4  # the bottleneck is 4k wide (Sec. 3, "Bottleneck layers")
    imagenet_stem: bool = True  # 7x7/2 conv + 3x3/2 max pool; else one 3x3 conv (CIFAR)


class DenseLayer(nn.Module):
    """H_l: BN-ReLU-Conv(1x1, 4k)-BN-ReLU-Conv(3x3, k) for -B nets, BN-ReLU-Conv(3x3, k) otherwise.

    Without a bottleneck the single 3x3 unit is named norm1/relu1/conv1. With
    ``memory_efficient`` the concatenation and bottleneck are recomputed in the backward pass
    (checkpointing; Pleiss et al. 2017) instead of being stored, as torchvision does.
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        bottleneck: bool,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        first_out = bn_size * growth_rate if bottleneck else growth_rate
        first_kernel = 1 if bottleneck else 3
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(
            in_channels, first_out, first_kernel, padding=first_kernel // 2, bias=False
        )
        self.bottleneck = bottleneck
        if bottleneck:
            self.norm2 = nn.BatchNorm2d(first_out)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(first_out, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def _first_unit(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and any(t.requires_grad for t in inputs):
            out = cp.checkpoint(self._first_unit, *inputs, use_reentrant=False)
        else:
            out = self._first_unit(*inputs)
        if self.bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """``denselayer1..n``; the output is the input concatenated with every layer's k maps."""

    def __init__(self, num_layers: int, in_channels: int, cfg: DenseNetConfig, **layer_kw) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                in_channels + i * cfg.growth_rate, cfg.growth_rate, cfg.bn_size, cfg.bottleneck,
                **layer_kw,
            )
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv(1x1)-AvgPool(2x2, stride 2) between two dense blocks (Sec. 3)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


def _stem(in_chans: int, cfg: DenseNetConfig) -> tuple[list[tuple[str, nn.Module]], int]:
    """The layers before the first dense block and their total stride."""
    if cfg.imagenet_stem:  # Table 1: 7x7 conv, stride 2; 3x3 max pool, stride 2
        return [
            ("conv0", nn.Conv2d(in_chans, cfg.stem_channels, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(cfg.stem_channels)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ], 4
    # CIFAR (Sec. 3): one 3x3 convolution; its BN-ReLU is the first dense layer's pre-activation.
    return [("conv0", nn.Conv2d(in_chans, cfg.stem_channels, 3, 1, 1, bias=False))], 1


def _dense_stages(
    channels: int, stride: int, cfg: DenseNetConfig, **layer_kw
) -> tuple[list[tuple[str, nn.Module]], list[dict], int, int]:
    """Dense blocks with transitions: (named layers, feature_info, out channels, total stride)."""
    layers: list[tuple[str, nn.Module]] = []
    info: list[dict] = []
    for i, num_layers in enumerate(cfg.block_config, start=1):
        layers.append((f"denseblock{i}", DenseBlock(num_layers, channels, cfg, **layer_kw)))
        channels += num_layers * cfg.growth_rate
        if i < len(cfg.block_config):
            # The stage's map is taken after the block, before the transition shrinks it.
            info.append(
                {"channels": channels, "reduction": stride, "module": f"features.denseblock{i}"}
            )
            out = int(channels * cfg.compression)  # floor, as torchvision's channels // 2
            layers.append((f"transition{i}", Transition(channels, out)))
            channels, stride = out, stride * 2
    return layers, info, channels, stride


def _min_input_side(cfg: DenseNetConfig) -> int:
    """Smallest input side for which every transition's 2x2 pool gets at least a 2x2 map
    (29 for the four-block ImageNet nets, 4 for the three-block CIFAR nets)."""

    def fits(side: int) -> bool:
        h = side
        if cfg.imagenet_stem:
            h = (h - 1) // 2 + 1  # 7x7/2 conv, padding 3
            h = (h - 1) // 2 + 1  # 3x3/2 max pool, padding 1
        for _ in range(len(cfg.block_config) - 1):
            if h < 2:
                return False
            h //= 2
        return True

    return next(side for side in itertools.count(1) if fits(side))


class DenseNet(Classifier):
    """DenseNet classifier: ``features`` (stem, blocks, transitions, final BN) -> ReLU -> GAP -> FC.

    Names follow torchvision (``features.denseblock1.denselayer1.norm1``, ``features.norm5``
    after four blocks), so its ImageNet state_dicts load unchanged.
    """

    classifier_path = "classifier"  # the last layer: features -> class scores
    # Builds the blocks and transitions; SparseNet (models/sparsenet.py) swaps in its own.
    _stages = staticmethod(_dense_stages)

    def __init__(
        self,
        cfg: DenseNetConfig,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        stem, stride = _stem(in_chans, cfg)
        stages, self.feature_info, channels, stride = self._stages(
            cfg.stem_channels, stride, cfg, drop_rate=drop_rate, memory_efficient=memory_efficient
        )
        final_norm = f"norm{len(cfg.block_config) + 1}"
        self.features = nn.Sequential(
            OrderedDict([*stem, *stages, (final_norm, nn.BatchNorm2d(channels))])
        )
        self.feature_info.append(
            {"channels": channels, "reduction": stride, "module": f"features.{final_norm}"}
        )
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)
        side = _min_input_side(cfg)
        self.min_input_size = (side, side)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation (the paper's Torch code and torchvision), BN to identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(F.relu(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _densenet(cfg: DenseNetConfig, **kwargs) -> DenseNet:
    kwargs.setdefault("num_classes", 1000 if cfg.imagenet_stem else 10)
    return DenseNet(cfg, **kwargs)


# Table 1 (ImageNet, DenseNet-BC, k = 32; DenseNet-161 k = 48): layers per dense block.
IMAGENET_CONFIGS = {
    "densenet121": DenseNetConfig(32, (6, 12, 24, 16), 64),
    "densenet169": DenseNetConfig(32, (6, 12, 32, 32), 64),
    "densenet201": DenseNetConfig(32, (6, 12, 48, 32), 64),
    "densenet161": DenseNetConfig(48, (6, 12, 36, 24), 96),
}


def _cifar_config(depth: int, growth_rate: int, bc: bool) -> DenseNetConfig:
    """Sec. 3: three equal dense blocks; depth L counts conv layers plus the stem, 2 transitions
    and the FC layer, so each block has (L-4)/3 layers, or (L-4)/6 two-conv layers for -BC.
    The stem has 16 maps, or 2k for -BC."""
    per_block, rem = divmod(depth - 4, 6 if bc else 3)
    if rem:
        raise ValueError(f"DenseNet depth {depth} does not give equal blocks")
    return DenseNetConfig(
        growth_rate, (per_block,) * 3, 2 * growth_rate if bc else 16,
        bottleneck=bc, compression=0.5 if bc else 1.0, imagenet_stem=False,
    )


CIFAR_CONFIGS = {
    "densenet40_12": _cifar_config(40, 12, bc=False),
    "densenet_bc_100_12": _cifar_config(100, 12, bc=True),
    "densenet_bc_250_24": _cifar_config(250, 24, bc=True),
}

_TORCHVISION_DEVIATIONS = (
    "torchvision's DenseNet-BC (the paper's ImageNet form); the 2x2 transition pools floor odd "
    "maps",
)
# The paper trains its ImageNet DenseNets with the ResNet protocol (Sec. 4.2: He et al.'s
# augmentation, batch 256, lr 0.1 divided by 10 at epochs 30 and 60, 90 epochs, weight decay
# 1e-4, Nesterov momentum 0.9), hence the "he2016_imagenet" recipe; there is no DenseNet
# ImageNet recipe of its own.
_IMAGENET = dict(
    family="densenet", paper=DENSENET_PAPER, input_size=(3, 224, 224), dataset="imagenet",
    num_classes=1000, error_source="torchvision IMAGENET1K_V1 weights",
    recipe="he2016_imagenet", torchvision=True, deviations=_TORCHVISION_DEVIATIONS,
)


@register_model(**_IMAGENET, params=7_978_856, macs=2_834_000_000,
                top1_error=100 - 74.434, top5_error=100 - 91.972)
def densenet121(**kwargs) -> DenseNet:
    """DenseNet-121 (Table 1; the paper's top-1 error 25.02%, 10-crop 23.61%)."""
    return _densenet(IMAGENET_CONFIGS["densenet121"], **kwargs)


@register_model(**_IMAGENET, params=14_149_480, macs=3_360_000_000,
                top1_error=100 - 75.6, top5_error=100 - 92.806)
def densenet169(**kwargs) -> DenseNet:
    """DenseNet-169 (Table 1)."""
    return _densenet(IMAGENET_CONFIGS["densenet169"], **kwargs)


@register_model(**_IMAGENET, params=20_013_928, macs=4_291_000_000,
                top1_error=100 - 76.896, top5_error=100 - 93.37)
def densenet201(**kwargs) -> DenseNet:
    """DenseNet-201 (Table 1)."""
    return _densenet(IMAGENET_CONFIGS["densenet201"], **kwargs)


@register_model(**_IMAGENET, params=28_681_000, macs=7_728_000_000,
                top1_error=100 - 77.138, top5_error=100 - 93.56)
def densenet161(**kwargs) -> DenseNet:
    """DenseNet-161 (Table 1, k = 48, 96-channel stem)."""
    return _densenet(IMAGENET_CONFIGS["densenet161"], **kwargs)


_CIFAR = dict(
    family="densenet", paper=DENSENET_PAPER, input_size=(3, 32, 32), dataset="cifar10",
    num_classes=10, error_source="Huang et al. 2017, Table 2 (C10+)", recipe="huang2017_cifar",
    deviations=(
        "no dropout by default (the paper's C10+/C100+ setting; drop_rate=0.2 for no augmentation)",
    ),
)

# Declared counts are the exact sums of the Sec. 3 architecture at 10 classes (the paper
# states them to one decimal of a million: Table 2); tests/test_densenet.py re-derives them.


@register_model(**_CIFAR, params=1_019_722, top1_error=5.24)
def densenet40_12(**kwargs) -> DenseNet:
    """DenseNet (L = 40, k = 12): no bottleneck, no compression; 1.0M parameters (Table 2)."""
    return _densenet(CIFAR_CONFIGS["densenet40_12"], **kwargs)


@register_model(**_CIFAR, params=769_162, top1_error=4.51)
def densenet_bc_100_12(**kwargs) -> DenseNet:
    """DenseNet-BC (L = 100, k = 12): 0.8M parameters, C10+ 4.51%, C100+ 22.27% (Table 2)."""
    return _densenet(CIFAR_CONFIGS["densenet_bc_100_12"], **kwargs)


@register_model(**_CIFAR, params=15_324_406, top1_error=3.62)
def densenet_bc_250_24(**kwargs) -> DenseNet:
    """DenseNet-BC (L = 250, k = 24): 15.3M parameters, C10+ 3.62% (Table 2)."""
    return _densenet(CIFAR_CONFIGS["densenet_bc_250_24"], **kwargs)
