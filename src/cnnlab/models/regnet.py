"""AnyNet and RegNet (Radosavovic et al. 2020, "Designing Network Design Spaces"; d2l ch. 8.8).

AnyNet (Sec. 3.1, Fig. 3) is a design space, not one network: a stem (3x3 conv, stride 2),
a body of stages and a head (global average pool, FC). Stage i has depth d_i, width w_i,
group width g_i and bottleneck ratio b_i; its first block has stride 2. The block is the
X block (Fig. 4): a 1x1 conv to the inner width w_i / b_i, a 3x3 conv grouped with g_i
channels per group, a 1x1 conv back to w_i; BN after each conv, ReLU after the first two
and after the residual sum; the shortcut is a 1x1 projection (with BN) where the shape
changes. ``bottleneck_ratio`` is the paper's b (b = 1: no bottleneck; b = 4: ResNet's),
where torchvision and d2l pass its inverse as a multiplier. The Y block adds
squeeze-excite after the 3x3 (Sec. 5, "RegNetY"), squeezing to ``se_ratio`` (0.25) of the
block's *input* width.

RegNet (Sec. 4) is the subset whose widths follow a quantised linear function of the block
index, u_j = w0 + wa·j, quantised in log space with step wm (Eqs. 2-4): a network is six
numbers (w0, wa, wm, depth, group width, bottleneck ratio). The torchvision models below are
points of it, built from the paper's parameters (its Appendix, Figs. 15/16, and torchvision's
builders, which use the same values), not from tables of widths. Module names follow
torchvision, so its state_dicts load unchanged.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn as nn

from cnnlab.layers import ConvBNAct, SqueezeExcite, make_divisible
from cnnlab.models.base import Classifier
from cnnlab.registry import Paper

__all__ = [
    "AnyNet",
    "AnyStage",
    "RegNetParams",
    "ResBottleneckBlock",
    "Stage",
    "anynet",
    "regnet_from_params",
    "regnet_stages",
]

RADOSAVOVIC_2020 = Paper(
    title="Designing Network Design Spaces",
    authors="Radosavovic, Kosaraju, Girshick, He, Dollár",
    year=2020,
    url="https://arxiv.org/abs/2003.13678",
)

SINGH_2022 = Paper(
    title="Revisiting Weakly Supervised Pre-Training of Visual Perception Models",
    authors="Singh, Gustafson, Xu, Aggarwal, Ahmed, Mahajan, Misra, Goyal, Joulin, Maaten",
    year=2022,
    url="https://arxiv.org/abs/2201.08371",
)


class Stage(NamedTuple):
    """One AnyNet stage: ``depth`` blocks of output ``width``; inner width
    round(width / bottleneck_ratio) (the paper's b); ``group_width`` channels per group."""

    depth: int
    width: int
    group_width: int
    bottleneck_ratio: float = 1.0


def _inner_width(stage: Stage) -> int:
    return round(stage.width / stage.bottleneck_ratio)


def _check_stage(index: int, stage: Stage) -> None:
    depth, width, group_width, ratio = stage
    where = f"stage {index + 1} {tuple(stage)}"
    if not (isinstance(depth, int) and depth >= 1):
        raise ValueError(f"{where}: depth must be an integer >= 1, got {depth!r}")
    if not (isinstance(width, int) and width >= 1):
        raise ValueError(f"{where}: width must be an integer >= 1, got {width!r}")
    if not (isinstance(group_width, int) and group_width >= 1):
        raise ValueError(f"{where}: group_width must be an integer >= 1, got {group_width!r}")
    if not ratio > 0:
        raise ValueError(f"{where}: bottleneck_ratio must be > 0, got {ratio!r}")
    inner = _inner_width(stage)
    if inner < 1 or inner % group_width:
        raise ValueError(
            f"{where}: inner width round({width} / {ratio}) = {inner} is not divisible by "
            f"group_width {group_width}; choose a width whose inner width is a multiple of it"
        )


class ResBottleneckBlock(nn.Module):
    """The X block (Fig. 4), the Y block with ``se_ratio``: relu(proj(x) + f(x)), with
    ``f`` = 1x1 ``a`` -> grouped 3x3 ``b`` (stride here) -> [``se``] -> 1x1 ``c`` (no ReLU)."""

    def __init__(self, width_in: int, stage: Stage, stride: int, se_ratio: float | None,
                 act_layer: Callable[..., nn.Module] = nn.ReLU) -> None:
        super().__init__()
        width_out = stage.width
        inner = _inner_width(stage)
        # The projection shortcut only where the shape changes (Fig. 4b).
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = ConvBNAct(width_in, width_out, 1, stride, act_layer=None)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["a"] = ConvBNAct(width_in, inner, 1, act_layer=act_layer)
        layers["b"] = ConvBNAct(inner, inner, 3, stride, groups=inner // stage.group_width,
                                act_layer=act_layer)
        if se_ratio:
            # Squeeze relative to the block's input width (pycls and torchvision).
            layers["se"] = SqueezeExcite(inner, round(se_ratio * width_in), act_layer)
        layers["c"] = ConvBNAct(inner, width_out, 1, act_layer=None)
        self.f = nn.Sequential(layers)
        self.activation = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.f(x))


class AnyStage(nn.Sequential):
    """``depth`` blocks; the first has stride 2 and takes the previous stage's width.
    Children are named ``block{index}-{j}``, as in torchvision."""

    def __init__(self, width_in: int, stage: Stage, index: int, se_ratio: float | None,
                 act_layer: Callable[..., nn.Module] = nn.ReLU) -> None:
        super().__init__()
        for j in range(stage.depth):
            block = ResBottleneckBlock(width_in if j == 0 else stage.width, stage,
                                       2 if j == 0 else 1, se_ratio, act_layer)
            self.add_module(f"block{index}-{j}", block)


class AnyNet(Classifier):
    """``stem`` (3x3/2 conv-BN-ReLU) -> ``trunk_output`` (``block1`` .. ``blockN``, each
    halving the resolution) -> global average pool -> ``fc``."""

    def __init__(
        self,
        stages: Sequence[Stage | tuple],
        *,
        stem_width: int = 32,
        se_ratio: float | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.stages = tuple(Stage(*s) for s in stages)
        if not self.stages:
            raise ValueError("AnyNet needs at least one stage (depth, width, group_width, "
                             "bottleneck_ratio)")
        if not (isinstance(stem_width, int) and stem_width >= 1):
            raise ValueError(f"stem_width must be an integer >= 1, got {stem_width!r}")
        if se_ratio is not None and not 0 < se_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1] or None, got {se_ratio!r}")
        width_in = stem_width
        for i, stage in enumerate(self.stages):
            _check_stage(i, stage)
            if se_ratio and round(se_ratio * width_in) < 1:
                raise ValueError(f"stage {i + 1}: se_ratio {se_ratio} of input width "
                                 f"{width_in} squeezes to 0 channels")
            width_in = stage.width
        self.in_chans = in_chans
        self.se_ratio = se_ratio
        self.stem = ConvBNAct(in_chans, stem_width, 3, 2, act_layer=act_layer)
        trunk: OrderedDict[str, nn.Module] = OrderedDict()
        self.feature_info = [{"channels": stem_width, "reduction": 2, "module": "stem"}]
        width_in = stem_width
        for i, stage in enumerate(self.stages, start=1):
            trunk[f"block{i}"] = AnyStage(width_in, stage, i, se_ratio, act_layer)
            width_in = stage.width
            self.feature_info.append({"channels": stage.width, "reduction": 2 ** (i + 1),
                                      "module": f"trunk_output.block{i}"})
        self.trunk_output = nn.Sequential(trunk)
        self.num_features = width_in
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # pycls's init (torchvision's too): He fan-out normal convs, BN identity, FC N(0, 0.01).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
                if m.bias is not None:  # the SE gate's 1x1 convs
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk_output(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


def anynet(
    stages: Sequence[Stage | tuple],
    *,
    stem_width: int = 32,
    se_ratio: float | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    **kwargs,
) -> AnyNet:
    """An AnyNetX network (AnyNetY with ``se_ratio``, e.g. 0.25) from its stages, each a
    ``Stage(depth, width, group_width, bottleneck_ratio)`` or a plain 4-tuple.

    Invalid combinations (an inner width not divisible by the group width, a depth < 1)
    raise a ValueError naming the stage. Cheap to build at MNIST scale::

        anynet([(1, 8, 8, 1.0), (1, 16, 8, 1.0), (2, 32, 8, 1.0), (2, 64, 8, 1.0)],
               stem_width=8, in_chans=1, num_classes=10)
    """
    return AnyNet(stages, stem_width=stem_width, se_ratio=se_ratio, num_classes=num_classes,
                  in_chans=in_chans, **kwargs)


# --- RegNet: the quantised linear parametrisation (Sec. 4) ---------------------------------

_QUANTUM = 8  # block widths are multiples of 8 (Sec. 4, "q = 8")


def block_widths(w0: int, wa: float, wm: float, depth: int) -> list[int]:
    """The per-block widths of Eqs. 2-4: u_j = w0 + wa·j (0 <= j < depth),
    s_j = round(log(u_j / w0) / log(wm)), w_j = w0·wm^s_j rounded to a multiple of 8."""
    if not (isinstance(depth, int) and depth >= 1):
        raise ValueError(f"RegNet depth must be an integer >= 1, got {depth!r}")
    if wa < 0 or w0 <= 0 or wm <= 1 or w0 % _QUANTUM:
        raise ValueError(
            f"invalid RegNet parameters w0={w0}, wa={wa}, wm={wm}: need wa >= 0, "
            f"wm > 1 and w0 a positive multiple of {_QUANTUM}"
        )
    widths = []
    for j in range(depth):
        u = w0 + wa * j
        s = round(math.log(u / w0) / math.log(wm))
        widths.append(int(round(w0 * wm**s / _QUANTUM) * _QUANTUM))
    return widths


class RegNetParams(NamedTuple):
    """The six numbers of a RegNet (Sec. 4) and its SE ratio (None for RegNetX)."""

    w0: int
    wa: float
    wm: float
    depth: int
    group_width: int
    bottleneck_ratio: float = 1.0
    se_ratio: float | None = None


def regnet_stages(w0: int, wa: float, wm: float, depth: int, group_width: int,
                  bottleneck_ratio: float = 1.0) -> list[Stage]:
    """The AnyNet stages of a RegNet: consecutive blocks of equal width form a stage, then
    each stage's width is made compatible with the group width (pycls's and torchvision's
    ``adjust_ws_gs_comp``: the group width is capped at the inner width, and the inner width
    rounded to a multiple of it, as ``make_divisible`` rounds)."""
    if not (isinstance(group_width, int) and group_width >= 1):
        raise ValueError(f"RegNet group_width must be an integer >= 1, got {group_width!r}")
    if not bottleneck_ratio > 0:
        raise ValueError(f"RegNet bottleneck_ratio must be > 0, got {bottleneck_ratio!r}")
    runs: list[list[int]] = []  # [width, depth] per stage
    for w in block_widths(w0, wa, wm, depth):
        if runs and runs[-1][0] == w:
            runs[-1][1] += 1
        else:
            runs.append([w, 1])
    stages = []
    for width, stage_depth in runs:
        inner = int(width / bottleneck_ratio)
        g = min(group_width, inner)
        inner = make_divisible(inner, g)
        stages.append(Stage(stage_depth, int(inner * bottleneck_ratio), g, bottleneck_ratio))
    return stages


def regnet_from_params(
    w0: int, wa: float, wm: float, depth: int, group_width: int,
    bottleneck_ratio: float = 1.0, se_ratio: float | None = None, **kwargs,
) -> AnyNet:
    """A RegNet as a point of AnyNet: :func:`regnet_stages` -> :func:`anynet`
    (``kwargs``: ``stem_width``, ``num_classes``, ``in_chans``, ...)."""
    stages = regnet_stages(w0, wa, wm, depth, group_width, bottleneck_ratio)
    return anynet(stages, se_ratio=se_ratio, **kwargs)
