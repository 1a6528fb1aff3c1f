"""Swin Transformer (Liu et al. 2021): the variants as the paper states them, counts by hand,
the relative position index, the shifted-window mask and attention against a direct
per-token reference, patch merging, stage maps and the input-size rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.models.swin import (
    SWIN_CONFIGS,
    PatchMerging,
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
)

from zoo_helpers import build_on_meta, count_params

SWIN = ["swin_t", "swin_s", "swin_b"]

# Sec. 3.3 (retyped): C, layer numbers; heads = stage width / 32 ("the query dimension of
# each head is d = 32"); window M = 7; Appendix A2.1: stochastic depth 0.2 / 0.3 / 0.5.
PAPER_VARIANTS = {
    "swin_t": (96, (2, 2, 6, 2), 0.2),
    "swin_s": (96, (2, 2, 18, 2), 0.3),
    "swin_b": (128, (2, 2, 18, 2), 0.5),
}
# Table 1a: params (M), FLOPs (G, one multiply-add = one FLOP, as the paper counts), top-1.
PAPER_TABLE_1A = {"swin_t": (28, 4.5, 81.3), "swin_s": (50, 8.7, 83.0),
                  "swin_b": (88, 15.4, 83.5)}
# torchvision's published counts and accuracy of its weights (its model docs).
TORCHVISION = {"swin_t": (28_288_354, 4.491, 81.474), "swin_s": (49_606_258, 8.741, 83.196),
               "swin_b": (87_768_224, 15.431, 83.582)}


def params_by_hand(c: int, depths: tuple[int, ...], window: int = 7, classes: int = 1000) -> int:
    total = 4 * 4 * 3 * c + c + 2 * c  # 4x4 patch conv with bias, its LayerNorm
    for i, depth in enumerate(depths):
        w, heads = c * 2**i, c * 2**i // 32
        block = (2 * w  # LN
                 + 3 * w * w + 3 * w + w * w + w  # qkv and output projection
                 + (2 * window - 1) ** 2 * heads  # relative position bias table
                 + 2 * w  # LN
                 + 4 * w * w + 4 * w + 4 * w * w + w)  # MLP C -> 4C -> C
        total += depth * block
        if i < len(depths) - 1:
            total += 2 * 4 * w + 4 * w * 2 * w  # merging: LN(4C), linear 4C -> 2C, no bias
    last = c * 2 ** (len(depths) - 1)
    return total + 2 * last + last * classes + classes


def macs_by_hand(c: int, depths: tuple[int, ...], image: int = 224, window: int = 7,
                 classes: int = 1000) -> int:
    """Eq. (2): W-MSA on an h x w map costs 4hwC^2 + 2M^2hwC (projections, then Q K^T and
    A V); the MLP 8hwC^2; plus the patch embedding, the mergings and the head."""
    side = image // 4
    total = side * side * c * 4 * 4 * 3
    for i, depth in enumerate(depths):
        w, hw = c * 2**i, (side // 2**i) ** 2
        total += depth * (4 * hw * w * w + 2 * window**2 * hw * w + 8 * hw * w * w)
        if i < len(depths) - 1:
            total += hw // 4 * 4 * w * 2 * w
    return total + c * 2 ** (len(depths) - 1) * classes


@pytest.mark.parametrize("name", SWIN)
def test_variants_are_the_papers(name):
    c, depths, drop = PAPER_VARIANTS[name]
    config = SWIN_CONFIGS[name]
    assert (config.embed_dim, config.depths, config.drop_path_rate) == (c, depths, drop)
    assert config.num_heads == tuple(c * 2**i // 32 for i in range(4))
    assert (config.window, config.patch, config.mlp_ratio) == (7, 4, 4)


@pytest.mark.parametrize("name", SWIN)
def test_params_by_hand_and_published(name):
    c, depths, _ = PAPER_VARIANTS[name]
    measured = count_params(build_on_meta(name))
    assert measured == params_by_hand(c, depths) == TORCHVISION[name][0]
    assert measured == cnnlab.model_info(name).params
    assert round(measured / 1e6) == PAPER_TABLE_1A[name][0]


@pytest.mark.parametrize("name", SWIN)
def test_macs_by_hand_and_published(name):
    c, depths, _ = PAPER_VARIANTS[name]
    model = build_on_meta(name).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    by_hand = macs_by_hand(c, depths)
    # PyTorch's counter sees the same ops: convs, linears and the two attention matmuls.
    assert counter.get_total_flops() == 2 * by_hand
    # torchvision rounds to three decimals of a GFLOP, the paper to one.
    assert by_hand / 1e9 == pytest.approx(TORCHVISION[name][1], abs=5e-4)
    assert by_hand / 1e9 == pytest.approx(PAPER_TABLE_1A[name][1], abs=0.05)
    assert cnnlab.model_info(name).macs == round(TORCHVISION[name][1] * 1e9)


def test_swin_t_macs_magnitude():
    # Hand arithmetic, Swin-T at 224: blocks 752,640,000 + 723,136,512 + 2,125,154,304 +
    # 701,008,896; patch embedding 14,450,688; three mergings of 57,802,752; head 768,000.
    assert macs_by_hand(96, (2, 2, 6, 2)) == 4_490_566_656


@pytest.mark.parametrize("name", SWIN)
def test_registry_facts(name):
    info = cnnlab.model_info(name)
    assert (info.year, info.family, info.torchvision, info.input_size) == (
        2021, "swin", True, (3, 224, 224))
    assert "Shifted Windows" in info.title and info.url.endswith("2103.14030")
    assert info.top1 == pytest.approx(TORCHVISION[name][2])
    assert f"{PAPER_TABLE_1A[name][2]}%" in info.error_source
    assert info.recipe == "liu2021"


def test_relative_position_index_by_hand():
    # M = 2, tokens (0,0) (0,1) (1,0) (1,1); table row (dy + 1) * 3 + (dx + 1).
    assert relative_position_index(2).view(4, 4).tolist() == [
        [4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    index = relative_position_index(7).view(49, 49)
    assert index.diagonal().eq(6 * 13 + 6).all()  # offset (0, 0)
    assert (index.min(), index.max()) == (0, 13 * 13 - 1)
    assert index[0, 48] == 0 and index[48, 0] == 168  # offsets (-6, -6) and (6, 6)


def test_shifted_window_mask_by_hand():
    # A 4x4 rolled map, windows 2x2 shifted by 1: along each axis the strips are [0, 2),
    # [2, 3) and [3, 4). Window 0 lies in one strip; window 1 (rows 0-1, cols 2-3) splits
    # by column; window 3 (the bottom-right) holds four regions.
    mask = shifted_window_mask(4, 4, 2, (1, 1))
    assert mask.shape == (4, 4, 4)
    assert mask[0].eq(0).all()
    blocked = -100.0
    assert mask[1].tolist() == [[0, blocked, 0, blocked], [blocked, 0, blocked, 0],
                                [0, blocked, 0, blocked], [blocked, 0, blocked, 0]]
    assert mask[3].tolist() == [[0 if i == j else blocked for j in range(4)] for i in range(4)]
    assert shifted_window_mask(4, 4, 2, (0, 1))[1].tolist() == mask[1].tolist()  # rows whole


def reference_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """One query token at a time: it attends to the tokens of its window in the rolled,
    zero-padded map that were its neighbours before the roll (nothing wrapped around),
    with the bias of their offset. (B, H, W, C) in and out."""
    batch, height, width, channels = x.shape
    m, heads = attn.window, attn.num_heads
    d = channels // heads
    ph, pw = math.ceil(height / m) * m, math.ceil(width / m) * m
    padded = torch.zeros(batch, ph, pw, channels, dtype=x.dtype)
    padded[:, :height, :width] = x
    sh = attn.shift if ph > m else 0
    sw = attn.shift if pw > m else 0
    q, k, v = attn.qkv(padded).view(batch, ph, pw, 3, heads, d).unbind(3)
    table = attn.relative_position_bias_table
    out = torch.zeros(batch, ph, pw, channels, dtype=x.dtype)
    for r in range(ph):
        for c in range(pw):
            rr, rc = (r - sh) % ph, (c - sw) % pw  # where the roll puts this token
            keys = []
            for r2 in range(ph):
                for c2 in range(pw):
                    rr2, rc2 = (r2 - sh) % ph, (c2 - sw) % pw
                    same_window = (rr // m, rc // m) == (rr2 // m, rc2 // m)
                    if same_window and (rr - rr2, rc - rc2) == (r - r2, c - c2):
                        keys.append((r2, c2, (r - r2 + m - 1) * (2 * m - 1) + (c - c2 + m - 1)))
            rows = torch.tensor([key[0] for key in keys])
            cols = torch.tensor([key[1] for key in keys])
            bias = table[[key[2] for key in keys]].T  # (heads, keys)
            logits = torch.einsum("bhd,bkhd->bhk", q[:, r, c] * d**-0.5, k[:, rows, cols])
            weights = (logits + bias).softmax(-1)
            mixed = torch.einsum("bhk,bkhd->bhd", weights, v[:, rows, cols])
            out[:, r, c] = attn.proj(mixed.reshape(batch, channels))
    return out[:, :height, :width]


@pytest.mark.parametrize(("shift", "height", "width"), [(0, 6, 6), (1, 6, 6), (1, 5, 7),
                                                        (1, 3, 5)])
def test_window_attention_equals_per_token_reference(shift, height, width):
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, window=3, shift=shift).double().eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()  # a bias that matters
        x = torch.randn(2, height, width, 8, dtype=torch.float64)
        torch.testing.assert_close(attn(x), reference_window_attention(attn, x))


def _change_from_bumping(attn: WindowAttention, row: int, col: int) -> torch.Tensor:
    x = torch.randn(1, 6, 6, 8, generator=torch.Generator().manual_seed(1))
    bumped = x.clone()
    bumped[0, row, col] += 10.0
    with torch.no_grad():
        return (attn(bumped) - attn(x)).abs().sum(-1)[0]  # (6, 6): how much each output moved


def test_the_mask_stops_what_the_roll_wrapped_around(monkeypatch):
    # 6x6 map, 3x3 windows shifted by 1: the roll by (-1, -1) brings the top-left token (0, 0)
    # into the bottom-right window with (4, 4), (4, 5), (5, 4), (5, 5), which were never its
    # neighbours: the mask keeps them apart. (2, 2) rolls into the first window with its
    # neighbours (1..3, 1..3), which it reaches; (4, 4) lies in another window.
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, window=3, shift=1).eval()
    wrapped = _change_from_bumping(attn, 0, 0)
    assert wrapped[0, 0] > 1e-2
    assert wrapped[4:, 4:].max() < 1e-12
    near = _change_from_bumping(attn, 2, 2)
    assert near[1, 1] > 1e-3 and near[3, 3] > 1e-3
    assert near[4, 4] == 0 and near[0, 0] == 0
    # Without the mask the wrapped-around tokens would mix: the check above can fail.
    monkeypatch.setattr("cnnlab.models.swin.shifted_window_mask",
                        lambda h, w, m, *a: torch.zeros(h * w // (m * m), m * m, m * m))
    assert _change_from_bumping(attn, 0, 0)[5, 5] > 1e-3


def test_patch_merging_concatenates_2x2_groups_in_the_authors_order():
    merge = PatchMerging(1)
    seen = {}
    merge.norm.register_forward_hook(lambda _m, args, _out: seen.update(x=args[0]))
    x = torch.arange(25.0).view(1, 1, 5, 5)  # odd: padded to 6x6 with zeros
    out = merge(x)
    assert out.shape == (1, 2, 3, 3)
    grouped = seen["x"]  # (1, 3, 3, 4): what the norm sees
    assert grouped[0, 0, 0].tolist() == [0, 5, 1, 6]  # (0,0), (1,0), (0,1), (1,1)
    assert grouped[0, 1, 2].tolist() == [14, 19, 0, 0]  # column 5 is padding
    assert grouped[0, 2, 2].tolist() == [24, 0, 0, 0]


@pytest.mark.parametrize("name", SWIN)
def test_stage_maps_are_bchw_at_strides_4_to_32(name):
    c = PAPER_VARIANTS[name][0]
    backbone = build_on_meta(name, features_only=True)
    assert backbone.feature_info.channels() == [c, 2 * c, 4 * c, 8 * c]
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    assert backbone.feature_info.module_name() == [
        "features.1", "features.3", "features.5", "features.7"]
    maps = backbone(torch.empty(2, 3, 224, 224, device="meta"))
    assert [tuple(f.shape) for f in maps] == [
        (2, c, 56, 56), (2, 2 * c, 28, 28), (2, 4 * c, 14, 14), (2, 8 * c, 7, 7)]


def test_stochastic_depth_and_shifts_follow_the_schedule():
    model = build_on_meta("swin_t")
    blocks = [b for i in (1, 3, 5, 7) for b in model.features[i]]
    assert len(blocks) == 12
    # Linear from 0 to 0.2 over the 12 blocks (torchvision: rate * k / (N - 1)).
    assert [b.stochastic_depth.p for b in blocks] == pytest.approx(
        [0.2 * k / 11 for k in range(12)])
    assert [b.attn.shift for b in blocks] == [0, 3] * 6  # W-MSA, SW-MSA in pairs (Fig. 3b)
    assert build_on_meta("swin_t", drop_path_rate=0.0).features[7][1].stochastic_depth.p == 0


def test_input_size_rules():
    model = build_on_meta("swin_t").eval()
    with pytest.raises(ValueError, match="swin_t.*31x31.*3x32x32"):
        model(torch.empty(1, 3, 31, 31, device="meta"))
    assert model(torch.empty(1, 3, 32, 32, device="meta")).shape == (1, 1000)
    # Not a multiple of 32: patch merging pads odd sides (25 -> 13 -> 7 -> 4 rows).
    backbone = build_on_meta("swin_t", features_only=True)
    maps = backbone(torch.empty(1, 3, 100, 77, device="meta"))
    assert [tuple(f.shape[2:]) for f in maps] == [(25, 19), (13, 10), (7, 5), (4, 3)]


def test_real_forward_on_a_non_multiple_of_the_window():
    torch.manual_seed(0)
    model = cnnlab.create_model("swin_t", num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 72, 40))
        pooled = model.forward_features(torch.randn(1, 3, 72, 40))
    assert out.shape == (1, 5) and torch.isfinite(out).all()
    assert pooled.shape == (1, 768, 3, 2)
