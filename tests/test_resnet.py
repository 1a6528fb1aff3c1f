"""ImageNet ResNet family: counts and MACs derived from the papers' tables, and the options.

Every expected number here is computed from the layer tables (He et al. 2016, Table 1;
Xie et al. 2017, Table 1; Hu et al. 2018, Sec. 3) by the arithmetic below, which never
looks at a model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.models.resnet import RESNET_SPECS, ResNet

from conftest import torchvision_reference
from zoo_helpers import build_on_meta, count_params

# --- the papers' arithmetic -----------------------------------------------------------------

STAGES = (64, 128, 256, 512)  # Table 1: conv2_x .. conv5_x base widths
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
          152: ("bottleneck", (3, 8, 36, 3))}


def conv_params(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return cin // groups * cout * k * k


def table1_params(depth: int, *, groups: int = 1, width_per_group: int = 64,
                  se: int | None = None, residual: bool = True, preact: bool = False) -> int:
    """Parameters of an ImageNet ResNet from Table 1's rows (BN: 2 per channel, FC with bias)."""
    kind, depths = DEPTHS[depth]
    total = conv_params(3, 64, 7) + 2 * 64  # conv1 + its BN
    cin = 64
    for stage, (planes, n) in enumerate(zip(STAGES, depths, strict=True)):
        cout = planes if kind == "basic" else 4 * planes
        width = planes if kind == "basic" else planes * width_per_group // 64 * groups
        for j in range(n):
            stride = 2 if stage > 0 and j == 0 else 1
            if kind == "basic":
                convs = conv_params(cin, width, 3) + conv_params(width, cout, 3)
                bns = [width, cout]
            else:
                convs = (conv_params(cin, width, 1) + conv_params(width, width, 3, groups)
                         + conv_params(width, cout, 1))
                bns = [width, width, cout]
            if preact:  # BN on each conv's input; layer1.0's input is the stem's BN-ReLU
                bns = ([] if stage == 0 and j == 0 else [cin]) + bns[:-1]
            total += convs + 2 * sum(bns)
            if residual and (stride != 1 or cin != cout):  # projection shortcut (option B)
                total += conv_params(cin, cout, 1) + (0 if preact else 2 * cout)
            if se is not None:  # FC C -> C/r and C/r -> C, with biases
                total += 2 * cout * (cout // se) + cout // se + cout
            cin = cout
    if preact:
        total += 2 * cin  # final BN before pooling
    return total + cin * 1000 + 1000


def table1_macs(depth: int, *, groups: int = 1, width_per_group: int = 64,
                stride_in_1x1: bool = False, residual: bool = True) -> int:
    """Multiply-adds of an ImageNet ResNet's conv and FC layers at 224x224 (Table 1)."""
    kind, depths = DEPTHS[depth]
    total = 112 * 112 * conv_params(3, 64, 7)
    res, cin = 56, 64  # after the 3x3/2 max-pool
    for stage, (planes, n) in enumerate(zip(STAGES, depths, strict=True)):
        cout = planes if kind == "basic" else 4 * planes
        width = planes if kind == "basic" else planes * width_per_group // 64 * groups
        for j in range(n):
            stride = 2 if stage > 0 and j == 0 else 1
            out = res // stride
            if kind == "basic":
                total += out**2 * (conv_params(cin, width, 3) + conv_params(width, cout, 3))
            else:
                res_1x1 = out if stride_in_1x1 else res  # where the first 1x1 runs
                total += res_1x1**2 * conv_params(cin, width, 1)
                total += out**2 * (conv_params(width, width, 3, groups)
                                   + conv_params(width, cout, 1))
            if residual and (stride != 1 or cin != cout):  # projection shortcut
                total += out**2 * conv_params(cin, cout, 1)
            res, cin = out, cout
    return total + cin * 1000


def resnet50_macs(stride_in_1x1: bool) -> int:
    return table1_macs(50, stride_in_1x1=stride_in_1x1)


def measured_macs(model: nn.Module, size: int = 224) -> float:
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 2


# --- counts -------------------------------------------------------------------------------

TV = {"resnet18": (18, {}), "resnet34": (34, {}), "resnet50": (50, {}),
      "resnet101": (101, {}), "resnet152": (152, {}),
      "resnext50_32x4d": (50, {"groups": 32, "width_per_group": 4}),
      "resnext101_32x8d": (101, {"groups": 32, "width_per_group": 8}),
      "resnext101_64x4d": (101, {"groups": 64, "width_per_group": 4}),
      "wide_resnet50_2": (50, {"width_per_group": 128}),
      "wide_resnet101_2": (101, {"width_per_group": 128})}


@pytest.mark.parametrize("name", TV)
def test_table1_arithmetic_gives_torchvisions_published_counts(name):
    depth, kw = TV[name]
    assert table1_params(depth, **kw) == torchvision_reference()[name]["num_params_published"]


@pytest.mark.parametrize("name", TV)
def test_table1_arithmetic_gives_torchvisions_published_macs(name):
    depth, kw = TV[name]
    derived = table1_macs(depth, **kw)
    # torchvision publishes GFLOPs (= GMACs) to three decimals.
    assert round(derived, -6) == cnnlab.model_info(name).macs
    assert measured_macs(build_on_meta(name)) == derived


def test_plain18_macs_are_table_1s_1_8_gflops():
    derived = table1_macs(18, residual=False)
    assert round(derived / 1e9, 1) == 1.8
    assert measured_macs(build_on_meta("plain18")) == derived


SE = {"se_resnet18": (18, {}), "se_resnet34": (34, {}), "se_resnet50": (50, {}),
      "se_resnet101": (101, {}), "se_resnet152": (152, {}),
      "se_resnext50_32x4d": (50, {"groups": 32, "width_per_group": 4})}


@pytest.mark.parametrize("name", SE)
def test_se_resnet_counts(name):
    depth, kw = SE[name]
    expected = table1_params(depth, se=16, **kw)
    assert cnnlab.model_info(name).params == expected
    assert count_params(build_on_meta(name)) == expected


def test_se_resnet50_is_hu_2018s_28_09m():
    # ResNet-50's 25.56M plus sum over blocks of (2 C^2/16 + C/16 + C).
    assert round(table1_params(50, se=16) / 1e6, 2) == 28.09
    assert round(table1_params(50) / 1e6, 2) == 25.56


def se_macs(depth: int, reduction: int = 16) -> int:
    """The SE gates' two FC layers per block (C -> C/r -> C) on the pooled 1x1 map."""
    kind, depths = DEPTHS[depth]
    total = 0
    for planes, n in zip(STAGES, depths, strict=True):
        c = planes if kind == "basic" else 4 * planes
        total += n * 2 * c * (c // reduction)
    return total


# Hu et al. 2018, Table 2 GFLOPs; the bottleneck SE-ResNets with v1 stride placement.
SE_GFLOPS = {"se_resnet18": (18, {}, 1.82), "se_resnet34": (34, {}, 3.66),
             "se_resnet50": (50, {"stride_in_1x1": True}, 3.87),
             "se_resnet101": (101, {"stride_in_1x1": True}, 7.60),
             "se_resnet152": (152, {"stride_in_1x1": True}, 11.32),
             "se_resnext50_32x4d": (50, {"groups": 32, "width_per_group": 4}, 4.25)}


@pytest.mark.parametrize("name", SE_GFLOPS)
def test_se_resnet_macs_follow_table_1_plus_the_gates(name):
    depth, kw, published = SE_GFLOPS[name]
    derived = table1_macs(depth, **kw) + se_macs(depth)
    assert measured_macs(build_on_meta(name)) == derived
    # The paper's own counter lands up to 0.4% above conv+FC multiply-adds (SE-ResNeXt-50:
    # 4.233 vs 4.25); v1.5 placement would put SE-ResNet-50 at 4.09, 5.6% above.
    assert derived / 1e9 == pytest.approx(published, rel=5e-3)
    assert cnnlab.model_info(name).macs == round(published * 1e9)


@pytest.mark.parametrize("depth", [18, 34])
def test_plain_nets_are_resnets_without_projection_shortcuts(depth):
    name = f"plain{depth}"
    projections = sum(conv_params(c, 2 * c, 1) + 2 * 2 * c for c in (64, 128, 256))
    assert table1_params(depth, residual=False) == table1_params(depth) - projections
    assert cnnlab.model_info(name).params == table1_params(depth, residual=False)
    plain_keys = set(build_on_meta(name).state_dict())
    res_keys = set(build_on_meta(f"resnet{depth}").state_dict())
    assert plain_keys == {k for k in res_keys if ".downsample." not in k}


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_preact_counts(depth):
    name = f"preact_resnet{depth}"
    assert cnnlab.model_info(name).params == table1_params(depth, preact=True)
    assert count_params(build_on_meta(name)) == table1_params(depth, preact=True)


# --- v1 vs v1.5 stride placement --------------------------------------------------------------

def test_resnet50_v1_measures_table1s_3_8_gflops_and_v15_torchvisions_4_09():
    with torch.device("meta"):
        v1 = measured_macs(ResNet(RESNET_SPECS[50], stride_in_1x1=True))
        v15 = measured_macs(ResNet(RESNET_SPECS[50]))
    assert v1 == resnet50_macs(stride_in_1x1=True)
    assert v15 == resnet50_macs(stride_in_1x1=False)
    # Table 1 states "3.8 x 10^9" for the paper's placement; v1.5 is 7.6% above it.
    assert v1 == pytest.approx(3.8e9, rel=0.016) and v15 != pytest.approx(3.8e9, rel=0.05)
    assert v15 == pytest.approx(4.089e9, rel=1e-3)  # torchvision's published GFLOPs
    # The difference: the first 1x1 of the three strided blocks runs on 4x the pixels.
    assert v15 - v1 == 3 * (28 * 28 * 256 * 128) * 3


def test_stride_in_1x1_moves_the_stride_only():
    v1 = cnnlab.create_model("resnet50", stride_in_1x1=True)
    block = v1.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    block = cnnlab.create_model("resnet50").layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


# --- zero-init, drop-path, SE placement, plain and pre-activation behaviour ---------------------

def _blocks(model: nn.Module) -> list[nn.Module]:
    return [b for name in ("layer1", "layer2", "layer3", "layer4") for b in getattr(model, name)]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_residual_makes_every_block_its_shortcut(name):
    model = cnnlab.create_model(name, zero_init_residual=True).eval()
    x = model.maxpool(model.relu(model.bn1(model.conv1(torch.randn(2, 3, 64, 64)))))
    with torch.no_grad():
        for block in _blocks(model):
            last = block.bn3 if hasattr(block, "bn3") else block.bn2
            assert torch.count_nonzero(last.weight) == 0
            shortcut = x if block.downsample is None else block.downsample(x)
            out = block(x)
            torch.testing.assert_close(out, torch.relu(shortcut))
            x = out
    default = cnnlab.create_model(name)
    assert all(torch.count_nonzero(b.bn2.weight) > 0 for b in _blocks(default))


def test_zero_init_needs_a_last_bn():
    with pytest.raises(ValueError, match="pre-activation"):
        cnnlab.create_model("preact_resnet18", zero_init_residual=True)


def test_drop_path_rates_follow_huangs_linear_rule():
    model = cnnlab.create_model("resnet50", drop_path_rate=0.2)
    blocks = _blocks(model)
    assert len(blocks) == 16
    # Huang et al. 2016, Eq. 4: p_l = l / L * p_L for l = 1..L.
    assert [b.drop_path.p for b in blocks] == pytest.approx([0.2 * l / 16 for l in range(1, 17)])
    assert not any(isinstance(b.drop_path, cnnlab.layers.DropPath)
                   for b in _blocks(cnnlab.create_model("resnet50")))


def test_drop_path_is_off_in_eval_and_drops_whole_branches_in_training():
    torch.manual_seed(0)
    with_dp = cnnlab.create_model("resnet18", drop_path_rate=0.5)
    without = cnnlab.create_model("resnet18")
    without.load_state_dict(with_dp.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(with_dp.eval()(x), without.eval()(x))
        block = with_dp.layer4[1]  # p = 0.5 (the last block), identity shortcut
        assert block.drop_path.p == 0.5
        block.train()
        h = torch.randn(64, 512, 2, 2)
        out = block(h)
        dropped = [torch.equal(out[i], torch.relu(h[i])) for i in range(64)]
        assert 10 < sum(dropped) < 54  # about half of the samples lose their branch


def test_se_gate_scales_the_residual_branch_before_the_add():
    model = cnnlab.create_model("se_resnet50").eval()
    block = model.layer3[2]
    with torch.no_grad():
        block.se.fc2.bias.fill_(-1e4)  # sigmoid -> 0: the whole branch is gated off
        x = torch.randn(2, 1024, 4, 4)
        torch.testing.assert_close(block(x), torch.relu(x))
    assert block.se.fc1.out_channels == 1024 // 16


def test_plain_blocks_have_no_addition():
    plain = cnnlab.create_model("plain18").eval()
    res = cnnlab.create_model("resnet18").eval()
    x1, x2 = torch.randn(2, 2, 64, 8, 8).unbind(0)
    with torch.no_grad():
        for model in (plain, res):
            model.layer1[1].conv2.weight.zero_()  # the branch now outputs relu(BN bias)
        # Without a shortcut the block forgets its input; with one it passes it on.
        torch.testing.assert_close(plain.layer1[1](x1), plain.layer1[1](x2))
        assert not torch.allclose(res.layer1[1](x1), res.layer1[1](x2))


def test_preact_units_end_with_the_addition_and_the_net_with_bn_relu():
    model = cnnlab.create_model("preact_resnet18").eval()
    block = model.layer2[1]
    x = torch.randn(2, 128, 8, 8)
    with torch.no_grad():
        out = block(x)
        branch = block.conv2(block.relu(block.bn2(block.conv1(block.relu(block.bn1(x))))))
        torch.testing.assert_close(out, x + branch)  # no ReLU after the add
        assert (out < 0).any()
        feats = model.forward_features(torch.randn(2, 3, 64, 64))
    assert (feats >= 0).all() and isinstance(model.final_norm, nn.BatchNorm2d)
    assert model.layer1[0].bn1 is None  # the stem's BN-ReLU is its pre-activation


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="se_reduction 7 must divide"):
        cnnlab.create_model("resnet18", se_reduction=7)
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        cnnlab.create_model("resnet18", drop_path_rate=1.0)
    with pytest.raises(ValueError, match="plain"):
        cnnlab.create_model("plain18", drop_path_rate=0.1)
    with pytest.raises(ValueError, match="groups=1"):
        cnnlab.create_model("resnet18", groups=2)


def test_make_stage_is_a_pure_function_returning_the_stage_and_its_width():
    from cnnlab.models.resnet_blocks import BlockOptions, Bottleneck, conv_bn_shortcut, make_stage

    kwargs = dict(opts=BlockOptions(), shortcut=conv_bn_shortcut, drop_path_rates=[0.0] * 3)
    stage, out = make_stage(Bottleneck, 256, 128, 3, 2, **kwargs)
    again, out_again = make_stage(Bottleneck, 256, 128, 3, 2, **kwargs)
    assert out == out_again == 512 and len(stage) == 3
    assert [b.downsample is not None for b in stage] == [True, False, False]
    assert [(k, v.shape) for k, v in stage.state_dict().items()] == [
        (k, v.shape) for k, v in again.state_dict().items()]
    with pytest.raises(ValueError, match="need 3 drop-path rates"):
        make_stage(Bottleneck, 256, 128, 3, 2, opts=BlockOptions(), shortcut=conv_bn_shortcut,
                   drop_path_rates=[0.0])


# --- SE-ResNets in the authors' released (Caffe) form -------------------------------------------

RELEASED_SE = ["se_resnet50", "se_resnet101", "se_resnet152", "se_resnext50_32x4d"]


@pytest.mark.parametrize("name", RELEASED_SE)
def test_se_resnets_default_to_the_released_caffe_stem_and_bn_eps(name):
    released = build_on_meta(name)
    assert (released.maxpool.padding, released.maxpool.ceil_mode) == (0, True)
    bns = [m for m in released.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-4 for m in bns)
    other = build_on_meta(name, released=False)
    assert (other.maxpool.padding, other.maxpool.ceil_mode) == (1, False)
    assert all(m.eps == 1e-5 for m in other.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert any("pad 0, ceil mode" in d and "1e-4" in d for d in cnnlab.model_info(name).deviations)


@pytest.mark.parametrize("size, released_grid, other_grid", [
    # conv1 (7x7/2, pad 3): (N + 6 - 7) // 2 + 1; then the 3x3/2 pool:
    # pad 0 ceil: ceil((M - 3) / 2) + 1; pad 1 floor: (M + 2 - 3) // 2 + 1.
    (224, 56, 56),  # M = 112: ceil(109 / 2) + 1 = 56; 111 // 2 + 1 = 56
    (225, 56, 57),  # M = 113: ceil(110 / 2) + 1 = 56; 112 // 2 + 1 = 57
    (230, 57, 58),  # M = 115: ceil(112 / 2) + 1 = 57; 114 // 2 + 1 = 58
    (5, 1, 2),  # M = 3: ceil(0 / 2) + 1 = 1; 2 // 2 + 1 = 2
])
def test_released_stem_pool_grid_sizes(size, released_grid, other_grid):
    for released, grid in ((True, released_grid), (False, other_grid)):
        model = build_on_meta("se_resnet50", released=released)
        x = torch.empty(1, 3, size, size, device="meta")
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        assert tuple(stem.shape[2:]) == (grid, grid)
    with pytest.raises(ValueError, match="too small"):
        build_on_meta("se_resnet50")(torch.empty(1, 3, 4, 4, device="meta"))
