"""MobileNet V1/V2/V3: counts and mult-adds derived from the papers' tables; width_mult."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.models.mobilenet import MobileNetV3

from zoo_helpers import build_on_meta, count_params


def bn(c: int) -> int:
    return 2 * c


def measured_macs(name: str, size: int = 224, **kw) -> float:
    model = build_on_meta(name, **kw).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 2


def div8(v: float) -> int:
    """The reference code's channel rounding: nearest multiple of 8, never 10% below v."""
    r = max(8, int(v + 4) // 8 * 8)
    return r + 8 if r < 0.9 * v else r


# --------------------------------------------------------------------------------------------
# V1, Howard et al. 2017

# Table 1 written out: (type, stride, output channels) after the 3x3/2 32-channel stem.
V1_TABLE_1 = [
    ("dw", 1, None), ("pw", 1, 64), ("dw", 2, None), ("pw", 1, 128), ("dw", 1, None),
    ("pw", 1, 128), ("dw", 2, None), ("pw", 1, 256), ("dw", 1, None), ("pw", 1, 256),
    ("dw", 2, None), ("pw", 1, 512),
    *[("dw", 1, None), ("pw", 1, 512)] * 5,
    ("dw", 2, None), ("pw", 1, 1024),
    ("dw", 1, None), ("pw", 1, 1024),  # the table's "s2" here is a typo: the map stays 7x7
]


def v1_params_and_mult_adds(alpha: float, size: int) -> tuple[int, int]:
    """Sec. 3.3: every layer's channels times alpha; a dw layer costs 3*3*M*Df^2, a pw layer
    M*N*Df^2 (Eq. 5 with the map size at the layer's output); BN adds 2 per channel."""
    c = int(32 * alpha)
    hw = size // 2
    params, macs = 3 * 9 * c + bn(c), 3 * 9 * c * hw * hw
    for kind, stride, out in V1_TABLE_1:
        if kind == "dw":
            hw //= stride
            params += 9 * c + bn(c)
            macs += 9 * c * hw * hw
        else:
            n = int(out * alpha)
            params += c * n + bn(n)
            macs += c * n * hw * hw
            c = n
    params += c * 1000 + 1000
    macs += c * 1000
    return params, macs


# Table 6 (width multiplier): ImageNet accuracy, million mult-adds, million parameters.
V1_TABLE_6 = {1.0: (70.6, 569, 4.2), 0.75: (68.4, 325, 2.6), 0.5: (63.7, 149, 1.3),
              0.25: (50.6, 41, 0.5)}


@pytest.mark.parametrize("alpha", sorted(V1_TABLE_6))
def test_v1_width_multiplier_follows_table_6(alpha):
    params, macs = v1_params_and_mult_adds(alpha, 224)
    _, published_macs, published_params = V1_TABLE_6[alpha]
    assert count_params(build_on_meta("mobilenet_v1", width_mult=alpha)) == params
    assert measured_macs("mobilenet_v1", width_mult=alpha) == macs
    assert round(params / 1e6, 1) == published_params
    assert round(macs / 1e6) == published_macs


def test_v1_declared_facts():
    info = cnnlab.model_info("mobilenet_v1")
    assert info.params == v1_params_and_mult_adds(1.0, 224)[0]
    assert info.top1 == V1_TABLE_6[1.0][0]


@pytest.mark.parametrize(("size", "published"), [(192, 418), (160, 290), (128, 186)])
def test_v1_resolution_multiplier_follows_table_7(size, published):
    # Table 7: 1.0 MobileNet at 192/160/128; the paper states millions, rounded.
    _, macs = v1_params_and_mult_adds(1.0, size)
    assert measured_macs("mobilenet_v1", size) == macs
    assert abs(macs / 1e6 - published) < 1.0


def test_v1_last_depthwise_layer_keeps_the_7x7_map():
    backbone = build_on_meta("mobilenet_v1", features_only=True)
    maps = backbone(torch.empty(1, 3, 224, 224, device="meta"))
    assert tuple(maps[-1].shape[1:]) == (1024, 7, 7)
    assert [m["reduction"] for m in backbone.feature_info] == [2, 4, 8, 16, 32]


def test_width_mult_rounds_to_multiples_of_8_for_other_alphas():
    # alpha = 0.35 is not in the paper: 32 * 0.35 = 11.2 -> 16, 64 * 0.35 = 22.4 -> 24.
    model = build_on_meta("mobilenet_v1", width_mult=0.35)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths)
    assert widths[:3] == [16, 16, 24]


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small"])
@pytest.mark.parametrize("bad", [0, -0.5])
def test_width_mult_must_be_positive(name, bad):
    with pytest.raises(ValueError, match="width_mult"):
        build_on_meta(name, width_mult=bad)


# --------------------------------------------------------------------------------------------
# V2, Sandler et al. 2018

V2_TABLE_2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1)]


def v2_params(alpha: float = 1.0) -> int:
    """Table 1's bottleneck: 1x1 expand to t*c (absent for t = 1), 3x3 depthwise, linear 1x1;
    each followed by BN. Stem 3x3/2 to 32, last 1x1 to 1280 (kept at 1280 for alpha < 1)."""
    c = div8(32 * alpha)
    total = 3 * 9 * c + bn(c)
    for t, out, n, _ in V2_TABLE_2:
        out = div8(out * alpha)
        for _ in range(n):
            h = c * t
            total += (c * h + bn(h) if t != 1 else 0) + 9 * h + bn(h) + h * out + bn(out)
            c = out
    last = div8(1280 * max(1.0, alpha))
    return total + c * last + bn(last) + last * 1000 + 1000


@pytest.mark.parametrize("alpha", [1.0, 0.5, 1.4])
def test_v2_counts_follow_table_2(alpha):
    assert count_params(build_on_meta("mobilenet_v2", width_mult=alpha)) == v2_params(alpha)


def test_v2_declared_count_and_mult_adds():
    assert cnnlab.model_info("mobilenet_v2").params == v2_params() == 3_504_872
    # Table 4: 300M multiply-adds (1.0) and 585M (1.4), stated to two or three figures.
    assert measured_macs("mobilenet_v2") / 1e6 == pytest.approx(300, abs=1)
    assert measured_macs("mobilenet_v2", width_mult=1.4) / 1e6 == pytest.approx(585, rel=0.01)


def test_v2_keeps_the_last_conv_at_1280_when_narrowed():
    assert build_on_meta("mobilenet_v2", width_mult=0.5).num_features == 1280
    assert build_on_meta("mobilenet_v2", width_mult=1.4).num_features == 1792


def test_v2_residuals_only_where_shapes_match():
    # Table 2: a residual in each repeated block (n - 1 per row): 0+1+2+3+2+2+0 = 10.
    model = build_on_meta("mobilenet_v2")
    residual = [m.use_res_connect for m in model.features if hasattr(m, "use_res_connect")]
    assert len(residual) == 17 and sum(residual) == sum(n - 1 for _, _, n, _ in V2_TABLE_2)


# --------------------------------------------------------------------------------------------
# V3, Howard et al. 2019

# Tables 1 and 2 (input size of the row, exp size, #out, SE, NL, s), after the 16-ch stem.
V3_LARGE_TABLE = [
    (3, 16, 16, 0, "RE", 1), (3, 64, 24, 0, "RE", 2), (3, 72, 24, 0, "RE", 1),
    (5, 72, 40, 1, "RE", 2), (5, 120, 40, 1, "RE", 1), (5, 120, 40, 1, "RE", 1),
    (3, 240, 80, 0, "HS", 2), (3, 200, 80, 0, "HS", 1), (3, 184, 80, 0, "HS", 1),
    (3, 184, 80, 0, "HS", 1), (3, 480, 112, 1, "HS", 1), (3, 672, 112, 1, "HS", 1),
    (5, 672, 160, 1, "HS", 2), (5, 960, 160, 1, "HS", 1), (5, 960, 160, 1, "HS", 1),
]
V3_SMALL_TABLE = [
    (3, 16, 16, 1, "RE", 2), (3, 72, 24, 0, "RE", 2), (3, 88, 24, 0, "RE", 1),
    (5, 96, 40, 1, "HS", 2), (5, 240, 40, 1, "HS", 1), (5, 240, 40, 1, "HS", 1),
    (5, 120, 48, 1, "HS", 1), (5, 144, 48, 1, "HS", 1), (5, 288, 96, 1, "HS", 2),
    (5, 576, 96, 1, "HS", 1), (5, 576, 96, 1, "HS", 1),
]


def v3_params(table, last_channel: int) -> int:
    """Stem 3x3/2 -> 16 (BN); per bneck: [1x1 expand + BN] if exp != in, kxk depthwise + BN,
    [SE: two 1x1 convs with bias through exp/4 rounded to 8], 1x1 project + BN; then 1x1 to
    6x the last width (BN), FC to 1280/1024 (no BN, with bias) and the classifier."""
    c = 16
    total = 3 * 9 * c + bn(c)
    for k, exp, out, se, _, _ in table:
        if exp != c:
            total += c * exp + bn(exp)
        total += k * k * exp + bn(exp)
        if se:
            sq = div8(exp // 4)
            total += exp * sq + sq + sq * exp + exp
        total += exp * out + bn(out)
        c = out
    total += c * 6 * c + bn(6 * c)
    return total + 6 * c * last_channel + last_channel + last_channel * 1000 + 1000


@pytest.mark.parametrize(
    ("name", "table", "last", "published_madds"),
    [("mobilenet_v3_large", V3_LARGE_TABLE, 1280, 219),  # Table 3
     ("mobilenet_v3_small", V3_SMALL_TABLE, 1024, 56)],  # Table 3
)
def test_v3_counts_follow_tables_1_and_2(name, table, last, published_madds):
    derived = v3_params(table, last)
    assert cnnlab.model_info(name).params == derived
    assert count_params(build_on_meta(name)) == derived
    # The paper's own MAdds counter differs slightly from conv+FC multiply-adds
    # (216.6M vs 219M, 56.5M vs 56M): agree to within 2%.
    assert measured_macs(name) / 1e6 == pytest.approx(published_madds, rel=0.02)


def test_v3_activations_and_se_gate_follow_the_tables():
    model = build_on_meta("mobilenet_v3_large")
    blocks = list(model.features)[1:-1]
    for block, (_, _, _, se, nl, _) in zip(blocks, V3_LARGE_TABLE, strict=True):
        acts = {type(m) for m in block.modules()
                if isinstance(m, (nn.ReLU, nn.Hardswish)) and not _inside_se(block, m)}
        assert acts == {nn.Hardswish if nl == "HS" else nn.ReLU}
        gates = [m.scale_activation for m in block.modules() if hasattr(m, "scale_activation")]
        assert [type(g) for g in gates] == ([nn.Hardsigmoid] if se else [])


def _inside_se(block: nn.Module, module: nn.Module) -> bool:
    return any(module is m.activation for m in block.modules() if hasattr(m, "scale_activation"))


def test_v3_width_mult_scales_blocks_but_keeps_the_six_times_last_conv():
    model = build_on_meta("mobilenet_v3_small", width_mult=0.75)
    assert isinstance(model, MobileNetV3)
    last_block = model.features[-2].out_channels
    assert last_block == div8(96 * 0.75) == 72
    assert model.num_features == 6 * last_block
    assert model.classifier[0].out_features == div8(1024 * 0.75)
    assert math.isclose(cnnlab.model_info("mobilenet_v3_small").top1, 67.668)


# --------------------------------------------------------------------------------------------
# Multiply-adds of V2 and V3 at 224x224, from the same tables


def v2_mult_adds() -> int:
    """Stem 3x3/2 at 112; per bottleneck the 1x1 expansion at the input resolution, the 3x3
    depthwise and the 1x1 projection at the output resolution; last 1x1 to 1280 at 7; FC."""
    side, c = 112, 32
    total = side * side * 3 * c * 9
    for t, out, n, s in V2_TABLE_2:
        for i in range(n):
            h = c * t
            total += side * side * c * h if t != 1 else 0
            side //= s if i == 0 else 1
            total += side * side * (9 * h + h * out)
            c = out
    return total + side * side * c * 1280 + 1280 * 1000


def v3_mult_adds(table, last_channel: int) -> int:
    """As V2, with kxk depthwise kernels, the SE's two 1x1 convs on the pooled 1x1 map, the
    1x1 to 6x the last width, and the two FC layers of the head."""
    side, c = 112, 16
    total = side * side * 3 * c * 9
    for k, exp, out, se, _, s in table:
        total += side * side * c * exp if exp != c else 0
        side //= s
        total += side * side * (k * k * exp + exp * out)
        total += 2 * exp * div8(exp // 4) if se else 0
        c = out
    return total + side * side * c * 6 * c + 6 * c * last_channel + last_channel * 1000


@pytest.mark.parametrize(
    ("name", "derive"),
    [("mobilenet_v2", v2_mult_adds),
     ("mobilenet_v3_large", lambda: v3_mult_adds(V3_LARGE_TABLE, 1280)),
     ("mobilenet_v3_small", lambda: v3_mult_adds(V3_SMALL_TABLE, 1024))],
)
def test_declared_mult_adds_follow_from_the_tables(name, derive):
    derived = derive()
    # Declared: torchvision's GFLOPs (= GMACs) to three decimals (0.301, 0.217, 0.057).
    assert round(derived, -6) == cnnlab.model_info(name).macs
    assert measured_macs(name) == derived
