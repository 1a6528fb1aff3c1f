"""CIFAR ResNets: He et al. 2016 Sec. 4.2 and the family built on it.

ResNet-20..1202 and their plain twins (He et al. 2016, Sec. 4.2, Table 6), pre-activation
ResNet-110/164 (He et al. 2016b, Table 3), ResNeXt-29 (Xie et al. 2017, Sec. 5.3), Wide
ResNets (Zagoruyko & Komodakis 2016), stochastic depth (Huang et al. 2016), RoR-3 (Zhang
et al. 2017) and ResNet in ResNet (Targ, Almeida, Lyons 2016). All take 3x32x32 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from cnnlab.models.base import Classifier
from cnnlab.models.resnet import HE_2016, HE_2016B, XIE_2017, ZAGORUYKO_2016
from cnnlab.models.resnet_blocks import (
    BLOCKS,
    BlockOptions,
    ShortcutFn,
    ZeroPadShortcut,
    conv_bn_shortcut,
    conv_shortcut,
    he_init,
    linear_drop_path_rates,
    make_stage,
)
from cnnlab.registry import Paper, register_model

__all__ = ["CifarNetSpec", "CifarResNet", "RiRCifar", "RoRCifar"]

HUANG_2016 = Paper(
    title="Deep Networks with Stochastic Depth",
    authors="Huang, Sun, Liu, Sedra, Weinberger",
    year=2016,
    url="https://arxiv.org/abs/1603.09382",
)
ZHANG_2017 = Paper(
    title="Residual Networks of Residual Networks: Multilevel Residual Networks",
    authors="Zhang, Sun, Han, Yuan, Yang, Kuang",
    year=2017,
    url="https://arxiv.org/abs/1608.02908",
)
TARG_2016 = Paper(
    title="Resnet in Resnet: Generalizing Residual Architectures",
    authors="Targ, Almeida, Lyons",
    year=2016,
    url="https://arxiv.org/abs/1603.08029",
)


@dataclass(frozen=True)
class CifarNetSpec:
    """Three stages at 32x32, 16x16, 8x8 (He et al. 2016, Sec. 4.2)."""

    block: str  # "basic" | "bottleneck"
    blocks_per_stage: int
    planes: tuple[int, int, int] = (16, 32, 64)
    stem_channels: int = 16
    preact: bool = False


def _shortcut_fn(shortcut: str, preact: bool) -> ShortcutFn:
    if shortcut == "A":
        return ZeroPadShortcut
    if shortcut == "B":
        return conv_shortcut if preact else conv_bn_shortcut
    raise ValueError(f"shortcut must be 'A' (zero-padding identity) or 'B' (projection), "
                     f"got {shortcut!r}")


class CifarResNet(Classifier):
    """3x3 conv stem, three stages of residual blocks, global average pool, FC.

    Post-activation nets have a conv-BN-ReLU stem; pre-activation nets a bare conv whose
    BN-ReLU is the first unit's shared pre-activation and a final BN-ReLU before pooling
    (He et al. 2016b, appendix). Initialisation: He et al. 2015 (kaiming normal, fan_out).
    ``shortcut="A"`` is Sec. 3.3's option A (zero-padded strided identity, no parameters),
    ``"B"`` a 1x1 projection where the shape changes.
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(
        self,
        spec: CifarNetSpec,
        num_classes: int = 10,
        in_chans: int = 3,
        *,
        shortcut: str = "A",
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        se_reduction: int | None = None,
        residual: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        block = BLOCKS[(spec.block, spec.preact)]
        opts = BlockOptions(groups=groups, width_per_group=width_per_group,
                            stride_in_1x1=stride_in_1x1, se_reduction=se_reduction,
                            residual=residual, dropout=dropout)
        if dropout and not spec.preact:
            raise ValueError("dropout between convolutions is the Wide ResNet (pre-activation) "
                             "option; post-activation nets take none")
        stem = spec.stem_channels
        self.conv1 = nn.Conv2d(in_chans, stem, 3, 1, 1, bias=False)
        # Pre-activation nets: the stem's BN-ReLU is the first unit's (shared) pre-activation.
        self.bn1 = nn.Identity() if spec.preact else nn.BatchNorm2d(stem)
        self.relu = nn.Identity() if spec.preact else nn.ReLU(inplace=True)
        self.feature_info = [{"channels": stem, "reduction": 1, "module": "relu"}]
        n = spec.blocks_per_stage
        rates = linear_drop_path_rates(drop_path_rate, 3 * n)
        channels = stem
        for i, planes in enumerate(spec.planes):
            stage, channels = make_stage(
                block, channels, planes, n, 1 if i == 0 else 2, opts=opts,
                shortcut=_shortcut_fn(shortcut, spec.preact),
                drop_path_rates=rates[i * n:(i + 1) * n],
                first_preact="shared" if i == 0 else None,  # the first unit of the net
            )
            self.add_module(f"layer{i + 1}", stage)
            self.feature_info.append(
                {"channels": channels, "reduction": 2**i, "module": f"layer{i + 1}"}
            )
        self.final_norm = nn.BatchNorm2d(channels) if spec.preact else nn.Identity()
        self.final_act = nn.ReLU(inplace=True) if spec.preact else nn.Identity()
        if spec.preact:
            self.feature_info[-1]["module"] = "final_act"
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        he_init(self, zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.final_act(self.final_norm(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _cifar_info(params: int, paper: Paper = HE_2016, recipe: str = "he2016_cifar",
                error: float | None = None, source: str = "", **extra) -> dict:
    return dict(family="resnet", paper=paper, input_size=(3, 32, 32), dataset="cifar10",
                num_classes=10, params=params, top1_error=error, error_source=source,
                recipe=recipe, **extra)


def _resnet_cifar(depth: int, **kwargs) -> CifarResNet:
    # He et al. 2016, Sec. 4.2: 6n+2 layers, n basic blocks per stage.
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return CifarResNet(CifarNetSpec("basic", (depth - 2) // 6), **kwargs)


_TABLE6 = "He et al. 2016, Table 6 (CIFAR-10 test, best of runs)"


# Exact counts with option A: 3x3 stem, 2n convs per stage, FC 64->10 (test_resnet_cifar.py).
@register_model(**_cifar_info(269_722, error=8.75, source=_TABLE6))
def resnet20(**kwargs) -> CifarResNet:
    return _resnet_cifar(20, **kwargs)


@register_model(**_cifar_info(464_154, error=7.51, source=_TABLE6))
def resnet32(**kwargs) -> CifarResNet:
    return _resnet_cifar(32, **kwargs)


@register_model(**_cifar_info(658_586, error=7.17, source=_TABLE6))
def resnet44(**kwargs) -> CifarResNet:
    return _resnet_cifar(44, **kwargs)


@register_model(**_cifar_info(853_018, error=6.97, source=_TABLE6))
def resnet56(**kwargs) -> CifarResNet:
    return _resnet_cifar(56, **kwargs)


@register_model(**_cifar_info(1_727_962, error=6.43, source=_TABLE6))
def resnet110(**kwargs) -> CifarResNet:
    return _resnet_cifar(110, **kwargs)


@register_model(**_cifar_info(19_421_274, error=7.93, source=_TABLE6))
def resnet1202(**kwargs) -> CifarResNet:
    return _resnet_cifar(1202, **kwargs)


# Plain nets (Sec. 4.2, Fig. 6 left): the same layers without shortcuts, the same counts.
@register_model(**_cifar_info(269_722))
def plain20(**kwargs) -> CifarResNet:
    return _resnet_cifar(20, residual=False, **kwargs)


@register_model(**_cifar_info(464_154))
def plain32(**kwargs) -> CifarResNet:
    return _resnet_cifar(32, residual=False, **kwargs)


@register_model(**_cifar_info(658_586))
def plain44(**kwargs) -> CifarResNet:
    return _resnet_cifar(44, residual=False, **kwargs)


@register_model(**_cifar_info(853_018))
def plain56(**kwargs) -> CifarResNet:
    return _resnet_cifar(56, residual=False, **kwargs)


@register_model(**_cifar_info(1_727_962))
def plain110(**kwargs) -> CifarResNet:
    return _resnet_cifar(110, residual=False, **kwargs)


# --- Pre-activation (He et al. 2016b, Table 3; Kaiming He's resnet-1k-layers code) ----------

_PREACT_SOURCE = "He et al. 2016b, Table 3 (CIFAR-10)"


@register_model(**_cifar_info(
    1_727_962, paper=HE_2016B, error=6.37, source=_PREACT_SOURCE,
    deviations=("option A shortcuts as in ResNet-110 (the paper does not restate its choice)",),
))
def preact_resnet110(**kwargs) -> CifarResNet:
    return CifarResNet(CifarNetSpec("basic", 18, preact=True), **kwargs)


@register_model(**_cifar_info(
    1_703_258, paper=HE_2016B, error=5.46, source=_PREACT_SOURCE,
))
def preact_resnet164(**kwargs) -> CifarResNet:
    # As the paper's released code (KaimingHe/resnet-1k-layers): bottlenecks with 64/128/256
    # outputs, stride on the first 1x1, a bare 1x1 projection where the shape changes, the
    # BN-ReLU shared with it there, no conv biases.
    kwargs.setdefault("shortcut", "B")
    kwargs.setdefault("stride_in_1x1", True)
    return CifarResNet(CifarNetSpec("bottleneck", 18, preact=True), **kwargs)


# --- ResNeXt-29 (Xie et al. 2017, Sec. 5.3) ---------------------------------------------------

_XIE_SOURCE = "Xie et al. 2017, Table 7 (CIFAR-10)"


def _resnext29(cardinality: int, width: int, **kwargs) -> CifarResNet:
    # 3 stages x 3 bottlenecks (29 = 9 x 3 + 2), outputs 256/512/1024, 64-wide 3x3 stem;
    # the group width C x d doubles per stage; projection shortcuts (conv + BN).
    kwargs.setdefault("shortcut", "B")
    spec = CifarNetSpec("bottleneck", 3, planes=(64, 128, 256), stem_channels=64)
    return CifarResNet(spec, groups=cardinality, width_per_group=width, **kwargs)


@register_model(**_cifar_info(34_426_698, paper=XIE_2017, recipe="xie2017_cifar", error=3.65,
                              source=_XIE_SOURCE))
def resnext29_8x64d(**kwargs) -> CifarResNet:
    return _resnext29(8, 64, **kwargs)


@register_model(**_cifar_info(68_155_210, paper=XIE_2017, recipe="xie2017_cifar", error=3.58,
                              source=_XIE_SOURCE))
def resnext29_16x64d(**kwargs) -> CifarResNet:
    return _resnext29(16, 64, **kwargs)


# --- Wide ResNets (Zagoruyko & Komodakis 2016, Table 1) ---------------------------------------

def _wrn(depth: int, k: int, **kwargs) -> CifarResNet:
    # WRN-d-k: (d - 4) / 6 pre-activation basic blocks per group, widths 16k/32k/64k,
    # 1x1 projection (no BN) where the shape changes.
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}")
    kwargs.setdefault("shortcut", "B")
    spec = CifarNetSpec("basic", (depth - 4) // 6, planes=(16 * k, 32 * k, 64 * k), preact=True)
    return CifarResNet(spec, **kwargs)


_WRN_SOURCE = "Zagoruyko & Komodakis 2016, Table 4 (CIFAR-10, no dropout)"


@register_model(**_cifar_info(2_748_890, paper=ZAGORUYKO_2016, recipe="zagoruyko2016_cifar"))
def wrn16_4(**kwargs) -> CifarResNet:
    return _wrn(16, 4, **kwargs)


@register_model(**_cifar_info(
    36_479_194, paper=ZAGORUYKO_2016, recipe="zagoruyko2016_cifar", error=4.00,
    source=_WRN_SOURCE + "; 3.89% with dropout=0.3",
))
def wrn28_10(**kwargs) -> CifarResNet:
    return _wrn(28, 10, **kwargs)


@register_model(**_cifar_info(8_949_210, paper=ZAGORUYKO_2016, recipe="zagoruyko2016_cifar",
                              error=4.53, source=_WRN_SOURCE))
def wrn40_4(**kwargs) -> CifarResNet:
    return _wrn(40, 4, **kwargs)


# --- Stochastic depth (Huang et al. 2016, Sec. 4) ---------------------------------------------

@register_model(**_cifar_info(
    1_727_962, paper=HUANG_2016, recipe="huang2016_cifar", error=5.25,
    source="Huang et al. 2016, Table 1 (CIFAR-10+, ResNet-110 with stochastic depth)",
    deviations=("survivors are scaled by 1/(1-p) while training instead of scaling the "
                "branch by (1-p) at test time: the same expectation",),
))
def resnet110_sd(**kwargs) -> CifarResNet:
    # Linear decay from p_0 = 0 to p_L = 0.5 over the 54 blocks (Eq. 4).
    kwargs.setdefault("drop_path_rate", 0.5)
    return _resnet_cifar(110, **kwargs)


# --- RoR-3 (Zhang et al. 2017) ---------------------------------------------------------------

class RoRCifar(Classifier):
    """RoR-3 on a CIFAR ResNet: root, middle and final level shortcuts (Zhang et al. 2017).

    Final level: the ResNet's own block shortcuts (option A). Middle level: one shortcut
    over each stage, identity where the shape is kept and a 1x1 conv + BN projection
    (type B) where it changes. Root level: one 1x1/4 conv + BN projection from the stem to
    the end of the last stage. The outer shortcuts are added to the last block of their
    stage before its ReLU.

    Parameters beyond ResNet-110 (1,727,962): middle 16->32 (512 + 64) and 32->64
    (2,048 + 128), root 16->64 (1,024 + 128): 3,904 in all, 1,731,866.
    """

    def __init__(self, blocks_per_stage: int = 18, num_classes: int = 10, in_chans: int = 3, *,
                 drop_path_rate: float = 0.0, se_reduction: int | None = None,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        self.in_chans = in_chans
        opts = BlockOptions(se_reduction=se_reduction)
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        n = blocks_per_stage
        rates = linear_drop_path_rates(drop_path_rate, 3 * n)
        self.feature_info = [{"channels": 16, "reduction": 1, "module": "relu"}]
        stages, middles, acts = [], [], []
        channels = 16
        for i, planes in enumerate((16, 32, 64)):
            stride = 1 if i == 0 else 2
            stage, out = make_stage(
                BLOCKS[("basic", False)], channels, planes, n, stride, opts=opts,
                shortcut=ZeroPadShortcut, drop_path_rates=rates[i * n:(i + 1) * n],
                last_final_relu=False,
            )
            same = stride == 1 and channels == out
            middles.append(nn.Identity() if same else conv_bn_shortcut(channels, out, stride))
            stages.append(stage)
            acts.append(nn.ReLU(inplace=True))
            self.feature_info.append({"channels": out, "reduction": 2**i, "module": f"acts.{i}"})
            channels = out
        self.stages = nn.ModuleList(stages)
        self.middle = nn.ModuleList(middles)
        self.root = conv_bn_shortcut(16, channels, 4)
        self.acts = nn.ModuleList(acts)
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        he_init(self, zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.relu(self.bn1(self.conv1(x)))
        h = stem
        last = len(self.stages) - 1
        for i, (stage, middle, act) in enumerate(
            zip(self.stages, self.middle, self.acts, strict=True)
        ):
            out = stage(h) + middle(h)
            if i == last:
                out = out + self.root(stem)
            h = act(out)
        return h

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model(**_cifar_info(
    1_731_866, paper=ZHANG_2017,
    deviations=("no error declared: the paper's RoR-3-110 figures mix stochastic depth and "
                "shortcut types; this is RoR-3 with type A final, type B middle/root shortcuts",),
))
def ror3_resnet110(**kwargs) -> RoRCifar:
    return RoRCifar(18, **kwargs)


# --- ResNet in ResNet (Targ, Almeida, Lyons 2016) ---------------------------------------------

class RiRBlock(nn.Module):
    """Two "ResNet Init" layers inside one residual block (Targ et al. 2016, Eq. 1, Fig. 1d).

    A ResNet Init layer maps the residual stream r and the transient stream t:
    r' = BN-ReLU(conv(r, W_rr) + conv(t, W_tr) + shortcut(r)), t' = BN-ReLU(conv(r, W_rt) +
    conv(t, W_tt)). With the streams concatenated as [r, t], the four convolutions are one
    3x3 convolution over both (same weights, same count). The block wraps two such layers in
    a ResNet block: the block's shortcut s(r) (identity, or 1x1 conv + BN where the shape
    changes) is the first layer's residual-stream shortcut and is added again after the
    second layer's BN, before its ReLU; the transient stream has no shortcut.
    """

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.channels = channels
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(2 * in_channels, 2 * channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * channels)
        self.conv2 = nn.Conv2d(2 * channels, 2 * channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * channels)
        changes = stride != 1 or in_channels != channels
        self.shortcut = conv_bn_shortcut(in_channels, channels, stride) if changes else None
        self.relu = nn.ReLU(inplace=True)

    def _add_to_residual(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.cat([h[:, : self.channels] + r, h[:, self.channels:]], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x[:, : self.in_channels]
        s = r if self.shortcut is None else self.shortcut(r)
        h = self.relu(self.bn1(self._add_to_residual(self.conv1(x), s)))  # [r1, t1]
        h = self.bn2(self._add_to_residual(self.conv2(h), h[:, : self.channels]))
        return self.relu(self._add_to_residual(h, s))


class RiRCifar(Classifier):
    """RiR "18-layer + wide" for CIFAR: 3x3 stem, 3 stages x 3 RiR blocks x 2 layers.

    Our reading of Targ et al. 2016, Sec. 3: widths 96/192/384 over both streams (48/96/192
    each), a conv-BN-ReLU stem whose 96 channels are split into the two streams, global
    average pool over both streams, FC. The paper does not tabulate the layers; this
    layout has 9,659,818 parameters against the paper's 10.3M (see ``deviations``).
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(self, num_classes: int = 10, in_chans: int = 3, *,
                 widths: tuple[int, int, int] = (48, 96, 192), blocks_per_stage: int = 3,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError("rir_cifar takes no drop_path_rate: stochastic depth of a "
                             "two-stream block is defined by neither paper")
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, 2 * widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.feature_info = [{"channels": 2 * widths[0], "reduction": 1, "module": "relu"}]
        channels = widths[0]
        for i, width in enumerate(widths):
            blocks = [RiRBlock(channels if j == 0 else width, width,
                               2 if i > 0 and j == 0 else 1) for j in range(blocks_per_stage)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append(
                {"channels": 2 * width, "reduction": 2**i, "module": f"layer{i + 1}"}
            )
            channels = width
        self.num_features = 2 * channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * channels, num_classes)
        he_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model(**_cifar_info(
    9_659_818, paper=TARG_2016, error=5.01,
    source="Targ et al. 2016 (CIFAR-10+, 18-layer + wide RiR)",
    deviations=("layer layout is our reading of the paper (not tabulated there): 9.66M "
                "parameters against the paper's 10.3M",
                "the block's outer shortcut is added after the second layer's BN, before "
                "its ReLU (our reading of Fig. 1d)",
                "the four stream-to-stream convolutions of a layer are one conv over [r, t]",),
))
def rir_cifar(**kwargs) -> RiRCifar:
    return RiRCifar(**kwargs)
