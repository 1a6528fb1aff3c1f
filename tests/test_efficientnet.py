"""EfficientNet: counts derived from Table 1 and the scaling rules; Table 2's figures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import cnnlab

from zoo_helpers import build_on_meta, count_params

# Table 1 (EfficientNet-B0), stages 2..8: (MBConv expansion, kernel, stride, #channels, #layers)
TABLE_1 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
           (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]

# The reference code's (width, depth, resolution) per variant; Table 2's params (millions),
# FLOPs (billions) and top-1 accuracy.
VARIANTS = {
    "efficientnet_b0": ((1.0, 1.0, 224), 5.3, 0.39, 77.1),
    "efficientnet_b1": ((1.0, 1.1, 240), 7.8, 0.70, 79.1),
    "efficientnet_b2": ((1.1, 1.2, 260), 9.2, 1.0, 80.1),
    "efficientnet_b3": ((1.2, 1.4, 300), 12, 1.8, 81.6),
    "efficientnet_b4": ((1.4, 1.8, 380), 19, 4.2, 82.9),
    "efficientnet_b5": ((1.6, 2.2, 456), 30, 9.9, 83.6),
    "efficientnet_b6": ((1.8, 2.6, 528), 43, 19, 84.0),
    "efficientnet_b7": ((2.0, 3.1, 600), 66, 37, 84.3),
}


def bn(c: int) -> int:
    return 2 * c


def round8(v: float) -> int:
    r = max(8, int(v + 4) // 8 * 8)
    return r + 8 if r < 0.9 * v else r


def efficientnet_params(width: float, depth: float, classes: int = 1000) -> int:
    """Stem 3x3/2 conv to 32w + BN; per MBConv: [1x1 expand to e = in*t + BN] if t != 1,
    kxk depthwise + BN, SE (1x1 e -> in/4 and back, with biases), 1x1 project + BN;
    repeats ceil(n d); head 1x1 to 4x the last width (1280 for B0) + BN; FC."""
    c = round8(32 * width)
    total = 3 * 9 * c + bn(c)
    for t, k, _, out, n in TABLE_1:
        out = round8(out * width)
        for _ in range(math.ceil(n * depth)):
            e = round8(c * t)
            sq = max(1, c // 4)
            total += (c * e + bn(e) if t != 1 else 0) + k * k * e + bn(e)
            total += e * sq + sq + sq * e + e + e * out + bn(out)
            c = out
    head = 4 * c
    return total + c * head + bn(head) + head * classes + classes


def mult_adds(name: str, size: int) -> float:
    model = build_on_meta(name).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_counts_follow_table_1_and_the_scaling_rules(name):
    (w, d, _), published_millions, _, _ = VARIANTS[name]
    derived = efficientnet_params(w, d)
    assert cnnlab.model_info(name).params == derived
    assert count_params(build_on_meta(name)) == derived
    if name == "efficientnet_b2":
        # Table 2 says 9.2M; Table 1 scaled by (1.1, 1.2) gives 9.11M, as in every port.
        assert derived / 1e6 == pytest.approx(published_millions, rel=0.01)
    else:  # Table 2 states two significant figures
        digits = 1 if published_millions < 10 else 0
        assert round(derived / 1e6, digits) == published_millions


def test_b0_count_is_torchvisions():
    assert efficientnet_params(1.0, 1.0) == 5_288_548


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_flops_at_the_paper_resolution_are_table_2s(name):
    (_, _, res), _, published_billions, _ = VARIANTS[name]
    # Table 2's FLOPs (multiply-adds) come from the authors' counter, which differs from
    # conv+FC multiply-adds by up to 4.5% (B4: 4.39 vs 4.2); agree to within 5%.
    assert mult_adds(name, res) / 1e9 == pytest.approx(published_billions, rel=0.05)


def test_paper_resolutions_and_declared_input_sizes():
    from cnnlab.models.efficientnet import SCALING

    for name, ((w, d, res), *_rest) in VARIANTS.items():
        cfg = SCALING[name]
        assert (cfg.width, cfg.depth, cfg.resolution) == (w, d, res)
        # Declared facts are torchvision's, measured at its crop: the paper's, except B2's 288.
        expected = 288 if name == "efficientnet_b2" else res
        assert cnnlab.model_info(name).input_size == (3, expected, expected)


def test_depth_scaling_rounds_repeats_up():
    # B7: ceil(n * 3.1) for n = 1, 2, 2, 3, 3, 4, 1 -> 4, 7, 7, 10, 10, 13, 4 (55 blocks).
    model = build_on_meta("efficientnet_b7")
    stages = list(model.features)[1:-1]
    assert [len(s) for s in stages] == [4, 7, 7, 10, 10, 13, 4]


def test_stochastic_depth_rises_linearly_to_0_2():
    model = build_on_meta("efficientnet_b0")
    probs = [m.stochastic_depth.p for s in list(model.features)[1:-1] for m in s]
    assert len(probs) == 16
    assert probs == pytest.approx([0.2 * i / 16 for i in range(16)])
    # The same keyword as the ResNet family's; a rate of 1 would drop whole blocks always.
    model = build_on_meta("efficientnet_b0", drop_path_rate=0.4)
    probs = [m.stochastic_depth.p for s in list(model.features)[1:-1] for m in s]
    assert probs == pytest.approx([0.4 * i / 16 for i in range(16)])
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        build_on_meta("efficientnet_b0", drop_path_rate=1.0)


def test_stage_shapes_follow_table_1():
    # Table 1: 112x112x16, 56x56x24, 28x28x40, 14x14x112, 7x7x1280 at 224.
    backbone = build_on_meta("efficientnet_b0", features_only=True)
    maps = backbone(torch.empty(1, 3, 224, 224, device="meta"))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (16, 112, 112), (24, 56, 56), (40, 28, 28), (112, 14, 14), (1280, 7, 7),
    ]


@pytest.mark.parametrize(("name", "eps"), [("efficientnet_b4", 1e-5), ("efficientnet_b5", 1e-3)])
def test_batchnorm_settings_are_torchvisions(name, eps):
    norms = [m for m in build_on_meta(name).modules() if isinstance(m, nn.BatchNorm2d)]
    assert {m.eps for m in norms} == {eps}
    assert {m.momentum for m in norms} == {0.1 if eps == 1e-5 else 0.01}


def test_activations_are_silu_and_se_squeezes_a_quarter_of_the_block_input():
    model = build_on_meta("efficientnet_b0")
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
    block = model.features[2][0]  # first block of stage 3: 16 -> 24, expanded to 96
    se = block.block[2]
    assert (se.fc1.in_channels, se.fc1.out_channels) == (96, 16 // 4)


def test_dropout_defaults_follow_the_reference_code():
    # B0/B1 0.2, B2/B3 0.3, B4/B5 0.4, B6/B7 0.5.
    for i, p in enumerate([0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5]):
        assert build_on_meta(f"efficientnet_b{i}").classifier[0].p == p
    assert build_on_meta("efficientnet_b0", dropout=0.0).classifier[0].p == 0.0


def efficientnet_mult_adds(width: float, depth: float, res: int) -> int:
    """Conv and FC multiply-adds at res x res: "same" padding, so each stride-2 layer gives
    ceil(side / 2); per MBConv the 1x1 expansion at the input side, the kxk depthwise and the
    1x1 projection at the output side, the SE's two 1x1 convs on the pooled 1x1 map."""
    side = -(-res // 2)
    c = round8(32 * width)
    total = side * side * 3 * c * 9
    for t, k, s, out, n in TABLE_1:
        out = round8(out * width)
        for i in range(math.ceil(n * depth)):
            e, sq = round8(c * t), max(1, c // 4)
            total += side * side * c * e if t != 1 else 0
            side = -(-side // 2) if i == 0 and s == 2 else side
            total += side * side * (k * k * e + e * out) + 2 * e * sq
            c = out
    return total + side * side * c * 4 * c + 4 * c * 1000


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_declared_mult_adds_follow_from_table_1_at_the_declared_crop(name):
    (w, d, _), *_rest = VARIANTS[name]
    res = cnnlab.model_info(name).input_size[1]  # torchvision's crop (B2: 288)
    derived = efficientnet_mult_adds(w, d, res)
    # Declared: torchvision's GFLOPs (= GMACs) to three decimals.
    assert round(derived, -6) == cnnlab.model_info(name).macs
    assert mult_adds(name, res) == derived
