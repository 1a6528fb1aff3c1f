"""Receptive fields against a gradient-based ground truth and the published values.

Ground truth (independent of the analyser): make every path add, never cancel or block —
weights set positive, biases zero, BN the identity, activations the identity, max-pool
replaced by an average pool of the same shape — then the input pixels with a nonzero
d(centre output unit)/d(input) are exactly the centre unit's receptive field (clipped to
the image). The analyser's interval for that unit must be the same pixels.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cnnlab
from cnnlab.analysis import summarize
from cnnlab.layers import SqueezeExcite

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.GELU)


def make_additive(model: nn.Module) -> nn.Module:
    for name, child in list(model.named_children()):
        if isinstance(child, nn.MaxPool2d):
            setattr(model, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                              ceil_mode=child.ceil_mode))
        elif isinstance(child, _ACTIVATIONS):
            setattr(model, name, nn.Identity())
        else:
            make_additive(child)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            nn.init.constant_(m.weight, 1.0 / fan_in)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            if m.running_mean is not None:  # else it normalises with the batch's statistics
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
    return model.requires_grad_(False).eval()


def gradient_extent(features, in_chans: int, n: int) -> tuple[tuple[int, int], ...]:
    """Rows and columns of the input that the centre unit of ``features(x)`` depends on."""
    x = torch.ones(1, in_chans, n, n, requires_grad=True)
    out = features(x)
    oh, ow = out.shape[-2:]
    out[0, :, oh // 2, ow // 2].sum().backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))


def analyser_extent(rf, out_hw, n: int, clip: bool = True) -> tuple[tuple[float, float], ...]:
    if rf.covers_input and clip:
        return ((0, n - 1), (0, n - 1))  # "global": every unit sees the whole input
    extents = []
    for size, jump, start, units in zip(rf.sizes, rf.jumps, rf.starts, out_hw, strict=True):
        centre = start + (units // 2) * jump
        lo, hi = centre - (size - 1) / 2, centre + (size - 1) / 2
        extents.append((max(lo, 0), min(hi, n - 1)) if clip else (lo, hi))
    return tuple(extents)


# -- small models with every kind of branch --------------------------------------------------

class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 5, stride=2, padding=2)
        self.short = nn.Conv2d(2, 2, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.short(x)


class Concat(nn.Module):
    """An inception-like module: the widest branch sets the field."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(2, 1, 1)
        self.b3 = nn.Conv2d(2, 1, 3, padding=1)
        self.b5 = nn.Sequential(nn.Conv2d(2, 1, 3, padding=1), nn.Conv2d(1, 1, 5, padding=2))
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.after = nn.Conv2d(4, 2, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)[:, :1]], 1))


class Dilated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 2, 3, padding=2, dilation=2)
        self.c2 = nn.Conv2d(2, 2, 3, padding=4, dilation=4)
        self.c3 = nn.Conv2d(2, 2, 2, stride=2)  # an even kernel: the centre is off-grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.c2(self.c1(F.pad(x, (3, 0, 1, 2)))))


class WithSE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.se = SqueezeExcite(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv(x))


class OptionA(nn.Module):
    """ResNet's CIFAR option-A shortcut: subsample by slicing, pad channels with zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 1, 1))


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 2, 7, 2, 3), nn.BatchNorm2d(2), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.parametrize("cls", [Residual, Concat, Dilated, WithSE, OptionA, Stem])
@pytest.mark.parametrize("n", [16, 37, 64])
def test_small_models_match_gradient_ground_truth(cls, n):
    model = make_additive(cls())
    summary = summarize(model, (2, n, n))
    rf = summary.receptive_field
    out_hw = model(torch.zeros(1, 2, n, n)).shape[-2:]
    expected = analyser_extent(rf, out_hw, n)
    assert gradient_extent(model, 2, n) == expected


def test_offset_slice_matches_gradient_ground_truth():
    class Offset(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(x[:, :, 1::2, 3::2], 3)

    model, n = Offset(), 48
    rf = summarize(model, (1, n, n)).receptive_field
    assert rf.jumps == (6, 6) and rf.starts == (3.0, 5.0)  # 1 + 1·2, 3 + 1·2
    out_hw = model(torch.zeros(1, 1, n, n)).shape[-2:]
    assert gradient_extent(model, 1, n) == analyser_extent(rf, out_hw, n)


@pytest.mark.parametrize(
    "norm", [nn.GroupNorm(1, 2), nn.GroupNorm(2, 2), nn.LayerNorm([20, 20]), nn.InstanceNorm2d(2),
             nn.BatchNorm2d(2, track_running_stats=False)],
    ids=["group-norm-1", "group-norm-2", "layer-norm-hw", "instance-norm", "bn-batch-stats"])
def test_per_sample_norms_see_the_whole_map(norm):
    # their mean and variance come from every position, so the centre unit's gradient is
    # nonzero over the whole input (x - mean = 0 on a constant input, 1/n terms remain)
    n = 20
    model = make_additive(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), norm))
    rf = summarize(model, (2, n, n)).receptive_field
    assert rf.covers_input
    assert gradient_extent(model, 2, n) == analyser_extent(rf, (n, n), n) == ((0, n - 1),) * 2


def test_se_gate_makes_the_field_global():
    s = summarize(WithSE(), (2, 20, 20))
    assert s.receptive_field.covers_input
    assert not summarize(Residual(), (2, 64, 64)).receptive_field.covers_input


def test_stacked_3x3_and_7x7_see_the_same():
    three = nn.Sequential(*[nn.Conv2d(1, 1, 3) for _ in range(3)])
    seven = nn.Sequential(nn.Conv2d(1, 1, 7))
    assert summarize(three, (1, 32, 32)).receptive_field.size == 7
    assert summarize(seven, (1, 32, 32)).receptive_field.size == 7


def test_conv5_then_pool2_sees_6():
    s = summarize(nn.Sequential(nn.Conv2d(1, 1, 5), nn.MaxPool2d(2)), (1, 32, 32))
    assert s.receptive_field.size == 6  # P + K - 1


def test_global_pool_covers_the_input():
    s = summarize(nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1)), (1, 9, 9))
    assert s.receptive_field.covers_input and s.receptive_field.size == 9


# -- the zoo -----------------------------------------------------------------------------------

# Published theoretical receptive fields of the forward_features output (Araujo, Norris, Sim,
# "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019, Table 1;
# torchvision layouts).
KNOWN = {"alexnet": 195, "vgg16": 212, "resnet18": 435, "resnet50": 427, "googlenet": 379,
         "mobilenet_v2": 491}
# Input sizes at which the centre unit's field lies wholly inside the image, so the ground
# truth measures the full, unclipped size.
UNCLIPPED_INPUT = {"alexnet": 256, "vgg16": 256, "resnet18": 512, "resnet50": 480,
                   "googlenet": 448, "mobilenet_v2": 544}
SLOW = {"vgg16", "resnet50", "resnet18", "googlenet"}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_receptive_fields(name):
    if name not in cnnlab.list_models():
        pytest.fail(f"{name} is not registered; the published value cannot be checked")
    rf = summarize(name).receptive_field
    assert rf.size == KNOWN[name]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(KNOWN)])
def test_zoo_receptive_field_matches_gradient_ground_truth(name):
    n = UNCLIPPED_INPUT[name]
    model = make_additive(cnnlab.create_model(name))
    summary = summarize(model, (model.in_chans, n, n))
    out_hw = summary.module_outputs[model.feature_info[-1]["module"]][0][-2:]
    expected = analyser_extent(summary.receptive_field, out_hw, n, clip=False)
    (h_lo, h_hi), _ = expected
    assert 0 <= h_lo and h_hi <= n - 1, "input too small to see the whole field"
    assert h_hi - h_lo + 1 == KNOWN[name]
    assert gradient_extent(model.forward_features, model.in_chans, n) == expected


# -- random branchy models against the ground truth ---------------------------------------------

class SameConv(nn.Module):
    """A shape-preserving conv (odd kernel, 'same' padding with dilation)."""

    def __init__(self, c_in: int, c_out: int, k: int, d: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=(k - 1) // 2 * d, dilation=d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class AddBranch(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CatBranches(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], 1)


@st.composite
def branchy_models(draw):
    n = draw(st.integers(12, 48))
    size, layers = n, []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "maxpool", "avgpool", "add", "cat"]))
        k = draw(st.sampled_from([1, 2, 3, 5]))
        s, p, d = draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
        if kind == "conv" and size + 2 * p - d * (k - 1) - 1 >= 0:
            layers.append(nn.Conv2d(2, 2, k, s, p, d))
            size = (size + 2 * p - d * (k - 1) - 1) // s + 1
        elif kind in ("maxpool", "avgpool") and 2 * p <= k and size + 2 * p - k >= 0:
            pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
            layers.append(pool(k, s, p))
            size = (size + 2 * p - k) // s + 1
        elif kind == "add":
            layers.append(AddBranch(SameConv(2, 2, k | 1, d)))
        elif kind == "cat":
            layers.append(CatBranches(SameConv(2, 1, k | 1, 1), SameConv(2, 1, (k + 2) | 1, d)))
    return nn.Sequential(*layers, nn.Identity()), n


@settings(max_examples=40, deadline=None)
@given(branchy_models())
def test_random_branchy_models_match_gradient_ground_truth(model_and_n):
    model, n = model_and_n
    # Strides and dilations leave holes in a field, so a field cut by the border can end
    # on a hole; compare on an input large enough that the centre unit's field is whole.
    n *= 4
    model = make_additive(model)
    rf = summarize(model, (2, n, n)).receptive_field
    out_hw = model(torch.zeros(1, 2, n, n)).shape[-2:]
    expected = analyser_extent(rf, out_hw, n, clip=False)
    assume(all(0 <= lo and hi <= n - 1 for lo, hi in expected))
    assert gradient_extent(model, 2, n) == expected


# -- local (conv/pool chain) vs SE-global field --------------------------------------------------

# EfficientNet-B0, Tan & Le 2019, Table 1: the stem's 3x3/2 conv, then per stage the depthwise
# kernel, the first block's stride and the number of blocks (the 1x1 convs add nothing).
B0_STAGES = [(3, 1, 1), (3, 2, 2), (5, 2, 2), (3, 2, 3), (5, 1, 3), (5, 2, 4), (3, 1, 1)]


def b0_local_fields() -> list[int]:
    """r += (k - 1) * j; j *= s, layer by layer; the field after each stage."""
    r, j = 1 + (3 - 1), 2  # the stem
    fields = []
    for k, s, n in B0_STAGES:
        for block in range(n):
            r += (k - 1) * j
            j *= s if block == 0 else 1
        fields.append(r)
    return fields


def test_efficientnet_b0_local_field_is_the_conv_chains_851():
    by_hand = b0_local_fields()
    assert by_hand[-1] == 851
    summary = summarize("efficientnet_b0")
    rf = summary.receptive_field
    assert rf.local_size == 851
    assert rf.covers_input and rf.size > rf.local_size  # the SE gates see every pixel
    # Stages 1, 2, 3, 5, 7 of Table 1 end the five feature_info stages.
    stages = [summary.module_outputs[s["module"]][1].local_size for s in summary.stages]
    assert stages == [by_hand[i] for i in (0, 1, 2, 4, 6)]
    from cnnlab.analysis import render

    totals = render.to_dict(summary)["totals"]["receptive_field"]
    assert (totals["size"], totals["local_size"], totals["covers_input"]) == (rf.size, 851, True)
    assert "local 851 px" in "\n".join(render._footer(summary))
    # Without SE gates the two fields are the same.
    plain = summarize("resnet50").receptive_field
    assert plain.local_size == plain.size == KNOWN["resnet50"]


def test_rf_command_shows_the_local_field_and_says_what_global_means(capsys):
    from cnnlab.cli import main

    assert main(["rf", "efficientnet_b0"]) == 0
    out = capsys.readouterr().out
    assert "local RF" in out and "851" in out
    text = " ".join(out.split())
    assert "(global): every unit sees the whole input" in text
    assert "conventional field of the conv/pool chain" in text
