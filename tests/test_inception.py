"""Inception v3, BN-Inception, Inception-v4 and Inception-ResNet-v2 against their papers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.models.inception_v3 import InceptionOutputs

from zoo_helpers import build_on_meta, count_params


def conv_bn(cin: int, cout: int, kh: int, kw: int | None = None) -> int:
    """Weights of a bias-free convolution plus its BN's scale and shift."""
    return kh * (kh if kw is None else kw) * cin * cout + 2 * cout


# --- Inception v3 (Szegedy et al. 2016; the released model's widths, as torchvision ports) ---


def inception_v3_params(aux: bool) -> int:
    total = conv_bn(3, 32, 3) + conv_bn(32, 32, 3) + conv_bn(32, 64, 3)
    total += conv_bn(64, 80, 1) + conv_bn(80, 192, 3)
    cin = 192
    for pool_features in (32, 64, 64):  # 3 x Inception at 35x35 (Fig. 5)
        total += conv_bn(cin, 64, 1) + conv_bn(cin, 48, 1) + conv_bn(48, 64, 5)
        total += conv_bn(cin, 64, 1) + conv_bn(64, 96, 3) + conv_bn(96, 96, 3)
        total += conv_bn(cin, pool_features, 1)
        cin = 64 + 64 + 96 + pool_features
    # Grid reduction 35 -> 17 (Fig. 10).
    total += conv_bn(cin, 384, 3) + conv_bn(cin, 64, 1) + conv_bn(64, 96, 3) + conv_bn(96, 96, 3)
    cin = 384 + 96 + cin
    assert cin == 768
    for c7 in (128, 160, 160, 192):  # 4 x Inception with factorised 7x7 (Fig. 6)
        total += conv_bn(cin, 192, 1) + conv_bn(cin, c7, 1) + conv_bn(c7, c7, 1, 7)
        total += conv_bn(c7, 192, 7, 1) + conv_bn(cin, c7, 1) + 3 * conv_bn(c7, c7, 7, 1)
        total += conv_bn(c7, 192, 1, 7) + conv_bn(cin, 192, 1)
    if aux:  # Fig. 8: 1x1 conv 128, 5x5 conv 768, linear
        total += conv_bn(768, 128, 1) + conv_bn(128, 768, 5) + 768 * 1000 + 1000
    # Grid reduction 17 -> 8.
    total += conv_bn(cin, 192, 1) + conv_bn(192, 320, 3) + conv_bn(cin, 192, 1)
    total += conv_bn(192, 192, 1, 7) + conv_bn(192, 192, 7, 1) + conv_bn(192, 192, 3)
    cin = 320 + 192 + cin
    for _ in range(2):  # 2 x Inception with expanded filter banks (Fig. 7)
        total += conv_bn(cin, 320, 1) + conv_bn(cin, 384, 1) + 2 * conv_bn(384, 384, 1, 3)
        total += conv_bn(cin, 448, 1) + conv_bn(448, 384, 3) + 2 * conv_bn(384, 384, 3, 1)
        total += conv_bn(cin, 192, 1)
        cin = 320 + 2 * 384 + 2 * 384 + 192
    return total + cin * 1000 + 1000


def test_inception_v3_params_from_the_layers():
    assert inception_v3_params(aux=True) == 27_161_264  # torchvision's published count
    assert count_params(build_on_meta("inception_v3")) == inception_v3_params(aux=True)
    no_aux = build_on_meta("inception_v3", aux_logits=False)
    assert count_params(no_aux) == inception_v3_params(aux=False)


def conv_macs(cin: int, cout: int, kh: int, kw: int | None = None, *, side: int) -> int:
    """Multiply-adds of a convolution whose output map is side x side."""
    return side * side * cin * cout * kh * (kh if kw is None else kw)


def inception_v3_macs() -> int:
    """Conv and FC multiply-adds at 299x299 (eval mode, no aux head), layer by layer as
    inception_v3_params: Table 1's grid 149, 147, 73, 71, then 35, 17 and 8."""
    c = conv_macs
    total = c(3, 32, 3, side=149) + c(32, 32, 3, side=147) + c(32, 64, 3, side=147)
    total += c(64, 80, 1, side=73) + c(80, 192, 3, side=71)
    cin = 192
    for pool_features in (32, 64, 64):  # at 35x35
        total += c(cin, 64, 1, side=35) + c(cin, 48, 1, side=35) + c(48, 64, 5, side=35)
        total += c(cin, 64, 1, side=35) + c(64, 96, 3, side=35) + c(96, 96, 3, side=35)
        total += c(cin, pool_features, 1, side=35)
        cin = 64 + 64 + 96 + pool_features
    # 35 -> 17: the stride-2 convs give 17x17 maps, the branch's 1x1 and 3x3 run at 35.
    total += c(cin, 384, 3, side=17) + c(cin, 64, 1, side=35) + c(64, 96, 3, side=35)
    total += c(96, 96, 3, side=17)
    cin = 768
    for c7 in (128, 160, 160, 192):  # at 17x17
        total += c(cin, 192, 1, side=17) + c(cin, c7, 1, side=17) + c(c7, c7, 1, 7, side=17)
        total += c(c7, 192, 7, 1, side=17) + c(cin, c7, 1, side=17)
        total += 3 * c(c7, c7, 7, 1, side=17) + c(c7, 192, 1, 7, side=17)
        total += c(cin, 192, 1, side=17)
    # 17 -> 8.
    total += c(cin, 192, 1, side=17) + c(192, 320, 3, side=8) + c(cin, 192, 1, side=17)
    total += c(192, 192, 1, 7, side=17) + c(192, 192, 7, 1, side=17) + c(192, 192, 3, side=8)
    cin = 320 + 192 + cin
    for _ in range(2):  # at 8x8
        total += c(cin, 320, 1, side=8) + c(cin, 384, 1, side=8) + 2 * c(384, 384, 1, 3, side=8)
        total += c(cin, 448, 1, side=8) + c(448, 384, 3, side=8) + 2 * c(384, 384, 3, 1, side=8)
        total += c(cin, 192, 1, side=8)
        cin = 320 + 2 * 384 + 2 * 384 + 192
    return total + cin * 1000


def test_inception_v3_declared_macs_from_the_layers():
    derived = inception_v3_macs()
    # torchvision's 5.713 GFLOPs (= GMACs, three decimals).
    assert round(derived, -6) == cnnlab.model_info("inception_v3").macs
    model = build_on_meta("inception_v3").eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 299, 299, device="meta"))
    assert counter.get_total_flops() / 2 == derived


def test_inception_v3_aux_head_in_training_only():
    model = build_on_meta("inception_v3", num_classes=10).train()
    out = model(torch.empty(2, 3, 299, 299, device="meta"))
    assert isinstance(out, InceptionOutputs) and out._fields == ("logits", "aux_logits")
    assert out.logits.shape == out.aux_logits.shape == (2, 10)
    assert model.eval()(torch.empty(2, 3, 75, 75, device="meta")).shape == (2, 10)


def test_inception_v3_aux_head_names_the_size_it_needs():
    model = build_on_meta("inception_v3").train()
    with pytest.raises(ValueError, match="299x299"):
        model(torch.empty(1, 3, 128, 128, device="meta"))
    plain = build_on_meta("inception_v3", aux_logits=False).train()
    assert plain(torch.empty(2, 3, 75, 75, device="meta")).shape == (2, 1000)
    assert getattr(plain, "min_train_input_size", None) is None


def test_inception_v3_transform_input_is_torchvisions_rescaling():
    model = cnnlab.create_model("inception_v3", transform_input=True).eval()
    x = torch.randn(1, 3, 75, 75)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    manual = torch.stack([x[:, i] * std[i] / 0.5 + (mean[i] - 0.5) / 0.5 for i in range(3)], 1)
    model.transform_input = False
    expected = model(manual)
    model.transform_input = True
    torch.testing.assert_close(model(x), expected)


def test_inception_v3_grid_sizes_of_table_1():
    model = build_on_meta("inception_v3", features_only=True).eval()
    maps = model(torch.empty(1, 3, 299, 299, device="meta"))
    # Table 1: 147x147x64, 71x71x192, 35x35x288, 17x17x768, 8x8x2048.
    assert [tuple(m.shape[1:]) for m in maps] == [
        (64, 147, 147), (192, 71, 71), (288, 35, 35), (768, 17, 17), (2048, 8, 8)]


# --- BN-Inception (Ioffe & Szegedy 2015, Fig. 5) ----------------------------------------------

# Fig. 5, typed in again: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool proj
# (None = pass through); stride-2 modules are 3c and 4e.
FIG_5 = {
    "3a": (64, 64, 64, 64, 96, 32),
    "3b": (64, 64, 96, 64, 96, 64),
    "3c": (0, 128, 160, 64, 96, None),
    "4a": (224, 64, 96, 96, 128, 128),
    "4b": (192, 96, 128, 96, 128, 128),
    "4c": (160, 128, 160, 128, 160, 128),
    "4d": (96, 128, 192, 160, 192, 128),
    "4e": (0, 128, 192, 192, 256, None),
    "5a": (352, 192, 320, 160, 224, 128),
    "5b": (352, 192, 320, 192, 224, 128),
}


def bn_inception_widths_and_params() -> tuple[dict[str, int], int]:
    total = conv_bn(3, 64, 7) + conv_bn(64, 64, 1) + conv_bn(64, 192, 3)
    cin, widths = 192, {}
    for name, (n1, r3, n3, rd, nd, proj) in FIG_5.items():
        total += (conv_bn(cin, n1, 1) if n1 else 0) + conv_bn(cin, r3, 1) + conv_bn(r3, n3, 3)
        total += conv_bn(cin, rd, 1) + conv_bn(rd, nd, 3) + conv_bn(nd, nd, 3)
        total += 0 if proj is None else conv_bn(cin, proj, 1)
        cin = widths[name] = n1 + n3 + nd + (cin if proj is None else proj)
    return widths, total + cin * 1000 + 1000


def test_bn_inception_params_and_widths_from_fig_5():
    widths, params = bn_inception_widths_and_params()
    model = build_on_meta("bn_inception")
    assert count_params(model) == params == cnnlab.model_info("bn_inception").params
    assert {n: b.out_channels for n, b in model.blocks.items()} == widths
    # Fig. 5 prints 576 for 4c/4d and 1024 for 4e; its columns give 608 and 1056.
    assert (widths["3a"], widths["3b"], widths["3c"], widths["4a"]) == (256, 320, 576, 576)
    assert (widths["4c"], widths["4e"], widths["5b"]) == (608, 1056, 1024)


def test_bn_inception_uses_two_3x3_instead_of_5x5_and_bn_everywhere():
    model = build_on_meta("bn_inception")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(c.kernel_size[0] for c in convs[3:]) == 3  # only the stem's 7x7 is larger
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == len(convs) and all(c.bias is None for c in convs)


def test_bn_inception_grid_sizes_of_fig_5():
    model = build_on_meta("bn_inception").eval()
    x = model.forward_features(torch.empty(1, 3, 224, 224, device="meta"))
    assert tuple(x.shape) == (1, 1024, 7, 7)
    fmaps = build_on_meta("bn_inception", features_only=True).eval()(
        torch.empty(1, 3, 224, 224, device="meta"))
    assert [m.shape[-1] for m in fmaps] == [28, 28, 14, 7]


# --- Inception-v4 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke, Alemi 2017) -------------


def inception_v4_params() -> int:
    """Sum of Figs. 3-9 (every conv is conv-BN), Table 1's k, l, m, n = 192, 224, 256, 384."""
    stem = v4_stem_params()
    block_a = 2 * conv_bn(384, 96, 1) + conv_bn(384, 64, 1) + conv_bn(64, 96, 3)
    block_a += conv_bn(384, 64, 1) + conv_bn(64, 96, 3) + conv_bn(96, 96, 3)
    red_a = conv_bn(384, 384, 3) + conv_bn(384, 192, 1) + conv_bn(192, 224, 3)
    red_a += conv_bn(224, 256, 3)
    block_b = conv_bn(1024, 128, 1) + conv_bn(1024, 384, 1)
    block_b += conv_bn(1024, 192, 1) + conv_bn(192, 224, 1, 7) + conv_bn(224, 256, 7, 1)
    block_b += conv_bn(1024, 192, 1) + conv_bn(192, 192, 1, 7) + conv_bn(192, 224, 7, 1)
    block_b += conv_bn(224, 224, 1, 7) + conv_bn(224, 256, 7, 1)
    red_b = conv_bn(1024, 192, 1) + conv_bn(192, 192, 3) + conv_bn(1024, 256, 1)
    red_b += conv_bn(256, 256, 1, 7) + conv_bn(256, 320, 7, 1) + conv_bn(320, 320, 3)
    block_c = 2 * conv_bn(1536, 256, 1) + conv_bn(1536, 384, 1) + 2 * conv_bn(384, 256, 1, 3)
    block_c += conv_bn(1536, 384, 1) + conv_bn(384, 448, 1, 3) + conv_bn(448, 512, 3, 1)
    block_c += 2 * conv_bn(512, 256, 3, 1)
    return stem + 4 * block_a + red_a + 7 * block_b + red_b + 3 * block_c + 1536 * 1000 + 1000


def v4_stem_params() -> int:
    """Fig. 3: 299x299x3 -> 35x35x384."""
    stem = conv_bn(3, 32, 3) + conv_bn(32, 32, 3) + conv_bn(32, 64, 3) + conv_bn(64, 96, 3)
    stem += conv_bn(160, 64, 1) + conv_bn(64, 96, 3)
    stem += conv_bn(160, 64, 1) + conv_bn(64, 64, 7, 1) + conv_bn(64, 64, 1, 7)
    return stem + conv_bn(64, 96, 3) + conv_bn(192, 192, 3)


def inception_resnet_v2_params(paper: bool) -> int:
    """Sum of Figs. 16-19's blocks, at the figures' widths (384/1152/2144, 5/10/5 blocks, Fig. 3
    stem) or the released model's (320/1088/2080, 10/20/10, v3 stem + 35x35 module, 1x1 1536)."""
    linear = lambda cin, cout: cin * cout + cout  # noqa: E731 — the residual up-projection
    if paper:
        stem, c35, (n_a, n_b, n_c) = v4_stem_params(), 384, (5, 10, 5)
    else:
        stem = conv_bn(3, 32, 3) + conv_bn(32, 32, 3) + conv_bn(32, 64, 3) + conv_bn(64, 80, 1)
        stem += conv_bn(80, 192, 3)
        stem += conv_bn(192, 96, 1) + conv_bn(192, 48, 1) + conv_bn(48, 64, 5)
        stem += conv_bn(192, 64, 1) + conv_bn(64, 96, 3) + conv_bn(96, 96, 3)
        stem += conv_bn(192, 64, 1)
        c35, (n_a, n_b, n_c) = 96 + 64 + 96 + 64, (10, 20, 10)
    block35 = 3 * conv_bn(c35, 32, 1) + conv_bn(32, 32, 3) + conv_bn(32, 48, 3)
    block35 += conv_bn(48, 64, 3) + linear(32 + 32 + 64, c35)
    # Reduction-A, Table 1: k, l, m, n = 256, 256, 384, 384.
    red_a = conv_bn(c35, 384, 3) + conv_bn(c35, 256, 1) + conv_bn(256, 256, 3)
    red_a += conv_bn(256, 384, 3)
    c17 = c35 + 384 + 384
    block17 = conv_bn(c17, 192, 1) + conv_bn(c17, 128, 1) + conv_bn(128, 160, 1, 7)
    block17 += conv_bn(160, 192, 7, 1) + linear(192 + 192, c17)
    red_b = 3 * conv_bn(c17, 256, 1) + conv_bn(256, 384, 3) + conv_bn(256, 288, 3)
    red_b += conv_bn(256, 288, 3) + conv_bn(288, 320, 3)
    c8 = c17 + 384 + 288 + 320
    block8 = 2 * conv_bn(c8, 192, 1) + conv_bn(192, 224, 1, 3) + conv_bn(224, 256, 3, 1)
    block8 += linear(192 + 256, c8)
    head = (c8 * 1000 + 1000) if paper else (conv_bn(c8, 1536, 1) + 1536 * 1000 + 1000)
    return stem + n_a * block35 + red_a + n_b * block17 + red_b + n_c * block8 + head


def test_inception_v4_params_from_the_figures():
    params = inception_v4_params()
    assert round(params / 1e6, 1) == 42.7  # the commonly published figure
    assert count_params(build_on_meta("inception_v4")) == params
    assert cnnlab.model_info("inception_v4").params == params


def test_inception_resnet_v2_params_from_the_layers():
    params = inception_resnet_v2_params(paper=False)
    assert round(params / 1e6, 1) == 55.8  # the commonly published figure (released model)
    assert count_params(build_on_meta("inception_resnet_v2")) == params
    assert cnnlab.model_info("inception_resnet_v2").params == params


def test_inception_resnet_v2_paper_params_from_the_figures():
    params = inception_resnet_v2_params(paper=True)
    assert count_params(build_on_meta("inception_resnet_v2_paper")) == params
    assert cnnlab.model_info("inception_resnet_v2_paper").params == params


@pytest.mark.parametrize(
    "name, widths",
    [("inception_v4", (384, 1024, 1536)), ("inception_resnet_v2", (320, 1088, 1536)),
     ("inception_resnet_v2_paper", (384, 1152, 2144))],
)
def test_grids_are_35_17_8_at_299(name, widths):
    model = build_on_meta(name, features_only=True).eval()
    maps = model(torch.empty(1, 3, 299, 299, device="meta"))
    assert [tuple(m.shape[1:]) for m in maps[1:]] == [
        (widths[0], 35, 35), (widths[1], 17, 17), (widths[2], 8, 8)]


def test_residual_scaling_is_within_the_papers_range():
    from cnnlab.models.inception_v4 import ResidualInception

    model = build_on_meta("inception_resnet_v2")
    blocks = [m for m in model.modules() if isinstance(m, ResidualInception)]
    assert len(blocks) == 10 + 20 + 10
    # Sec. 3.3: "scaling factors between 0.1 and 0.3"; the final block is left unscaled.
    assert all(0.1 <= b.scale <= 0.3 for b in blocks[:-1])
    assert blocks[-1].scale == 1.0 and not blocks[-1].relu
    paper = build_on_meta("inception_resnet_v2_paper")
    blocks = [m for m in paper.modules() if isinstance(m, ResidualInception)]
    assert len(blocks) == 5 + 10 + 5  # Fig. 15
    assert all(0.1 <= b.scale <= 0.3 and b.relu for b in blocks)


def test_residual_block_adds_scaled_branches_to_its_input():
    from cnnlab.models.inception_v4 import block35

    block = block35(320, 0.17).eval()
    x = torch.randn(1, 320, 9, 9)
    expected = torch.relu(x + 0.17 * block.up(block.branches(x)))
    torch.testing.assert_close(block(x), expected)


def test_paper_table_2_errors_are_declared():
    v4, irv2 = cnnlab.model_info("inception_v4"), cnnlab.model_info("inception_resnet_v2")
    assert (v4.top1_error, v4.top5_error) == (20.0, 5.0)
    assert (irv2.top1_error, irv2.top5_error) == (19.9, 4.9)
