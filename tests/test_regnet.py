"""AnyNet and RegNet (Radosavovic et al. 2020): the design space, the quantised linear
parametrisation, and the torchvision models as points of it.

Expected values are derived by hand in the comments (or retyped from published tables),
never taken from the code's own output.
"""

from __future__ import annotations

import pytest
import torch

import cnnlab
from cnnlab.analysis import summarize
from cnnlab.models import anynet, regnet_from_params
from cnnlab.models.regnet import REGNET_PARAMS, AnyNet, Stage, block_widths, regnet_stages

from zoo_helpers import count_params

# A small AnyNetX for 28x28 MNIST, as the design-space experiment samples them.
MNIST_STAGES = [(1, 8, 8, 1.0), (1, 16, 8, 1.0), (2, 32, 8, 1.0), (2, 64, 8, 1.0)]


# --- the quantised linear parametrisation (Sec. 4, Eqs. 2-4) --------------------------------

def test_block_widths_of_regnetx_400mf_by_hand():
    # w0 = 24, wa = 24.48, wm = 2.54, d = 22. u_j = 24 + 24.48 j; s_j rounds
    # log(u_j / 24) / log(2.54), so s changes where u_j / 24 crosses 2.54^(k + 1/2):
    # 2.54^0.5 = 1.594 (u = 38.3, j = 0.58), 2.54^1.5 = 4.048 (u = 97.2, j = 2.99),
    # 2.54^2.5 = 10.28 (u = 246.8, j = 9.10): s = 0 for j = 0, 1 for j = 1..2, 2 for j = 3..9,
    # 3 for j = 10..21. Widths 24·2.54^s = 24, 60.96, 154.8, 393.3 -> multiples of 8:
    # 24, 64 (7.62 -> 8), 152 (19.35 -> 19), 392 (49.16 -> 49).
    expected = [24] + [64] * 2 + [152] * 7 + [392] * 12
    assert block_widths(24, 24.48, 2.54, 22) == expected


def test_regnetx_400mf_stages_by_hand():
    # The runs above, then widths made compatible with group width 16 (make_divisible(w, 16),
    # which rounds half up): 24 -> 32, 64 -> 64, 152 -> 160, 392 -> 400.
    assert regnet_stages(24, 24.48, 2.54, 22, 16) == [
        Stage(1, 32, 16, 1.0), Stage(2, 64, 16, 1.0), Stage(7, 160, 16, 1.0),
        Stage(12, 400, 16, 1.0),
    ]


def test_regnety_400mf_stages_by_hand():
    # w0 = 48, wa = 27.89, wm = 2.09, d = 16, g = 8. Boundaries 2.09^0.5 = 1.446 (u = 69.4,
    # j = 0.77), 2.09^1.5 = 3.021 (u = 145.0, j = 3.48), 2.09^2.5 = 6.315 (u = 303.1,
    # j = 9.15): depths 1, 3, 6, 6. Widths 48·2.09^s = 48, 100.3, 209.7, 438.2 -> 48, 104
    # (12.54 -> 13), 208 (26.2 -> 26), 440 (54.8 -> 55); all multiples of 8 already.
    assert regnet_stages(48, 27.89, 2.09, 16, 8) == [
        Stage(1, 48, 8, 1.0), Stage(3, 104, 8, 1.0), Stage(6, 208, 8, 1.0),
        Stage(6, 440, 8, 1.0),
    ]


def test_group_width_is_capped_at_the_inner_width():
    # RegNetX-8GF (w0 = 80, g = 120): the first stage is 80 wide, narrower than one group,
    # so its group width becomes 80 (one group, a dense 3x3), as in pycls.
    first = regnet_stages(80, 49.56, 2.88, 23, 120)[0]
    assert (first.width, first.group_width) == (80, 80)


def test_compatibility_with_a_bottleneck_uses_the_inner_width():
    # w0 = 48, wa = 36, wm = 2.5, d = 4: u = 48, 84, 120, 156; log(u/48)/log(2.5) = 0, 0.61,
    # 1, 1.29 -> s = 0, 1, 1, 1: widths 48 and 120 (= 48·2.5), depths 1 and 3. With b = 2 the
    # inner widths are 24 and 60; group width 24 fits 24, and 60 rounds (half up) to 72, so
    # the stage widths become 48 and 144.
    assert regnet_stages(48, 36.0, 2.5, 4, 24, bottleneck_ratio=2.0) == [
        Stage(1, 48, 24, 2.0), Stage(3, 144, 24, 2.0)]
    model = regnet_from_params(48, 36.0, 2.5, 4, 24, bottleneck_ratio=2.0, stem_width=8,
                               in_chans=1, num_classes=10)
    assert model.trunk_output.block2[0].f.b[0].groups == 72 // 24


def test_regnet_from_params_passes_the_anynet_options():
    model = regnet_from_params(8, 8.0, 2.0, 6, 8, stem_width=8, in_chans=1, num_classes=10,
                               se_ratio=0.25).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.stem[0].in_channels == 1 and model.stem[0].out_channels == 8
    assert model.trunk_output.block1[0].f.se.fc1.out_channels == 2  # round(0.25·8)


@pytest.mark.parametrize("kwargs, match", [
    (dict(w0=20, wa=10.0, wm=2.0, depth=10), "multiple of 8"),
    (dict(w0=24, wa=10.0, wm=1.0, depth=10), "wm > 1"),
    (dict(w0=24, wa=-1.0, wm=2.0, depth=10), "wa >= 0"),
    (dict(w0=24, wa=10.0, wm=2.0, depth=0), "depth"),
])
def test_invalid_regnet_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        regnet_from_params(group_width=8, **kwargs)


def test_regnet_from_params_builds_the_stages():
    with torch.device("meta"):
        model = regnet_from_params(24, 24.48, 2.54, 22, 16)
    assert isinstance(model, AnyNet)
    assert [len(s) for s in model.trunk_output] == [1, 2, 7, 12]
    assert model.feature_info.channels() == [32, 32, 64, 160, 400]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]


# --- the X and Y blocks: parameters by hand --------------------------------------------------

def test_x_block_params_by_hand():
    # RegNetX-400MF's first block: 32 -> 32 channels, stride 2, group width 16 (2 groups).
    # proj 1x1 32·32 + BN 2·32 = 1088; a 1x1 32·32 + 64 = 1088; b grouped 3x3: each of the
    # 32 outputs sees 16 inputs: 32·16·9 + 64 = 4672; c 1x1 32·32 + 64 = 1088. Total 7936.
    with torch.device("meta"):
        model = regnet_from_params(24, 24.48, 2.54, 22, 16)
    assert count_params(model.trunk_output.block1[0]) == 1088 + 1088 + 4672 + 1088


def test_y_block_params_by_hand():
    # RegNetY-400MF's first block: 32 -> 48, stride 2, group width 8 (6 groups), SE 0.25 of
    # the input width: round(0.25·32) = 8. proj 32·48 + 96 = 1632; a 32·48 + 96 = 1632;
    # b 48·8·9 + 96 = 3552; SE fc1 48·8 + 8, fc2 8·48 + 48 = 824; c 48·48 + 96 = 2400.
    with torch.device("meta"):
        model = regnet_from_params(48, 27.89, 2.09, 16, 8, se_ratio=0.25)
    assert count_params(model.trunk_output.block1[0]) == 1632 + 1632 + 3552 + 824 + 2400


# --- AnyNet: the design space ----------------------------------------------------------------

def test_small_mnist_anynet_forward_and_features():
    torch.manual_seed(0)
    model = anynet(MNIST_STAGES, stem_width=8, in_chans=1, num_classes=10).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert model.feature_info.channels() == [8, 8, 16, 32, 64]
    # 28 -> 14 (stem) -> 7 -> 4 -> 2 -> 1: every stage halves (padding 1, ceil).
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 64, 1, 1)
    assert [len(stage) for stage in model.trunk_output] == [1, 1, 2, 2]


def test_every_stage_starts_with_a_strided_projection():
    # Stride 2 changes the shape even where the width stays (8 -> 8 in stage 1).
    model = anynet(MNIST_STAGES, stem_width=8, in_chans=1, num_classes=10)
    for stage in model.trunk_output:
        first, rest = stage[0], list(stage)[1:]
        assert first.proj is not None and first.f.b[0].stride == (2, 2)
        assert all(b.proj is None and b.f.b[0].stride == (1, 1) for b in rest)


def test_stage_fields_and_plain_tuples_are_the_same():
    named = [Stage(depth=d, width=w, group_width=g, bottleneck_ratio=b)
             for d, w, g, b in MNIST_STAGES]
    a = anynet(MNIST_STAGES, stem_width=8, in_chans=1, num_classes=10)
    b = anynet(named, stem_width=8, in_chans=1, num_classes=10)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [
        (k, v.shape) for k, v in b.state_dict().items()]
    assert a.stages == tuple(named)


def test_bottleneck_ratio_is_the_papers_b():
    # b = 4: inner width 64 / 4 = 16, group width 8 -> 2 groups in the 3x3.
    model = anynet([(1, 64, 8, 4.0)], stem_width=8, in_chans=1, num_classes=10)
    block = model.trunk_output.block1[0]
    assert block.f.a[0].out_channels == 16
    assert block.f.b[0].groups == 2
    assert block.f.c[0].out_channels == 64


def test_anynet_y_adds_squeeze_excite_relative_to_the_block_input():
    model = anynet(MNIST_STAGES, stem_width=8, in_chans=1, num_classes=10, se_ratio=0.25)
    # Stage 3's first block takes 16 channels: round(0.25·16) = 4; its second takes 32: 8.
    assert model.trunk_output.block3[0].f.se.fc1.out_channels == 4
    assert model.trunk_output.block3[1].f.se.fc1.out_channels == 8
    plain = anynet(MNIST_STAGES, stem_width=8).trunk_output.block1[0].f
    assert "se" not in dict(plain.named_children())


@pytest.mark.parametrize("stages, match", [
    ([(1, 24, 16, 1.0)], "not divisible by group_width 16"),
    ([(1, 64, 24, 2.0)], r"round\(64 / 2.0\) = 32 is not divisible"),
    ([(0, 8, 8, 1.0)], "depth must be an integer >= 1"),
    ([(1, 8, 0, 1.0)], "group_width must be an integer >= 1"),
    ([(1, 8, 8, 0.0)], "bottleneck_ratio must be > 0"),
    ([], "at least one stage"),
])
def test_invalid_anynet_stages_raise_a_clear_error(stages, match):
    with pytest.raises(ValueError, match=match):
        anynet(stages, stem_width=8, in_chans=1, num_classes=10)


def test_numpy_integers_from_a_sampler_are_accepted():
    np = pytest.importorskip("numpy")
    stages = [tuple(np.int64(v) for v in s[:3]) + (np.float64(1.0),) for s in MNIST_STAGES]
    model = anynet(stages, stem_width=np.int64(8), in_chans=1, num_classes=10)
    assert model.stages == tuple(Stage(*s) for s in MNIST_STAGES)
    assert all(type(v) is int for s in model.stages for v in s[:3])


@pytest.mark.parametrize("stage", [(1, 8), (1, 8, 8, 1.0, 0), 8, (1.5, 8, 8, 1.0), (True, 8, 8)])
def test_malformed_stages_raise_a_value_error(stage):
    with pytest.raises(ValueError, match="stage 1"):
        anynet([stage], stem_width=8)


def test_invalid_stage_names_the_stage():
    with pytest.raises(ValueError, match=r"stage 2 \(1, 24, 16, 1.0\)"):
        anynet([(1, 16, 16, 1.0), (1, 24, 16, 1.0)], stem_width=8)


# --- whole networks: parameters and MACs by hand, against the published numbers -------------

def _block_costs(w_in: int, w: int, g: int, se: float | None, h_in: int, stride: int):
    """(params, MACs) of one X/Y block by hand (b = 1: inner width w), BN = 2 params per
    channel; a 1x1 at the input resolution, the 3x3 (stride here), c and proj at the output."""
    h = h_in // stride
    params = w_in * w + 2 * w  # a
    macs = w_in * w * h_in * h_in
    params += w * g * 9 + 2 * w  # b: every output sees one group of g inputs
    macs += w * g * 9 * h * h
    if se:
        s = round(se * w_in)
        params += (w * s + s) + (s * w + w)
        macs += 2 * w * s  # two 1x1 convs on the pooled 1x1 map
    params += w * w + 2 * w  # c
    macs += w * w * h * h
    if stride != 1 or w_in != w:
        params += w_in * w + 2 * w  # proj
        macs += w_in * w * h * h
    return params, macs


def _network_costs(stages, se: float | None, resolution: int, classes: int = 1000):
    h = resolution // 2  # the stem: 3x3/2 conv, 3 -> 32, and its BN
    params, macs = 3 * 32 * 9 + 2 * 32, 32 * 3 * 9 * h * h
    w_in = 32
    for depth, w, g in stages:
        for j in range(depth):
            p, m = _block_costs(w_in, w, g, se, h, 2 if j == 0 else 1)
            params, macs, w_in = params + p, macs + m, w
            h = h // 2 if j == 0 else h
    return params + w_in * classes + classes, macs + w_in * classes


# (depth, width, group width) per stage, as derived by hand above; the published numbers are
# torchvision's (params, GFLOPs = GMACs at 224x224, rounded to three decimals).
@pytest.mark.parametrize("stages, se, params, gmacs", [
    ([(1, 32, 16), (2, 64, 16), (7, 160, 16), (12, 400, 16)], None, 5_495_976, 0.414),
    ([(1, 48, 8), (3, 104, 8), (6, 208, 8), (6, 440, 8)], 0.25, 4_344_144, 0.402),
], ids=["regnetx_400mf", "regnety_400mf"])
def test_hand_counts_equal_the_published_numbers(stages, se, params, gmacs):
    hand_params, hand_macs = _network_costs(stages, se, 224)
    assert hand_params == params
    assert abs(hand_macs / 1e9 - gmacs) <= 0.0005


@pytest.mark.parametrize("name", ["regnet_x_400mf", "regnet_y_400mf"])
def test_the_registered_models_are_the_hand_derived_points(name):
    expected = {"regnet_x_400mf": [(1, 32), (2, 64), (7, 160), (12, 400)],
                "regnet_y_400mf": [(1, 48), (3, 104), (6, 208), (6, 440)]}[name]
    with torch.device("meta"):
        model = cnnlab.create_model(name)
    assert [(len(s), s[0].f.c[0].out_channels) for s in model.trunk_output] == expected
    assert model.se_ratio == REGNET_PARAMS[name].se_ratio


def test_receptive_field_of_regnetx_400mf_by_hand():
    # Stem 3x3/2: 3 px, jump 2. Each block adds its 3x3's 2·jump (the 1x1s add nothing; the
    # 1x1/2 projection's field is smaller), and the first of a stage doubles the jump after:
    # stage 1 (1 block) 3 + 4 = 7; stage 2 (2) 7 + 8 + 16 = 31; stage 3 (7) 31 + 16 + 6·32 =
    # 239; stage 4 (12) 239 + 32 + 11·64 = 975 px, jump 32.
    rf = summarize("regnet_x_400mf").receptive_field
    assert (rf.size, rf.jump) == (975, 32)
