"""ViT (Dosovitskiy et al. 2021): counts by hand, attention MACs, the token interface, the RF."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

import cnnlab
from cnnlab.analysis import ops, summarize
from cnnlab.cli import main
from cnnlab.models.base import FeatureExtractor

from zoo_helpers import build_on_meta, count_params

# Table 1 of the paper: (layers, hidden size d, MLP size m) of Base, Large and Huge.
TABLE_1 = {"b": (12, 768, 3072), "l": (24, 1024, 4096), "h": (32, 1280, 5120)}
# name: (size, patch, torchvision's published params, GFLOPS (= GMACs) at 224, retyped from
# its weight tables; vit_h_14's are IMAGENET1K_SWAG_LINEAR_V1, the 224x224 set).
PUBLISHED = {
    "vit_b_16": ("b", 16, 86_567_656, 17.564),
    "vit_b_32": ("b", 32, 88_224_232, 4.409),
    "vit_l_16": ("l", 16, 304_326_632, 61.555),
    "vit_l_32": ("l", 32, 306_535_400, 15.378),
    "vit_h_14": ("h", 14, 632_045_800, 167.295),
}


def params_by_hand(size: str, patch: int, image: int = 224, classes: int = 1000) -> int:
    layers, d, m = TABLE_1[size]
    attention = 4 * d * d + 4 * d  # W_Q, W_K, W_V, W_O with biases
    mlp = 2 * d * m + m + d
    norms = 2 * (2 * d)
    tokens = (image // patch) ** 2 + 1  # patches + the class token
    embedding = d * 3 * patch * patch + d  # the patch projection (a p x p conv)
    return (layers * (attention + mlp + norms) + embedding + d + tokens * d + 2 * d
            + d * classes + classes)


def macs_by_hand(size: str, patch: int, image: int = 224, classes: int = 1000) -> int:
    """Per layer 4·N·d² (Q, K, V, O projections) + 2·N²·d (Q·Kᵀ and A·V) + 2·N·d·m (MLP),
    N tokens including the class token; plus the patch embedding and the head."""
    layers, d, m = TABLE_1[size]
    patches = (image // patch) ** 2
    n = patches + 1
    return (layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)
            + patches * d * 3 * patch * patch + d * classes)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_params_by_hand_equal_published_and_built(name):
    size, patch, published, _ = PUBLISHED[name]
    assert params_by_hand(size, patch) == published
    assert count_params(build_on_meta(name)) == published == cnnlab.model_info(name).params


def test_vit_h_14_at_518_is_torchvisions_default_weight_set():
    # IMAGENET1K_SWAG_E2E_V1: 633,470,440 params, a 37x37 + 1 token position embedding.
    assert params_by_hand("h", 14, image=518) == 633_470_440
    model = build_on_meta("vit_h_14", image_size=518)
    assert count_params(model) == 633_470_440
    assert tuple(model.encoder.pos_embedding.shape) == (1, 37 * 37 + 1, 1280)
    assert model.fixed_input_size == (518, 518)


def test_paper_table_1_sizes():
    # "Base 86M, Large 307M, Huge 632M" (millions, truncated): B/16 and H/14 agree; L/16 at
    # 224 with a 1000-class head is 304.3M (the paper's 307M is not reproduced by the layers).
    assert int(params_by_hand("b", 16) / 1e6) == 86
    assert int(params_by_hand("h", 14) / 1e6) == 632
    assert 304e6 < params_by_hand("l", 16) < 305e6


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_macs_by_hand_equal_torchvisions_gflops(name):
    size, patch, _, gflops = PUBLISHED[name]
    # torchvision states three decimals of a GMAC, attention matmuls included.
    assert macs_by_hand(size, patch) == pytest.approx(gflops * 1e9, abs=5e5)
    assert cnnlab.model_info(name).macs == pytest.approx(macs_by_hand(size, patch), abs=5e5)


@pytest.fixture(scope="module")
def vit_b_16_summary():
    return summarize("vit_b_16")


def test_analyser_counts_the_attention_matmuls(vit_b_16_summary):
    s = vit_b_16_summary
    assert s.total_macs == macs_by_hand("b", 16) == 17_563_828_224
    assert s.total_params == 86_567_656
    assert not s.unaccounted
    # Q·Kᵀ and A·V of the 12 heads of 64 dims: N²·d each, N = 197, d = 768, in every layer.
    attention = [r for r in s.layers if r.name.split(".")[-1].startswith("bmm")]
    assert len(attention) == 2 * 12
    assert all(r.macs == 197 * 197 * 768 for r in attention)


def _mha_and_hand_macs():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(3, 5, 8)  # B 3, N 5, d 8
    b, n, d = x.shape
    return mha, x, b * (4 * n * d * d + 2 * n * n * d)


class _Macs(TorchDispatchMode):
    """cnnlab's MAC rule on every aten op of a real (not meta) forward."""

    def __init__(self) -> None:
        super().__init__()
        self.flops, self.ops = 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.add(func._overloadpacket)
        self.flops += ops.mac_flops(func, args, kwargs, out) or 0
        return out


@pytest.mark.parametrize("grad", [False, True], ids=["fast-path", "fused-sdpa"])
def test_fused_attention_kernels_are_counted(grad):
    # Eval without autograd takes nn.MultiheadAttention's fast path (one fused aten op);
    # with autograd, scaled_dot_product_attention's fused CPU kernel. torch's counter has no
    # formula for either; cnnlab's counts them as the math path's matmuls.
    mha, x, hand = _mha_and_hand_macs()
    with torch.set_grad_enabled(grad), _Macs() as counter:
        mha(x, x, x, need_weights=False)
    fused = (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu if grad
             else torch.ops.aten._native_multi_head_attention)
    assert fused in counter.ops
    assert counter.flops // 2 == hand


def test_receptive_field_is_the_patch_then_the_whole_input(vit_b_16_summary):
    s = vit_b_16_summary
    conv_proj = s.module_outputs["conv_proj"][1]
    assert (conv_proj.size, conv_proj.jump, conv_proj.covers_input) == (16, 16, False)
    rows = {r.name: r for r in s.layers}
    before = rows["encoder.layers.encoder_layer_0.ln_1"].receptive_field
    assert (before.size, before.covers_input) == (16, False)  # a token sees its patch
    assert s.first_global == "encoder.layers.encoder_layer_0.self_attention"
    first_qk = rows["encoder.layers.encoder_layer_0.self_attention.bmm"].receptive_field
    assert first_qk.covers_input  # Q·Kᵀ mixes the tokens
    for i in range(12):
        rf = s.module_outputs[f"encoder.layers.encoder_layer_{i}"][1]
        assert (rf.size, rf.covers_input, rf.local_size) == (224, True, 16)
    assert s.receptive_field.covers_input and s.receptive_field.size == 224


def test_cli_rf_says_where_the_field_becomes_global(capsys):
    assert main(["rf", "vit_b_32"]) == 0
    out = capsys.readouterr().out
    assert "conv_proj" in out and "1x768x7x7" in out
    assert "224 (global)" in out
    assert "whole input from encoder.layers.encoder_layer_0.self_attention on" in out
    assert "UNACCOUNTED" not in out


def test_class_token_features_and_token_maps():
    torch.manual_seed(0)
    model = cnnlab.create_model("vit_b_32", num_classes=0).eval()
    layer_out = {}
    model.encoder.layers[-1].register_forward_hook(lambda m, i, o: layer_out.setdefault("o", o))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens)
        first, last = FeatureExtractor(model, (0, -1))(x)
    assert tokens.shape == (1, 50, 768) and pooled.shape == (1, 768)
    torch.testing.assert_close(pooled, tokens[:, 0])  # num_classes=0: the class token
    assert first.shape == last.shape == (1, 768, 7, 7)
    # The last map is encoder_layer_11's patch tokens (before the final LN), row by row:
    # token 1 + 7·r + c is patch (r, c).
    torch.testing.assert_close(last[0, :, 0, 1], layer_out["o"][0, 2])
    torch.testing.assert_close(last[0, :, 2, 3], layer_out["o"][0, 1 + 7 * 2 + 3])


def test_other_sizes_are_refused_naming_the_position_embedding():
    with torch.device("meta"):
        model = cnnlab.create_model("vit_b_16")
    with pytest.raises(ValueError, match=r"vit_b_16: takes exactly 3x224x224 inputs \(the "
                                         r"position embedding .* 14x14 grid of 16-pixel"):
        model(torch.empty(1, 3, 256, 256, device="meta"))
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        cnnlab.create_model("vit_b_16", image_size=200)


def test_reset_classifier_and_feature_info():
    with torch.device("meta"):
        model = cnnlab.create_model("vit_l_16")
    assert model.get_classifier() is model.heads.head
    model.reset_classifier(10)
    assert (model.heads.head.in_features, model.heads.head.out_features) == (1024, 10)
    info = model.feature_info
    assert len(info) == 1 + 24 and set(info.channels()) == {1024}
    assert set(info.reduction()) == {16}
    assert info.module_name()[:2] == ["conv_proj", "encoder.layers.encoder_layer_0"]


def test_a_slice_of_some_patch_tokens_is_no_longer_the_whole_grid():
    class Patches(nn.Module):
        def __init__(self, end: int | None) -> None:
            super().__init__()
            self.embed, self.end = nn.Conv2d(3, 8, 4, stride=4), end

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16, 8) on a 4 x 4 grid
            return tokens[:, 0:self.end]

    whole = summarize(Patches(None), (3, 16, 16))
    assert not whole.unaccounted  # x[:, 0:] keeps every token
    some = summarize(Patches(3), (3, 16, 16))
    assert any("indexing a token sequence" in u for u in some.unaccounted)
