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
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn as nn

from cnnlab.layers import ConvBNAct, SqueezeExcite, make_divisible
from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

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


def _integer(value: object, what: str, where: str) -> int:
    """``value`` as a Python int >= 1 (NumPy integers too, as a sampler draws them)."""
    try:
        number = operator.index(value)
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{where}: {what} must be an integer >= 1, got {value!r}")
    return number


def _checked_stage(index: int, stage: Sequence) -> Stage:
    """The stage as a Stage of Python numbers, or a ValueError naming it and the problem."""
    where = f"stage {index + 1} {stage!r}"
    if not (isinstance(stage, Sequence) and 3 <= len(stage) <= 4):
        raise ValueError(f"{where}: a stage is (depth, width, group_width, bottleneck_ratio)")
    where = f"stage {index + 1} {tuple(stage)}"
    depth, width, group_width, ratio = Stage(*stage)
    depth = _integer(depth, "depth", where)
    width = _integer(width, "width", where)
    group_width = _integer(group_width, "group_width", where)
    if not ratio > 0:
        raise ValueError(f"{where}: bottleneck_ratio must be > 0, got {ratio!r}")
    checked = Stage(depth, width, group_width, float(ratio))
    inner = _inner_width(checked)
    if inner < 1 or inner % group_width:
        raise ValueError(
            f"{where}: inner width round({width} / {ratio}) = {inner} is not divisible by "
            f"group_width {group_width}; choose a width whose inner width is a multiple of it"
        )
    return checked


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
        self.stages = tuple(_checked_stage(i, s) for i, s in enumerate(stages))
        if not self.stages:
            raise ValueError("AnyNet needs at least one stage (depth, width, group_width, "
                             "bottleneck_ratio)")
        stem_width = _integer(stem_width, "stem_width", "AnyNet")
        if se_ratio is not None and not 0 < se_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1] or None, got {se_ratio!r}")
        width_in = stem_width
        for i, stage in enumerate(self.stages):
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


# --- the torchvision RegNets as points of the design space ---------------------------------

# (w0, wa, wm, depth, group width, b, SE): RegNetX (b = 1, no SE) and RegNetY (b = 1, SE 0.25)
# of the paper's Appendix (Figs. 15, 16: "top RegNetX/RegNetY models"), the values of
# torchvision's builders; RegNetY-128GF is the SWAG paper's (Singh et al. 2022, Sec. 3).
REGNET_PARAMS: dict[str, RegNetParams] = {
    "regnet_x_400mf": RegNetParams(24, 24.48, 2.54, 22, 16),
    "regnet_x_800mf": RegNetParams(56, 35.73, 2.28, 16, 16),
    "regnet_x_1_6gf": RegNetParams(80, 34.01, 2.25, 18, 24),
    "regnet_x_3_2gf": RegNetParams(88, 26.31, 2.25, 25, 48),
    "regnet_x_8gf": RegNetParams(80, 49.56, 2.88, 23, 120),
    "regnet_x_16gf": RegNetParams(216, 55.59, 2.1, 22, 128),
    "regnet_x_32gf": RegNetParams(320, 69.86, 2.0, 23, 168),
    "regnet_y_400mf": RegNetParams(48, 27.89, 2.09, 16, 8, se_ratio=0.25),
    "regnet_y_800mf": RegNetParams(56, 38.84, 2.4, 14, 16, se_ratio=0.25),
    "regnet_y_1_6gf": RegNetParams(48, 20.71, 2.65, 27, 24, se_ratio=0.25),
    "regnet_y_3_2gf": RegNetParams(80, 42.63, 2.66, 21, 24, se_ratio=0.25),
    "regnet_y_8gf": RegNetParams(192, 76.82, 2.19, 17, 56, se_ratio=0.25),
    "regnet_y_16gf": RegNetParams(200, 106.23, 2.48, 18, 112, se_ratio=0.25),
    "regnet_y_32gf": RegNetParams(232, 115.89, 2.53, 20, 232, se_ratio=0.25),
    "regnet_y_128gf": RegNetParams(456, 160.83, 2.52, 27, 264, se_ratio=0.25),
}


def _regnet(name: str, **kwargs) -> AnyNet:
    return regnet_from_params(*REGNET_PARAMS[name], **kwargs)


_V2 = ("torchvision's IMAGENET1K_V2 weights, trained with its newer recipe (the paper's "
       "100-epoch models are its IMAGENET1K_V1)")


def _register(params: int, gmacs: float, acc1: float, acc5: float, weights: str = "IMAGENET1K_V2",
              paper: Paper = RADOSAVOVIC_2020, resolution: int = 224,
              deviations: tuple[str, ...] = ()):
    return register_model(
        family="regnet", paper=paper, input_size=(3, resolution, resolution),
        dataset="imagenet", num_classes=1000, params=params, macs=round(gmacs * 1e9),
        top1_error=100 - acc1, top5_error=100 - acc5,
        error_source=f"torchvision {weights} weights" + (f"; {_V2}" if weights.endswith("V2")
                                                          else ""),
        recipe="radosavovic2020", torchvision=True, deviations=deviations,
    )


# Published params, GFLOPs (= GMACs of conv and linear layers at 224x224) and acc@1/acc@5
# of torchvision's default weights (tests/data/torchvision_reference.json).
@_register(5_495_976, 0.414, 74.864, 92.322)
def regnet_x_400mf(**kwargs) -> AnyNet:
    """RegNetX-400MF: stages of 1, 2, 7, 12 X blocks, 32..400 wide, group width 16."""
    return _regnet("regnet_x_400mf", **kwargs)


@_register(7_259_656, 0.800, 77.522, 93.826)
def regnet_x_800mf(**kwargs) -> AnyNet:
    """RegNetX-800MF (d 16, w0 56, wa 35.73, wm 2.28, g 16)."""
    return _regnet("regnet_x_800mf", **kwargs)


@_register(9_190_136, 1.603, 79.668, 94.922)
def regnet_x_1_6gf(**kwargs) -> AnyNet:
    """RegNetX-1.6GF (d 18, w0 80, wa 34.01, wm 2.25, g 24)."""
    return _regnet("regnet_x_1_6gf", **kwargs)


@_register(15_296_552, 3.177, 81.196, 95.430)
def regnet_x_3_2gf(**kwargs) -> AnyNet:
    """RegNetX-3.2GF (d 25, w0 88, wa 26.31, wm 2.25, g 48)."""
    return _regnet("regnet_x_3_2gf", **kwargs)


@_register(39_572_648, 7.995, 81.682, 95.678)
def regnet_x_8gf(**kwargs) -> AnyNet:
    """RegNetX-8.0GF (d 23, w0 80, wa 49.56, wm 2.88, g 120)."""
    return _regnet("regnet_x_8gf", **kwargs)


@_register(54_278_536, 15.941, 82.716, 96.196)
def regnet_x_16gf(**kwargs) -> AnyNet:
    """RegNetX-16GF (d 22, w0 216, wa 55.59, wm 2.1, g 128)."""
    return _regnet("regnet_x_16gf", **kwargs)


@_register(107_811_560, 31.736, 83.014, 96.288)
def regnet_x_32gf(**kwargs) -> AnyNet:
    """RegNetX-32GF (d 23, w0 320, wa 69.86, wm 2.0, g 168)."""
    return _regnet("regnet_x_32gf", **kwargs)


@_register(4_344_144, 0.402, 75.804, 92.742)
def regnet_y_400mf(**kwargs) -> AnyNet:
    """RegNetY-400MF: stages of 1, 3, 6, 6 Y blocks, 48..440 wide, group width 8, SE 0.25."""
    return _regnet("regnet_y_400mf", **kwargs)


@_register(6_432_512, 0.834, 78.828, 94.502)
def regnet_y_800mf(**kwargs) -> AnyNet:
    """RegNetY-800MF (d 14, w0 56, wa 38.84, wm 2.4, g 16, SE 0.25)."""
    return _regnet("regnet_y_800mf", **kwargs)


@_register(11_202_430, 1.612, 80.876, 95.444)
def regnet_y_1_6gf(**kwargs) -> AnyNet:
    """RegNetY-1.6GF (d 27, w0 48, wa 20.71, wm 2.65, g 24, SE 0.25)."""
    return _regnet("regnet_y_1_6gf", **kwargs)


@_register(19_436_338, 3.176, 81.982, 95.972)
def regnet_y_3_2gf(**kwargs) -> AnyNet:
    """RegNetY-3.2GF (d 21, w0 80, wa 42.63, wm 2.66, g 24, SE 0.25)."""
    return _regnet("regnet_y_3_2gf", **kwargs)


@_register(39_381_472, 8.473, 82.828, 96.330)
def regnet_y_8gf(**kwargs) -> AnyNet:
    """RegNetY-8.0GF (d 17, w0 192, wa 76.82, wm 2.19, g 56, SE 0.25)."""
    return _regnet("regnet_y_8gf", **kwargs)


@_register(83_590_140, 15.912, 82.886, 96.328)
def regnet_y_16gf(**kwargs) -> AnyNet:
    """RegNetY-16GF (d 18, w0 200, wa 106.23, wm 2.48, g 112, SE 0.25)."""
    return _regnet("regnet_y_16gf", **kwargs)


@_register(145_046_770, 32.280, 83.368, 96.498)
def regnet_y_32gf(**kwargs) -> AnyNet:
    """RegNetY-32GF (d 20, w0 232, wa 115.89, wm 2.53, g 232, SE 0.25)."""
    return _regnet("regnet_y_32gf", **kwargs)


@_register(644_812_894, 374.570, 88.228, 98.682, weights="IMAGENET1K_SWAG_E2E_V1",
           paper=SINGH_2022, resolution=384, deviations=(
               "not in Radosavovic et al. 2020: the SWAG paper's RegNetY-128GF (Singh et al. "
               "2022), whose only weights are pre-trained on 3.6B Instagram images and "
               "fine-tuned at 384x384 (declared input 384: 374.6 GMACs; 127.5 at 224)",))
def regnet_y_128gf(**kwargs) -> AnyNet:
    """RegNetY-128GF (d 27, w0 456, wa 160.83, wm 2.52, g 264, SE 0.25): 645M parameters."""
    return _regnet("regnet_y_128gf", **kwargs)
