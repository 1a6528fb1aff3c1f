"""NASNet-A (Zoph, Vasudevan, Shlens, Le 2018), the ImageNet forms of Table 2.

The two cells the search found (Fig. 4) are data: five blocks each, a block being two
``(input, operation)`` pairs whose results are added, and the cell's output the
concatenation of the states it lists. Inputs are ``"h"`` (h_i, the previous cell's output),
``"h_prev"`` (h_{i-1}, the one before) or the index of an earlier block of the same cell.
The network (Fig. 2, ImageNet) is a 3x3/2 convolution, two reduction cells as the stem, and
three stages of N normal cells with a reduction cell between them, the number of filters
doubling at each reduction. "N @ P" in Table 2 names N and the width P of the penultimate
layer: the last normal cell concatenates 6 states of P / 6 filters, so the first stage has
P / 24 filters (44 for 4 @ 1056, 168 for 6 @ 4032).

Where the paper is silent, the released implementation (TF-slim's ``nets/nasnet/nasnet.py``
and ``nasnet_utils.py``, whose checkpoints timm and Cadene's pretrainedmodels port) decides:

- every cell starts with ReLU-1x1 conv-BN on h_i, and brings h_{i-1} to the cell's width:
  ReLU-1x1 conv-BN when only the width differs, and a "factorized reduction" when h_{i-1}
  has twice the resolution (after a reduction): two 1x1 convolutions to half the filters each,
  one on the even pixels and one on the odd pixels (the map shifted by one), concatenated,
  then BN (``_reduce_prev_layer``, ``factorized_reduction``);
- the first stem cell has no h_{i-1}: the stem convolution's output stands in for it
  unchanged (``prev_layer=None``), so its separable convolutions on h_{i-1} map the stem's
  32/96 channels to the cell's width;
- "sep KxK" is ReLU, depthwise KxK + pointwise 1x1, BN, applied twice (the paper applies
  every separable convolution twice; ``_stacked_separable_conv``); only the first takes the
  stride and changes the width;
- an operation on h_i or h_{i-1} in a reduction cell has stride 2, one on a block's output
  stride 1; the stride-2 layers pad as TF's "SAME" (on an even-sized map, one pixel more at
  the bottom/right than at the top/left), the average pools leaving the padding out; a
  pooling or identity whose input width differs from the cell's gets a 1x1 conv-BN (never
  the case in NASNet-A, kept so that other cells built from this table work);
- the normal cell concatenates h_{i-1} with its five block outputs (``used_hiddenstates``):
  6 states, hence the P = 6 x filters of the "N @ P" names; the reduction cell blocks 1-4,
  block 1 included although block 3 reads it (only block 0 is left out);
- after the first reduction cell of a stage, the Large model feeds the next normal cell the
  output of the cell *before* the reduction cell's input as h_{i-1}
  (``skip_reduction_layer_input=1``), the Mobile model the reduction cell's input;
- the head is ReLU, global average pool, dropout (keep 0.5), linear; batch norm has eps 1e-3;
  no convolution has a bias. The optional auxiliary head sits on the last normal cell
  before the second reduction (``_build_aux_head``).

From timm's ``nasnetalarge`` (Cadene's port): the module names (``conv0``, ``cell_stem_0``,
``cell_N``, ``reduction_cell_N``, ``comb_iter_N_left``, ``separable_1.depthwise_conv2d``,
``bn_sep_1``, ``last_linear``), so that :func:`convert_timm_state_dict` only renames the
h_{i-1} adapters, and BN momentum 0.1. The parameter counts equal the release's exactly
(tests/test_nasnet.py: Keras' NASNetMobile/NASNetLarge, the same TF-slim architecture).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

from cnnlab.models.base import Classifier, check_input
from cnnlab.registry import Paper, register_model

__all__ = [
    "NASNET_A_NORMAL", "NASNET_A_REDUCTION", "NASNetA", "NASNetOutputs",
    "convert_timm_state_dict", "nasnet_a_large", "nasnet_a_mobile",
]

NASNET_PAPER = Paper(
    title="Learning Transferable Architectures for Scalable Image Recognition",
    authors="Zoph, Vasudevan, Shlens, Le",
    year=2018,
    url="https://arxiv.org/abs/1707.07012",
)

Input = str | int  # "h" (h_i), "h_prev" (h_{i-1}) or an earlier block of the cell


@dataclass(frozen=True)
class CellSpec:
    """A cell: per block, the (input, operation) of its left and right branch, then the
    states concatenated into the cell's output."""

    blocks: tuple[tuple[tuple[Input, str], tuple[Input, str]], ...]
    concat: tuple[Input, ...]


# Fig. 4 (left), the NASNet-A normal cell; concat as in the release (h_{i-1} included).
NASNET_A_NORMAL = CellSpec(
    blocks=(
        (("h", "sep5x5"), ("h_prev", "sep3x3")),
        (("h_prev", "sep5x5"), ("h_prev", "sep3x3")),
        (("h", "avg3x3"), ("h_prev", "identity")),
        (("h_prev", "avg3x3"), ("h_prev", "avg3x3")),
        (("h", "sep3x3"), ("h", "identity")),
    ),
    concat=("h_prev", 0, 1, 2, 3, 4),
)

# Fig. 4 (right), the NASNet-A reduction cell: block 0 feeds blocks 3 and 4 and is not part of
# the output; block 1 feeds block 3 and is (the release's used_hiddenstates).
NASNET_A_REDUCTION = CellSpec(
    blocks=(
        (("h", "sep5x5"), ("h_prev", "sep7x7")),
        (("h", "max3x3"), ("h_prev", "sep7x7")),
        (("h", "avg3x3"), ("h_prev", "sep5x5")),
        ((1, "identity"), (0, "avg3x3")),
        ((0, "sep3x3"), ("h", "max3x3")),
    ),
    concat=(1, 2, 3, 4),
)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)  # TF-slim's epsilon


class ActConvBn(nn.Sequential):
    """ReLU, KxK convolution (no bias), BN: how TF-slim's cells adapt an input."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = batch_norm(cout)


def tf_same_pad(x: torch.Tensor, kernel_size: int, stride: int, value: float = 0.0
                ) -> torch.Tensor:
    """Pad as TF's "SAME" does: to ceil(n / stride) outputs, the extra pixel at the bottom and
    right. For odd kernels this equals K // 2 on each side except at stride 2 on an even-sized
    map, where the top/left side gets one pixel less (the released model's grid)."""
    pads = []
    # Plain ints (an exported graph keeps them as constants: only the batch axis is dynamic);
    # F.pad takes (left, right, top, bottom).
    for n in (int(x.shape[-1]), int(x.shape[-2])):
        outputs = (n + stride - 1) // stride
        total = max((outputs - 1) * stride + kernel_size - n, 0)
        pads += [total // 2, total - total // 2]
    return nn.functional.pad(x, pads, value=value)


class Conv2dSame(nn.Conv2d):
    """A strided convolution padded as TF's "SAME" (the weights are a plain Conv2d's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(tf_same_pad(x, self.kernel_size[0], self.stride[0]),
                                  self.weight, self.bias)


class SeparableConv2d(nn.Sequential):
    """Depthwise KxK (carrying the stride) then pointwise 1x1, neither with a bias."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        if stride == 1:
            self.depthwise_conv2d = nn.Conv2d(cin, cin, kernel_size, 1, kernel_size // 2,
                                              groups=cin, bias=False)
        else:
            self.depthwise_conv2d = Conv2dSame(cin, cin, kernel_size, stride, 0, groups=cin,
                                               bias=False)
        self.pointwise_conv2d = nn.Conv2d(cin, cout, 1, bias=False)


class BranchSeparables(nn.Sequential):
    """"sep KxK": (ReLU, separable conv, BN) twice; the first has the stride and the width."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.act_1 = nn.ReLU()
        self.separable_1 = SeparableConv2d(cin, cout, kernel_size, stride)
        self.bn_sep_1 = batch_norm(cout)
        self.act_2 = nn.ReLU()
        self.separable_2 = SeparableConv2d(cout, cout, kernel_size)
        self.bn_sep_2 = batch_norm(cout)


class MaxPool2dSame(nn.MaxPool2d):
    """A strided max pool padded as TF's "SAME" (with -inf: padding is never the max)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(
            tf_same_pad(x, self.kernel_size, self.stride, float("-inf")), self.kernel_size,
            self.stride)


class AvgPool2dSame(nn.AvgPool2d):
    """A strided average pool padded as TF's "SAME", averaging only the real pixels (TF's
    average pool ignores its padding): the sum over the window divided by its real pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        ones = torch.ones((1, 1, int(x.shape[-2]), int(x.shape[-1])), dtype=x.dtype,
                          device=x.device)
        total = nn.functional.avg_pool2d(tf_same_pad(x, k, s), k, s)
        real = nn.functional.avg_pool2d(tf_same_pad(ones, k, s), k, s)
        return total / real


class Pool(nn.Sequential):
    """3x3 max or average pool ("same" padding; the average ignores the padding, as TF's
    does), then a 1x1 conv-BN only if the input is not already the cell's width."""

    def __init__(self, kind: str, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if stride == 1:
            self.pool = (nn.MaxPool2d(3, 1, 1) if kind == "max"
                         else nn.AvgPool2d(3, 1, 1, count_include_pad=False))
        else:
            self.pool = MaxPool2dSame(3, stride) if kind == "max" else AvgPool2dSame(3, stride)
        if cin != cout:
            self.conv = nn.Conv2d(cin, cout, 1, bias=False)
            self.bn = batch_norm(cout)


def make_op(name: str, cin: int, cout: int, stride: int) -> nn.Module:
    """One operation of a block, by its name in the cell tables."""
    if name.startswith("sep"):
        return BranchSeparables(cin, cout, int(name[3]), stride)
    if name in ("avg3x3", "max3x3"):
        return Pool(name[:3], cin, cout, stride)
    if name == "identity":
        # TF-slim's "none": a strided or width-changing identity becomes ReLU-1x1 conv-BN.
        return nn.Identity() if stride == 1 and cin == cout else ActConvBn(cin, cout, 1, stride)
    raise ValueError(f"unknown NASNet operation {name!r}; known: sep3x3, sep5x5, sep7x7, "
                     "avg3x3, max3x3, identity")


class FactorizedReduction(nn.Module):
    """Halve the resolution without dropping pixels: a 1x1 conv on the even pixels and one on
    the odd pixels (the map shifted by one, zero-padded at the bottom and right), side by side,
    then BN. ReLU first, as TF-slim applies it before the reduction."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.path_1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.path_2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.final_path_bn = batch_norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1::2, 1::2]
        return self.final_path_bn(
            torch.cat([self.path_1(x[:, :, ::2, ::2]), self.path_2(shifted)], 1))


class Cell(nn.Module):
    """One NASNet cell built from a :class:`CellSpec`.

    ``prev`` says how h_{i-1} reaches the cell's width: "raw" (there is none: the cell's own
    input stands in, as is), "as_is", "conv" (ReLU-1x1 conv-BN) or "reduce" (factorized
    reduction, h_{i-1} having twice the resolution).
    """

    def __init__(self, spec: CellSpec, cin: int, cin_prev: int, filters: int, *,
                 reduction: bool, prev: str) -> None:
        super().__init__()
        self.spec = spec
        self.conv_1x1 = ActConvBn(cin, filters)
        if prev == "reduce":
            self.conv_prev = FactorizedReduction(cin_prev, filters)
        elif prev == "conv":
            self.conv_prev = ActConvBn(cin_prev, filters)
        elif prev in ("as_is", "raw"):
            self.conv_prev = nn.Identity()
        else:
            raise ValueError(f"prev must be raw, as_is, conv or reduce, got {prev!r}")
        self.raw_prev = prev == "raw"
        width = {"h": filters, "h_prev": cin if self.raw_prev else filters}
        for i, block in enumerate(spec.blocks):
            for side, (source, op) in zip(("left", "right"), block, strict=True):
                from_cell_input = isinstance(source, str)
                stride = 2 if reduction and from_cell_input else 1
                cin_op = width[source] if from_cell_input else filters
                self.add_module(f"comb_iter_{i}_{side}", make_op(op, cin_op, filters, stride))
        self.out_channels = sum(width[s] if isinstance(s, str) else filters for s in spec.concat)

    def forward(self, h: torch.Tensor, h_prev: torch.Tensor | None) -> torch.Tensor:
        states: dict[Input, torch.Tensor] = {
            "h": self.conv_1x1(h),
            "h_prev": self.conv_prev(h if h_prev is None else h_prev),
        }
        for i, (left, right) in enumerate(self.spec.blocks):
            a = getattr(self, f"comb_iter_{i}_left")(states[left[0]])
            b = getattr(self, f"comb_iter_{i}_right")(states[right[0]])
            states[i] = a + b
        return torch.cat([states[s] for s in self.spec.concat], 1)


class NASNetAux(nn.Module):
    """The auxiliary head (TF-slim's ``_build_aux_head``): ReLU, 5x5/3 average pool (valid),
    1x1 conv 128-BN-ReLU, a conv as large as the remaining map to 768-BN-ReLU, linear."""

    def __init__(self, cin: int, num_classes: int, map_size: int) -> None:
        super().__init__()
        self.map_size = map_size  # the pooled map at the reference input size
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(5, 3)
        self.proj = nn.Sequential(nn.Conv2d(cin, 128, 1, bias=False), batch_norm(128),
                                  nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(128, 768, map_size, bias=False), batch_norm(768),
                                  nn.ReLU())
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(x))
        if tuple(x.shape[-2:]) != (self.map_size, self.map_size):
            raise ValueError(
                f"the NASNet auxiliary head (training mode) was built for a {self.map_size}x"
                f"{self.map_size} pooled map (the reference input size), got "
                f"{tuple(x.shape[-2:])}; use eval() or aux_logits=False for other sizes")
        return self.fc(torch.flatten(self.conv(self.proj(x)), 1))


class NASNetOutputs(NamedTuple):
    """Training-mode output with the auxiliary head."""

    logits: torch.Tensor
    aux_logits: torch.Tensor


class NASNetA(Classifier):
    """NASNet-A "N @ P" for ImageNet (Fig. 2): stem conv, two reduction cells, then 3 stages of
    ``cells_per_stage`` normal cells with a reduction cell between stages.

    ``penultimate_filters`` is P (the first stage has P / 24 filters), ``stem_filters`` the
    width of the 3x3/2 stem convolution (32 Mobile, 96 Large). ``skip_reduction_input``
    chooses which map the first normal cell after a reduction takes as h_{i-1} (module doc).
    ``aux_logits`` builds the auxiliary head for the ``input_size`` given; in training mode
    ``forward`` then returns :class:`NASNetOutputs`.
    """

    classifier_path = "last_linear"
    aux_classifier_paths = ("aux.fc",)

    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, *, cells_per_stage: int,
        penultimate_filters: int, stem_filters: int, skip_reduction_input: bool,
        aux_logits: bool = False, input_size: int = 224, dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.min_input_size = (3, 3)  # the valid 3x3 stem convolution
        if penultimate_filters % 24:
            raise ValueError(f"penultimate_filters must be a multiple of 24 (6 states x 4), "
                             f"got {penultimate_filters}")
        filters = penultimate_filters // 24
        # Stem: 3x3/2 valid conv-BN (no ReLU: every cell starts with one).
        self.conv0 = nn.Sequential()
        self.conv0.add_module("conv", nn.Conv2d(in_chans, stem_filters, 3, 2, bias=False))
        self.conv0.add_module("bn", batch_norm(stem_filters))

        # Each produced map: (channels, reduction); the wiring says which maps a cell reads.
        maps: list[tuple[int, int]] = [(stem_filters, 2)]
        self._wiring: list[tuple[str, int, int | None]] = []

        def add(name: str, spec: CellSpec, width: int, h: int, h_prev: int | None) -> int:
            reduction = spec is NASNET_A_REDUCTION
            (cin, r), (cin_prev, r_prev) = maps[h], maps[h if h_prev is None else h_prev]
            prev = ("raw" if h_prev is None else "reduce" if r_prev < r
                    else "conv" if cin_prev != width else "as_is")
            cell = Cell(spec, cin, cin_prev, width, reduction=reduction, prev=prev)
            self.add_module(name, cell)
            self._wiring.append((name, h, h_prev))
            maps.append((cell.out_channels, r * 2 if reduction else r))
            return len(maps) - 1

        # TF-slim's cell loop, with its list of outputs ``history`` (None: no h_{i-1} yet).
        history: list[int | None] = [None, 0]
        for k in range(2):  # the ImageNet stem's reduction cells, at 1/4 and 1/2 the filters
            history.append(add(f"cell_stem_{k}", NASNET_A_REDUCTION, filters // 4 * 2**k,
                               history[-1], history[-2]))
        width = filters
        reductions = (cells_per_stage, 2 * cells_per_stage)
        self._stage_ends: list[int] = []
        for n in range(3 * cells_per_stage):
            h_prev = history[-2]
            if n in reductions:
                self._stage_ends.append(len(maps) - 1)
                width *= 2
                k = reductions.index(n)
                history.append(add(f"reduction_cell_{k}", NASNET_A_REDUCTION, width,
                                   history[-1], history[-2]))
                if not skip_reduction_input:
                    h_prev = history[-2]
            history.append(add(f"cell_{n}", NASNET_A_NORMAL, width, history[-1], h_prev))
        self.num_features = maps[-1][0]

        self.aux: NASNetAux | None = None
        self._aux_after = f"cell_{2 * cells_per_stage - 1}"
        if aux_logits:
            # The valid stem conv, then three "same" stride-2 cells rounding up: 224 -> 14.
            stage2 = -(-((input_size - 3) // 2 + 1) // 8)
            self.aux = NASNetAux(maps[self._stage_ends[1]][0], num_classes, (stage2 - 5) // 3 + 1)

        self.act = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(self.num_features, num_classes)

        names = ["conv0"] + [name for name, _, _ in self._wiring]
        self.feature_info = [
            {"channels": stem_filters, "reduction": 2, "module": "conv0"},
            {"channels": maps[1][0], "reduction": 4, "module": "cell_stem_0"},
            *({"channels": maps[i][0], "reduction": maps[i][1], "module": names[i]}
              for i in self._stage_ends),
            {"channels": self.num_features, "reduction": 32, "module": "act"},
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        # TF-slim: variance scaling with fan-out (He et al.'s normal init); BN gamma 1, beta 0.
        if self.conv0.conv.weight.is_meta:
            return  # no values to set (and normal_ on meta is slow: ~4 s for Large)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _cells(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        maps = [self.conv0(x)]
        aux = None
        for name, h, h_prev in self._wiring:
            maps.append(getattr(self, name)(maps[h], None if h_prev is None else maps[h_prev]))
            if with_aux and name == self._aux_after:
                aux = self.aux(maps[-1])
        return self.act(maps[-1]), aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._cells(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | NASNetOutputs:  # type: ignore[override]
        check_input(self, x)
        with_aux = self.training and self.aux is not None
        x, aux = self._cells(x, with_aux)
        logits = self.forward_head(x)
        return NASNetOutputs(logits, aux) if with_aux else logits


_DEVIATIONS = (
    "the released model's details where the paper is silent (module docstring): h_{i-1} "
    "adapted by 1x1 conv or factorized reduction, h_{i-1} concatenated in the normal cell, "
    "the stem conv's output as the first stem cell's h_{i-1}",
    "ScheduledDropPath (the paper's regulariser, keep 0.7 for Large) is not built: a recipe-level "
    "regulariser the released inference model has no weights for",
    "batch norm momentum 0.1 (PyTorch's default) instead of TF-slim's decay 0.9997",
    "aux_logits defaults to False (the head serves training only)",
    "default recipe szegedy2016 (Inception-v3's RMSProp recipe), the nearest one cnnlab "
    "defines: NASNet's own ImageNet schedule and ScheduledDropPath are not a cnnlab recipe",
    "adaptive average pool, so inputs of other sizes work",
)


@register_model(
    family="nasnet",
    paper=NASNET_PAPER,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    # Table 2: 5.3M. Exactly: Keras' NASNetMobile, 5,289,978 trainable (tests/test_nasnet.py).
    params=5_289_978,
    macs=564_000_000,  # Table 2: 564M mult-adds
    top1_error=26.0,
    top5_error=8.4,
    error_source="Zoph et al. 2018, Table 2 (NASNet-A (4 @ 1056), 224x224, single crop)",
    recipe="szegedy2016",
    deviations=_DEVIATIONS,
)
def nasnet_a_mobile(*, aux_logits: bool = False, **kwargs) -> NASNetA:
    """NASNet-A (4 @ 1056), "NASNet-Mobile": 4 normal cells per stage, 44 filters first."""
    return NASNetA(cells_per_stage=4, penultimate_filters=1056, stem_filters=32,
                   skip_reduction_input=False, aux_logits=aux_logits, input_size=224, **kwargs)


@register_model(
    family="nasnet",
    paper=NASNET_PAPER,
    input_size=(3, 331, 331),
    dataset="imagenet",
    num_classes=1000,
    # Table 2: 88.9M. Exactly: Keras' NASNetLarge, 88,753,150 trainable (tests/test_nasnet.py).
    params=88_753_150,
    macs=23_800_000_000,  # Table 2: 23.8B mult-adds
    top1_error=17.3,
    top5_error=3.8,
    error_source="Zoph et al. 2018, Table 2 (NASNet-A (6 @ 4032), 331x331, single crop)",
    recipe="szegedy2016",
    deviations=_DEVIATIONS,
)
def nasnet_a_large(*, aux_logits: bool = False, **kwargs) -> NASNetA:
    """NASNet-A (6 @ 4032), "NASNet-Large": 6 normal cells per stage, 168 filters first."""
    return NASNetA(cells_per_stage=6, penultimate_filters=4032, stem_filters=96,
                   skip_reduction_input=True, aux_logits=aux_logits, input_size=331, **kwargs)


# --- timm's key names (Cadene's port of the TF-slim release) ------------------------------------

# timm's nasnetalarge names every other module as this one does (conv0.conv, cell_stem_0,
# cell_N, reduction_cell_N, conv_1x1, comb_iter_N_left/right.separable_1.depthwise_conv2d,
# bn_sep_1, last_linear); it keeps h_{i-1}'s 1x1 as ``conv_prev_1x1`` and the factorized
# reduction's parts on the cell itself, where this module has them in ``conv_prev``.
_TIMM_RENAMES = (
    (".conv_prev_1x1.", ".conv_prev."),
    (".path_1.conv.", ".conv_prev.path_1."),
    (".path_2.conv.", ".conv_prev.path_2."),
    (".final_path_bn.", ".conv_prev.final_path_bn."),
)


def convert_timm_state_dict(
    state_dict: dict[str, torch.Tensor], model_name: str
) -> dict[str, torch.Tensor]:
    """Rename the keys of timm's ``nasnetalarge`` state_dict to ``nasnet_a_large``'s; the
    tensors pass through unchanged (timm's 1000 classes: TF's background class dropped).

    The weights then load with ``strict=True``. Both pad the stride-2 layers as TF's "SAME";
    timm's stride-2 average pools on even-sized maps (reduction_cell_0 at 331x331) also
    average the padded zeros, which TF and this module leave out, so the outputs differ
    there, at the bottom/right border.
    """
    if model_name != "nasnet_a_large":
        raise ValueError(f"no timm key mapping for {model_name!r}; known: nasnet_a_large")
    converted = {}
    for key, tensor in state_dict.items():
        for old, new in _TIMM_RENAMES:
            if old in key:
                key = key.replace(old, new)
                break
        converted[key] = tensor
    return converted
