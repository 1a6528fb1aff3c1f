"""ConvNeXt: counts derived by hand from the paper's widths and depths; Table 1's figures;
the block's parts (layer scale, stochastic depth, channel LayerNorm); receptive fields."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.analysis import summarize
from cnnlab.models.convnext import CNBlock, ConvNeXt, ConvNeXtConfig, LayerNorm2d

from zoo_helpers import build_on_meta, count_params

# Sec. 3 of Liu et al. 2022: stage widths C and blocks per stage B, retyped.
PAPER = {
    "convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3)),
    "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3)),
    "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3)),
    "convnext_large": ((192, 384, 768, 1536), (3, 3, 27, 3)),
}
# Table 1 (ImageNet-1K trained, 224x224): params (millions), FLOPs (billions), top-1 (%).
TABLE_1 = {
    "convnext_tiny": (28, 4.5, 82.1),
    "convnext_small": (50, 8.7, 83.1),
    "convnext_base": (89, 15.4, 83.8),
    "convnext_large": (198, 34.4, 84.3),
}
# Appendix A.1, Table 5: stochastic depth rate of each variant's ImageNet-1K training.
DROP_PATH = {"convnext_tiny": 0.1, "convnext_small": 0.4, "convnext_base": 0.5,
             "convnext_large": 0.5}
NAMES = sorted(PAPER)


def convnext_params(widths, depths, classes: int = 1000) -> int:
    """Stem: 4x4x3 conv to C1 with bias + LayerNorm (2 C1). Block of width d: 7x7 depthwise
    with bias (50 d), LayerNorm (2 d), d -> 4d linear (4d² + 4d), 4d -> d linear (4d² + d),
    layer scale (d): 8d² + 58d. Downsampling c -> c': LayerNorm (2c), 2x2 conv with bias
    (4cc' + c'). Head: LayerNorm (2 C4), linear C4 -> classes with bias."""
    total = 16 * 3 * widths[0] + widths[0] + 2 * widths[0]
    for i, (d, n) in enumerate(zip(widths, depths, strict=True)):
        if i:
            c = widths[i - 1]
            total += 2 * c + 4 * c * d + d
        total += n * (8 * d * d + 58 * d)
    return total + 2 * widths[-1] + widths[-1] * classes + classes


def convnext_macs(widths, depths, size: int = 224, classes: int = 1000) -> int:
    """Conv and linear multiply-accumulates: stem 48 C1 per position of the size/4 map; per
    block of width d at r x r: 49 d (depthwise) + 8 d² (the two linears) per position;
    downsampling c -> c' 4 c c' per output position; the classifier C4 x classes."""
    r = size // 4
    total = 48 * widths[0] * r * r
    for i, (d, n) in enumerate(zip(widths, depths, strict=True)):
        if i:
            r //= 2
            total += 4 * widths[i - 1] * d * r * r
        total += n * (49 * d + 8 * d * d) * r * r
    return total + widths[-1] * classes


def test_tinys_count_by_hand():
    # 28,589,128: stem 4,896; stage 1 3·(8·96² + 58·96) = 237,888; downsamplings 74,112 +
    # 295,680 + 1,181,184; stages 2-4 918,144 + 10,817,280 + 14,289,408; head 770,536.
    assert convnext_params(*PAPER["convnext_tiny"]) == 28_589_128


@pytest.mark.parametrize("name", NAMES)
def test_counts_follow_the_papers_widths_and_depths(name):
    derived = convnext_params(*PAPER[name])
    assert cnnlab.model_info(name).params == derived
    assert count_params(build_on_meta(name)) == derived
    # Table 1 states whole millions (T: 28.59M as 28M, so within 0.6M rather than rounded).
    assert derived / 1e6 == pytest.approx(TABLE_1[name][0], abs=0.6)


@pytest.mark.parametrize("name", NAMES)
def test_macs_by_hand_and_table_1s_gflops(name):
    derived = convnext_macs(*PAPER[name])
    model = build_on_meta(name).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() // 2 == derived
    # Table 1's FLOPs are multiply-adds to one decimal; torchvision's GFLOPs to three.
    assert round(derived / 1e9, 1) == TABLE_1[name][1]
    assert round(derived / 1e9, 3) == pytest.approx(cnnlab.model_info(name).macs / 1e9)


@pytest.mark.parametrize("name", NAMES)
def test_registry_info_names_the_paper(name):
    info = cnnlab.model_info(name)
    assert (info.year, info.family, info.torchvision) == (2022, "convnext", True)
    assert info.title == "A ConvNet for the 2020s" and "2201.03545" in info.url
    assert f"{TABLE_1[name][2]}% top-1" in info.error_source
    assert 82 < info.top1 < 85  # torchvision's weights: 82.52 .. 84.41


@pytest.mark.parametrize("name", NAMES)
def test_stages_are_the_papers(name):
    widths, depths = PAPER[name]
    model = build_on_meta(name)
    stages = [model.features[i] for i in (1, 3, 5, 7)]
    assert [len(s) for s in stages] == list(depths)
    assert [s[0].block[0].in_channels for s in stages] == list(widths)
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == list(widths)


def test_stage_maps_at_224():
    backbone = build_on_meta("convnext_tiny", features_only=True)
    maps = backbone(torch.empty(1, 3, 224, 224, device="meta"))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (96, 56, 56), (192, 28, 28), (384, 14, 14), (768, 7, 7)]


def test_stem_and_downsampling_layers():
    model = build_on_meta("convnext_base")
    stem = model.features[0][0]
    assert (stem.kernel_size, stem.stride, stem.padding) == ((4, 4), (4, 4), (0, 0))  # patchify
    for i, (c, c2) in zip((2, 4, 6), ((128, 256), (256, 512), (512, 1024)), strict=True):
        norm, conv = model.features[i]
        assert isinstance(norm, LayerNorm2d) and norm.normalized_shape == (c,)
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (
            c, c2, (2, 2), (2, 2))


@pytest.mark.parametrize("name", NAMES)
def test_stochastic_depth_rises_linearly_to_the_papers_rate(name):
    rate, n = DROP_PATH[name], sum(PAPER[name][1])
    model = build_on_meta(name)
    probs = [b.stochastic_depth.p for i in (1, 3, 5, 7) for b in model.features[i]]
    assert probs == pytest.approx([rate * i / (n - 1) for i in range(n)])
    assert probs[-1] == pytest.approx(rate)
    assert build_on_meta(name, drop_path_rate=0.0).features[7][-1].stochastic_depth.p == 0.0
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        build_on_meta(name, drop_path_rate=1.0)


def test_layer_scale_starts_at_1e_6_and_norms_use_eps_1e_6():
    model = build_on_meta("convnext_tiny")
    blocks = [b for i in (1, 3, 5, 7) for b in model.features[i]]
    assert len(blocks) == 18
    real = CNBlock(8, 1e-6, 0.0)
    assert real.layer_scale.shape == (8, 1, 1) and torch.all(real.layer_scale == 1e-6)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 1 + 3 + 18 + 1 and {m.eps for m in norms} == {1e-6}


def test_layernorm2d_normalises_each_positions_channels():
    torch.manual_seed(0)
    norm = LayerNorm2d(5, eps=1e-6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).mean(1, keepdim=True)  # the biased variance, as LayerNorm's
    expected = (x - mean) / torch.sqrt(var + 1e-6) * norm.weight.double().view(1, 5, 1, 1) \
        + norm.bias.double().view(1, 5, 1, 1)
    torch.testing.assert_close(norm.double()(x), expected)


def test_block_is_the_papers_and_drops_whole_samples():
    torch.manual_seed(0)
    block = CNBlock(4, layer_scale=0.5, drop_path=0.5).double()
    x = torch.randn(64, 4, 6, 6, dtype=torch.float64)
    # by hand: dw7x7 -> LN over channels -> 4x linear -> GELU -> linear, times gamma
    dw, _, ln, fc1, _, fc2, _ = block.block
    h = F.conv2d(x, dw.weight, dw.bias, padding=3, groups=4).permute(0, 2, 3, 1)
    h = fc2(F.gelu(fc1(F.layer_norm(h, (4,), ln.weight, ln.bias, 1e-6)))).permute(0, 3, 1, 2)
    branch = 0.5 * h
    torch.testing.assert_close(block.eval()(x), x + branch)
    out = block.train()(x)
    kept = torch.isclose(out, x + 2 * branch).flatten(1).all(1)  # survivors scaled 1/(1-p)
    dropped = torch.isclose(out, x).flatten(1).all(1)
    assert torch.all(kept ^ dropped) and 16 < int(kept.sum()) < 48


def test_head_pools_then_normalises():
    model = build_on_meta("convnext_tiny")
    assert model.get_classifier() is model.classifier[2]
    feats = build_on_meta("convnext_tiny", num_classes=0)(torch.empty(2, 3, 64, 64,
                                                                      device="meta"))
    assert tuple(feats.shape) == (2, 768)
    torch.manual_seed(0)
    small = ConvNeXt(ConvNeXtConfig((1, 1, 1, 1), (4, 8, 8, 16), 0.0), num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    pooled = small.forward_features(x).mean((2, 3))
    norm = small.classifier[0]
    expected = small.classifier[2](F.layer_norm(pooled, (16,), norm.weight, norm.bias, 1e-6))
    torch.testing.assert_close(small(x), expected)


# -- the analyser ------------------------------------------------------------------------------

def field_by_hand(depths, stem: int = 4) -> int:
    """Stem 4 (jump 4); a 7x7 depthwise conv adds 6 jumps; a 2x2/2 downsampling adds 1 jump
    and doubles it; LayerNorm, the linears, GELU and layer scale are per position: 0."""
    size, jump = stem, stem
    for i, n in enumerate(depths):
        if i:
            size, jump = size + jump, 2 * jump
        size += n * 6 * jump
    return size


@pytest.mark.parametrize("name", NAMES)
def test_receptive_field_by_hand(name):
    s = summarize(name)
    assert s.unaccounted == []
    assert s.receptive_field.size == field_by_hand(PAPER[name][1])  # 1688 (T), 3416 (S, B, L)
    assert s.receptive_field.jump == 32


def test_tinys_stage_fields_and_activation_memory_by_hand():
    s = summarize("convnext_tiny")
    rows = {r.name: r for r in s.rows}
    depths = PAPER["convnext_tiny"][1]
    assert [s.module_outputs[f"features.{i}"][1].size for i in (1, 3, 5, 7)] == [
        field_by_hand(depths[:k]) for k in (1, 2, 3, 4)] == [76, 224, 1096, 1688]
    # New values per image: a block of width d on an r x r map writes 13·d·r² (conv 1,
    # LayerNorm 1, linear 4, GELU 4, linear 1, layer-scale product 1, residual add 1); stem
    # conv + LN 2·96·56²; downsampling LN (input) + conv (output); input 3·224²; head:
    # pool 768, LN 768, logits 1000. The linears' outputs are views of their own matmuls.
    blocks = sum(13 * d * r * r * n for d, r, n in zip(
        (96, 192, 384, 768), (56, 28, 14, 7), depths, strict=True))
    downs = (96 * 56**2 + 192 * 28**2) + (192 * 28**2 + 384 * 14**2) + (384 * 14**2 + 768 * 49)
    assert s.activation_values == blocks + 2 * 96 * 56**2 + downs + 3 * 224**2 + 768 * 2 + 1000
    assert rows["features.1.0.block.3"].activation_values == 384 * 56**2


def test_channel_layernorm_and_linears_keep_the_field():
    # conv 3x3 -> channel LayerNorm -> per-position linear -> conv 3x3: a field of 5, not
    # the whole map (a LayerNorm over H, W would make it global: test_analysis_rf.py)
    class PerPosition(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 4, 3), nn.Conv2d(4, 2, 3)
            self.norm, self.fc = LayerNorm2d(4), nn.Linear(4, 4)

        def forward(self, x):
            x = self.norm(self.a(x))
            return self.b(self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))

    s = summarize(PerPosition(), (2, 20, 20))
    assert s.unaccounted == [] and not s.receptive_field.covers_input
    assert s.receptive_field.size == 5 and s.receptive_field.jump == 1


def test_a_channels_last_layernorm_over_the_map_is_still_global():
    # the same rule, channels-last: normalising over (W, C) or (H, W, C) uses every position
    class NormOver(nn.Module):
        def __init__(self, shape) -> None:
            super().__init__()
            self.conv, self.norm = nn.Conv2d(2, 4, 3), nn.LayerNorm(shape)

        def forward(self, x):
            return self.norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    rf = {k: summarize(NormOver(shape), (2, 20, 20)).receptive_field
          for k, shape in (("c", [4]), ("wc", [18, 4]), ("hwc", [18, 18, 4]))}
    assert rf["c"].sizes == (3, 3) and not rf["c"].covers_input
    assert rf["wc"].sizes == (3, 20)  # the whole width, not the height
    assert rf["hwc"].covers_input and rf["hwc"].sizes == (20, 20)


def test_small_convnext_field_matches_the_gradient_ground_truth():
    # Ground truth without the analyser: the input pixels on which the centre unit of the
    # last stage depends (random weights, layer scale 1 so no path is near zero).
    torch.manual_seed(0)
    depths = (1, 1, 1, 1)
    model = ConvNeXt(ConvNeXtConfig(depths, (4, 4, 4, 4), 0.0), layer_scale=1.0).double().eval()
    n = 448  # the centre unit's field (392) lies inside the image: nothing is clipped
    x = torch.randn(1, 3, n, n, dtype=torch.float64, requires_grad=True)
    out = model.forward_features(x)
    c = out.shape[-1] // 2
    (out[0, :, c, c] * torch.randn(4, dtype=torch.float64)).sum().backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    rf = summarize(model, (3, n, n)).receptive_field
    assert rf.size == field_by_hand(depths) == 392
    centre = rf.start + c * rf.jump
    lo, hi = centre - (rf.size - 1) / 2, centre + (rf.size - 1) / 2
    assert (int(rows.min()), int(rows.max())) == (lo, hi)
    assert (int(cols.min()), int(cols.max())) == (lo, hi)
