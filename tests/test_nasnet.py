"""NASNet-A (Zoph et al. 2018): counts against Table 2, the released model's exact counts, a
hand formula for one cell's parameters and MACs, the wiring and the auxiliary head.

Everything runs on meta tensors except two tiny real forwards.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.analysis.summary import summarize
from cnnlab.models import nasnet
from cnnlab.models.nasnet import Cell, FactorizedReduction, NASNetOutputs

from zoo_helpers import build_on_meta, count_params

# Table 2 of the paper: (params in millions, mult-adds, penultimate filters, image size).
TABLE_2 = {
    "nasnet_a_mobile": (5.3, 564e6, 1056, 224),
    "nasnet_a_large": (88.9, 23.8e9, 4032, 331),
}

# The released model's exact counts, as Keras reports them for its NASNetMobile/NASNetLarge
# (the TF-slim architecture; keras.io/api/applications lists the totals 5,326,716 and
# 88,949,818; `model.summary()` splits them into trainable and non-trainable, the BN moving
# mean and variance). osmr/imgclsmob's table gives the same trainable counts for Cadene's
# PyTorch port ("NASNet-A 4@1056 ... 5,289,978", "NASNet-A 6@4032 ... 88,753,150").
# (trainable, total, trainable tensors, all tensors)
RELEASED = {
    "nasnet_a_mobile": (5_289_978, 5_326_716, 742, 1126),
    "nasnet_a_large": (88_753_150, 88_949_818, 1018, 1546),
}


def bn_statistics(model: nn.Module) -> tuple[int, int]:
    """(values, tensors) of the BN moving mean and variance: TF's non-trainable variables."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return sum(2 * m.num_features for m in bns), 2 * len(bns)


@pytest.mark.parametrize("name", TABLE_2)
def test_counts_match_table_2_and_the_release(name):
    model = build_on_meta(name)
    trainable, total, n_trainable, n_total = RELEASED[name]
    stats, n_stats = bn_statistics(model)
    assert count_params(model) == trainable == cnnlab.model_info(name).params
    assert len(list(model.parameters())) == n_trainable
    assert count_params(model) + stats == total and n_trainable + n_stats == n_total
    # Table 2's "88.9M" counts every TF variable (the trainable ones alone are 88.75M).
    millions, mult_adds, _, _ = TABLE_2[name]
    assert round((count_params(model) + stats) / 1e6, 1) == millions
    # The declared MACs are Table 2's mult-adds; tests/test_zoo.py measures them (564M, 23.8B:
    # the flop counter gives 563.6M and 23.78B).
    assert cnnlab.model_info(name).macs == mult_adds


@pytest.mark.parametrize("name", TABLE_2)
def test_widths_follow_the_n_at_p_name(name):
    """"N @ P": the last normal cell concatenates 6 states of P / 6 filters; the first stage
    has P / 24 filters, doubled at each reduction; a reduction cell outputs 4 states; the first
    stem cell runs at a quarter of the first stage's filters."""
    penultimate = TABLE_2[name][2]
    f = penultimate // 24
    model = build_on_meta(name)
    assert model.num_pooled_features() == penultimate
    stem = 32 if name == "nasnet_a_mobile" else 96
    assert model.feature_info.channels() == [stem, 4 * f // 4, 6 * f, 12 * f, 24 * f]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    n = 4 if name == "nasnet_a_mobile" else 6
    cells = [k for k in dict(model.named_children()) if k.startswith("cell_")
             and not k.startswith("cell_stem")]
    assert len(cells) == 3 * n
    assert model.get_submodule("reduction_cell_1").out_channels == 4 * 4 * f


def sep_params(cin: int, cout: int, k: int) -> int:
    """(depthwise k x k + pointwise + BN) twice, the second at cout -> cout."""
    return (cin * k * k + cin * cout + 2 * cout) + (cout * k * k + cout * cout + 2 * cout)


def test_one_cells_parameters_and_macs_by_hand():
    """Mobile's cell_1 (28x28): h = cell_0's 264 channels, h_{i-1} = the second stem cell's
    4 x 22 = 88 channels, both brought to F = 44 by ReLU-1x1 conv-BN; then Fig. 4's normal
    cell: two sep 5x5 and three sep 3x3 (F -> F), two average pools and two identities."""
    f, c_in, c_prev, side = 44, 264, 88, 28
    params = (c_in * f + 2 * f) + (c_prev * f + 2 * f) + 2 * sep_params(f, f, 5) \
        + 3 * sep_params(f, f, 3)
    model = build_on_meta("nasnet_a_mobile").eval()
    cell = model.get_submodule("cell_1")
    assert count_params(cell) == params == 42_680
    # Every convolution of a normal cell runs at stride 1 on the 28x28 map: MACs are the
    # convolution weights times 28^2 (BN and pooling are not multiply-accumulates).
    conv_weights = c_in * f + c_prev * f + 2 * 2 * (25 * f + f * f) + 3 * 2 * (9 * f + f * f)
    with FlopCounterMode(display=False) as counter:
        cell(torch.empty(1, c_in, side, side, device="meta"),
             torch.empty(1, c_prev, side, side, device="meta"))
    assert counter.get_total_flops() / 2 == conv_weights * side * side


def test_reduction_cell_parameters_by_hand():
    """Large's reduction_cell_0: h = cell_5 (1008), h_{i-1} = cell_4 (1008) to F = 336;
    sep 5x5, 7x7, 7x7, 5x5, 3x3; pools and the identity have no weights."""
    f, c = 336, 1008
    params = 2 * (c * f + 2 * f) + 2 * sep_params(f, f, 5) + 2 * sep_params(f, f, 7) \
        + sep_params(f, f, 3)
    cell = build_on_meta("nasnet_a_large").get_submodule("reduction_cell_0")
    assert count_params(cell) == params


def test_first_stem_cell_maps_the_stem_conv_in_its_separable_convs():
    """The first stem cell has no h_{i-1}: the stem conv's 32 channels feed its h_{i-1}
    operations (sep 7x7, 7x7, 5x5) directly, their first pointwise conv mapping 32 -> 11."""
    cell = build_on_meta("nasnet_a_mobile").get_submodule("cell_stem_0")
    f, c = 11, 32
    params = (c * f + 2 * f) + 2 * sep_params(c, f, 7) + sep_params(c, f, 5) \
        + sep_params(f, f, 5) + sep_params(f, f, 3)
    assert isinstance(cell.conv_prev, nn.Identity)
    assert count_params(cell) == params
    assert cell.out_channels == 4 * f


def test_reduction_cell_strides_only_the_cell_inputs():
    cell = Cell(nasnet.NASNET_A_REDUCTION, 16, 8, 8, reduction=True, prev="as_is")
    out = cell(torch.randn(1, 16, 10, 10), torch.randn(1, 8, 10, 10))
    assert out.shape == (1, 32, 5, 5)
    # block 4's sep 3x3 reads block 0 (already 5x5): stride 1; block 0's sep 5x5 stride 2
    assert cell.comb_iter_4_left.separable_1.depthwise_conv2d.stride == (1, 1)
    assert cell.comb_iter_0_left.separable_1.depthwise_conv2d.stride == (2, 2)
    assert cell.comb_iter_1_left.pool.stride == 2 and cell.comb_iter_3_right.pool.stride == 1
    assert isinstance(cell.comb_iter_3_left, nn.Identity)


def test_cell_tables_concatenate_what_the_release_does():
    """TF-slim's used_hiddenstates: the normal cell concatenates h_{i-1} (which its blocks
    read) and all five blocks; the reduction cell blocks 1-4, block 1 although block 3 reads
    it. Only block 0 is left out: 6 and 4 states, the widths test_widths_follow_the_n_at_p_name
    checks."""
    assert nasnet.NASNET_A_NORMAL.concat == ("h_prev", 0, 1, 2, 3, 4)
    assert nasnet.NASNET_A_REDUCTION.concat == (1, 2, 3, 4)
    read = {src for block in nasnet.NASNET_A_REDUCTION.blocks for src, _ in block}
    assert 1 in read and 0 in read and 0 not in nasnet.NASNET_A_REDUCTION.concat


def test_factorized_reduction_takes_even_and_odd_pixels():
    fr = FactorizedReduction(1, 2).eval()
    with torch.no_grad():
        fr.path_1.weight.fill_(1.0)
        fr.path_2.weight.fill_(1.0)
        fr.final_path_bn.eps = 0.0
    x = torch.arange(1.0, 26.0).reshape(1, 1, 5, 5)  # positive, so the ReLU keeps it
    out = fr(x)
    assert out.shape == (1, 2, 3, 3)
    torch.testing.assert_close(out[0, 0], x[0, 0, ::2, ::2])
    odd = torch.zeros(3, 3)
    odd[:2, :2] = x[0, 0, 1::2, 1::2]  # the shifted map's last row and column are padding
    torch.testing.assert_close(out[0, 1], odd)


def _cell_inputs(name: str, cell: str) -> tuple[torch.Tensor, torch.Tensor]:
    model = build_on_meta(name).eval()
    outputs: dict[str, torch.Tensor] = {}
    seen: list[tuple[torch.Tensor, ...]] = []
    for child, module in model.named_children():
        module.register_forward_hook(lambda _m, _i, o, child=child: outputs.__setitem__(child, o))
    model.get_submodule(cell).register_forward_pre_hook(lambda _m, args: seen.append(args))
    size = cnnlab.model_info(name).input_size[1:]
    model(torch.empty(1, 3, *size, device="meta"))
    return seen[0], outputs


def test_first_cell_after_a_reduction_reads_the_release_h_prev():
    """TF-slim's skip_reduction_layer_input: Large's cell_6 takes cell_4 (the map before the
    reduction cell's input) as h_{i-1}; Mobile's cell_4 takes cell_3 (the reduction's input)."""
    (h, h_prev), out = _cell_inputs("nasnet_a_large", "cell_6")
    assert h is out["reduction_cell_0"] and h_prev is out["cell_4"]
    (h, h_prev), out = _cell_inputs("nasnet_a_mobile", "cell_4")
    assert h is out["reduction_cell_0"] and h_prev is out["cell_3"]


def test_receptive_field_of_the_stem_by_hand():
    """conv0: 3 px, jump 2. cell_stem_0's longest path: the sep 7x7/2 on h_{i-1} (3 + 6*2,
    then + 6*4 = 39), then block 4's sep 3x3 at jump 4 (+ 2*4 twice): 55 px."""
    summary = summarize("nasnet_a_mobile")
    assert summary.module_outputs["conv0"][1].size == 3
    assert summary.module_outputs["cell_stem_0"][1].size == 55


def test_aux_head_by_hand_and_in_training():
    """Mobile's aux head on cell_7 (528 x 14x14): 5x5/3 pool -> 4x4, 1x1 conv 128-BN,
    4x4 conv 768-BN, linear 768 -> 1000."""
    plain = count_params(build_on_meta("nasnet_a_mobile"))
    model = build_on_meta("nasnet_a_mobile", aux_logits=True).train()
    aux = 528 * 128 + 2 * 128 + 128 * 768 * 16 + 2 * 768 + 768 * 1000 + 1000
    assert count_params(model) - plain == aux
    out = model(torch.empty(2, 3, 224, 224, device="meta"))
    assert isinstance(out, NASNetOutputs) and out.aux_logits.shape == (2, 1000)
    with pytest.raises(ValueError, match="auxiliary head"):
        model(torch.empty(1, 3, 160, 160, device="meta"))
    model.reset_classifier(10)
    assert model.aux.fc.out_features == 10


def test_unknown_operation_is_named():
    with pytest.raises(ValueError, match="conv9x9"):
        nasnet.make_op("conv9x9", 8, 8, 1)


def test_registry_facts():
    mobile, large = cnnlab.model_info("nasnet_a_mobile"), cnnlab.model_info("nasnet_a_large")
    assert (mobile.year, mobile.top1, large.top1) == (2018, 74.0, 82.7)
    assert mobile.input_size == (3, 224, 224) and large.input_size == (3, 331, 331)
    assert mobile.deviations and mobile.torchvision is False


# --- timm's nasnetalarge layout -------------------------------------------------------------
# Retyped from timm's models/nasnet.py (Cadene's port of the TF-slim release): each cell
# class's parametrised submodules, and NASNetALarge.__init__'s channel arguments.


def timm_nasnetalarge_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(key: str, cin: int, cout: int, k: int = 1, groups: int = 1) -> None:
        shapes[f"{key}.weight"] = (cout, cin // groups, k, k)

    def bn(key: str, n: int) -> None:
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.{s}"] = (n,)
        shapes[f"{key}.num_batches_tracked"] = ()

    def act_conv_bn(key: str, cin: int, cout: int) -> None:
        conv(f"{key}.conv", cin, cout)
        bn(f"{key}.bn", cout)

    def branch(key: str, cin: int, cout: int, k: int, stem_cell: bool = False) -> None:
        mid = cout if stem_cell else cin
        conv(f"{key}.separable_1.depthwise_conv2d", cin, cin, k, groups=cin)
        conv(f"{key}.separable_1.pointwise_conv2d", cin, mid)
        bn(f"{key}.bn_sep_1", mid)
        conv(f"{key}.separable_2.depthwise_conv2d", mid, mid, k, groups=mid)
        conv(f"{key}.separable_2.pointwise_conv2d", mid, cout)
        bn(f"{key}.bn_sep_2", cout)

    def paths(key: str, cin: int, half: int) -> None:
        conv(f"{key}.path_1.conv", cin, half)
        conv(f"{key}.path_2.conv", cin, half)
        bn(f"{key}.final_path_bn", 2 * half)

    c, stem = 168, 96
    conv("conv0.conv", 3, stem, 3)
    bn("conv0.bn", stem)
    # CellStem0(96, 42), CellStem1(96, 84)
    n = c // 4
    act_conv_bn("cell_stem_0.conv_1x1", stem, n)
    branch("cell_stem_0.comb_iter_0_left", n, n, 5)
    for key, k in (("0_right", 7), ("1_right", 7), ("2_right", 5)):
        branch(f"cell_stem_0.comb_iter_{key}", stem, n, k, stem_cell=True)
    branch("cell_stem_0.comb_iter_4_left", n, n, 3)
    n = c // 2
    act_conv_bn("cell_stem_1.conv_1x1", 2 * n, n)
    paths("cell_stem_1", stem, n // 2)
    for key, k in (("0_left", 5), ("0_right", 7), ("1_right", 7), ("2_right", 5), ("4_left", 3)):
        branch(f"cell_stem_1.comb_iter_{key}", n, n, k)

    def normal(key: str, in_l: int, out_l: int, in_r: int, out_r: int, first: bool) -> None:
        if first:  # FirstCell: factorized reduction of x_prev to 2 * out_l
            paths(key, in_l, out_l)
        else:
            act_conv_bn(f"{key}.conv_prev_1x1", in_l, out_l)
        act_conv_bn(f"{key}.conv_1x1", in_r, out_r)
        for side, k in (("0_left", 5), ("0_right", 3), ("1_left", 5), ("1_right", 3),
                        ("4_left", 3)):
            branch(f"{key}.comb_iter_{side}", out_r, out_r, k)

    def reduction(key: str, in_l: int, out_l: int, in_r: int, out_r: int) -> None:
        act_conv_bn(f"{key}.conv_prev_1x1", in_l, out_l)
        act_conv_bn(f"{key}.conv_1x1", in_r, out_r)
        for side, k in (("0_left", 5), ("0_right", 7), ("1_right", 7), ("2_right", 5),
                        ("4_left", 3)):
            branch(f"{key}.comb_iter_{side}", out_r, out_r, k)

    normal("cell_0", c, c // 2, 2 * c, c, first=True)
    normal("cell_1", 2 * c, c, 6 * c, c, first=False)
    for i in range(2, 6):
        normal(f"cell_{i}", 6 * c, c, 6 * c, c, first=False)
    reduction("reduction_cell_0", 6 * c, 2 * c, 6 * c, 2 * c)
    normal("cell_6", 6 * c, c, 8 * c, 2 * c, first=True)
    normal("cell_7", 8 * c, 2 * c, 12 * c, 2 * c, first=False)
    for i in range(8, 12):
        normal(f"cell_{i}", 12 * c, 2 * c, 12 * c, 2 * c, first=False)
    reduction("reduction_cell_1", 12 * c, 4 * c, 12 * c, 4 * c)
    normal("cell_12", 12 * c, 2 * c, 16 * c, 4 * c, first=True)
    normal("cell_13", 16 * c, 4 * c, 24 * c, 4 * c, first=False)
    for i in range(14, 18):
        normal(f"cell_{i}", 24 * c, 4 * c, 24 * c, 4 * c, first=False)
    shapes["last_linear.weight"] = (1000, 24 * c)
    shapes["last_linear.bias"] = (1000,)
    return shapes


def test_timm_nasnetalarge_state_dict_loads_strictly():
    from cnnlab.deploy.interop import load_weights

    shapes = timm_nasnetalarge_shapes()
    trainable = sum(math.prod(s) for k, s in shapes.items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert trainable == RELEASED["nasnet_a_large"][0]  # the retyped layout is the release's
    timm_state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    converted = nasnet.convert_timm_state_dict(timm_state, "nasnet_a_large")
    model = build_on_meta("nasnet_a_large")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    model.load_state_dict(converted, strict=True)
    report = load_weights(model, timm_state)  # what `create_model(..., weights=FILE)` does
    assert report.layout.startswith("timm layout") and not report.missing


def test_timm_converter_renames_h_prev_paths():
    t1, t2, t3 = torch.zeros(1), torch.zeros(2), torch.zeros(3)
    out = nasnet.convert_timm_state_dict(
        {"cell_6.path_1.conv.weight": t1, "cell_6.path_2.conv.weight": t2,
         "cell_7.conv_prev_1x1.conv.weight": t3}, "nasnet_a_large")
    assert out["cell_6.conv_prev.path_1.weight"] is t1
    assert out["cell_6.conv_prev.path_2.weight"] is t2
    assert out["cell_7.conv_prev.conv.weight"] is t3
    with pytest.raises(ValueError, match="nasnet_a_large"):
        nasnet.convert_timm_state_dict({}, "nasnet_a_mobile")


def test_stride_2_layers_pad_as_tf_same():
    """TF's "SAME" at stride 2 on a 4x4 map: 2 outputs, total padding (2-1)*2 + 3 - 4 = 1,
    all of it at the bottom/right; so output (0, 0) sees rows/cols 0-2 and (1, 1) sees 2-3
    (and the padding). On a 5x5 map it is 1 on each side, PyTorch's usual padding."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4) - 20.0  # all negative: max-pool padding shows
    conv = nasnet.Conv2dSame(1, 1, 3, 2, 0, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        out = conv(x)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0, 0, 0] == x[0, 0, :3, :3].sum() and out[0, 0, 1, 1] == x[0, 0, 2:, 2:].sum()
    avg = nasnet.AvgPool2dSame(3, 2)(x)
    assert avg[0, 0, 1, 1] == x[0, 0, 2:, 2:].mean()  # 4 real pixels, the padding left out
    assert avg[0, 0, 0, 1] == x[0, 0, :3, 2:].mean()
    peak = nasnet.MaxPool2dSame(3, 2)(x)
    assert peak[0, 0, 1, 1] == x[0, 0, 2:, 2:].max() == -5.0
    odd = torch.randn(1, 1, 5, 5)
    torch.testing.assert_close(conv(odd), nn.functional.conv2d(odd, conv.weight, None, 2, 1))
    torch.testing.assert_close(nasnet.AvgPool2dSame(3, 2)(odd),
                               nn.functional.avg_pool2d(odd, 3, 2, 1, count_include_pad=False))
