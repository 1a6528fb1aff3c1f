"""Deformable ResNets (Dai et al. 2017): deformable res5a,b,c 3x3s on ResNet-50/101."""

from __future__ import annotations

import pytest
import torch

import cnnlab
from cnnlab.analysis import summarize
from cnnlab.layers import DeformConv2d

from zoo_helpers import build_on_meta, count_params

# Hand derivation: each res5 block's 3x3 reads 512 channels; its offset conv predicts
# 2·3·3 = 18 channels with a 3x3 kernel and a bias: 512·18·9 + 18 = 82,962, three blocks.
OFFSET_CONV = 512 * 18 * 9 + 18
RESNET50, RESNET101 = 25_557_032, 44_549_160  # He et al. 2016 / torchvision


def test_offset_conv_count_by_hand():
    assert OFFSET_CONV == 82_962
    assert 3 * OFFSET_CONV == 248_886


@pytest.mark.parametrize(("name", "base"), [("resnet50_dcn", RESNET50),
                                            ("resnet101_dcn", RESNET101)])
def test_params_are_resnet_plus_three_offset_convs(name, base):
    model = build_on_meta(name)
    assert count_params(model) == base + 3 * OFFSET_CONV
    assert cnnlab.model_info(name).params == base + 3 * OFFSET_CONV
    deform = [n for n, m in model.named_modules() if isinstance(m, DeformConv2d)]
    assert deform == ["layer4.0.conv2", "layer4.1.conv2", "layer4.2.conv2"]  # res5a,b,c
    assert model.layer4[0].conv2.stride == (2, 2)  # v1.5: res5a's 3x3 (and its offsets) strided


def test_info_names_the_paper_and_deviations():
    info = cnnlab.model_info("resnet50_dcn")
    assert (info.year, info.url) == (2017, "https://arxiv.org/abs/1703.06211")
    assert "Deformable Convolutional Networks" == info.title
    assert info.deviations and info.top1_error is None


def test_resnet_weights_load_and_give_the_resnets_output_at_init():
    """The offsets start at zero, so with ResNet-50's weights the network is ResNet-50."""
    torch.manual_seed(0)
    resnet = cnnlab.create_model("resnet50").eval()
    dcn = cnnlab.create_model("resnet50_dcn").eval()
    missing, unexpected = dcn.load_state_dict(resnet.state_dict(), strict=False)
    assert unexpected == []
    assert sorted(missing) == sorted(f"layer4.{i}.conv2.conv_offset.{p}"
                                     for i in range(3) for p in ("weight", "bias"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dcn(x), resnet(x), rtol=1e-4, atol=1e-4)
        feats = cnnlab.create_model("resnet50_dcn", features_only=True)
        feats.load_state_dict(dcn.state_dict(), strict=False)
    assert [f.shape[1] for f in feats(x)] == [64, 256, 512, 1024, 2048]


def test_analyser_counts_the_offset_convs_and_the_regular_conv_macs():
    dcn, base = summarize("resnet50_dcn", (3, 64, 64)), summarize("resnet50", (3, 64, 64))
    # At 64x64 res5 is 2x2 (L = 4): each offset conv costs 512·18·9·4 MACs.
    assert dcn.total_macs - base.total_macs == 3 * 512 * 18 * 9 * 4
    assert dcn.total_params == RESNET50 + 3 * OFFSET_CONV
    op = next(r for r in dcn.layers if r.name == "layer4.0.conv2.deform")
    assert op.macs == 512 * 512 * 9 * 4  # the regular 3x3 conv's
    # Sampling (docs/analysis.md): 8 per value (C·K·L = 512·9·4), 62 per position (G·K·L =
    # 9·4), kh + kw + (K + 2)(H_out + W_out) for the grid.
    assert op.other_ops == 8 * 512 * 9 * 4 + 62 * 9 * 4 + 3 + 3 + 11 * (2 + 2)
    # The receptive field depends on the input: unknown from res5 on, never a wrong number.
    assert dcn.receptive_field is None
    assert base.module_outputs["layer3"][1].size == dcn.module_outputs["layer3"][1].size
    assert dcn.module_outputs["layer4"][1] is None
    assert any("input-dependent" in u and "whole input" in u for u in dcn.unaccounted)


def test_modulated_option_counts_the_mask():
    model = build_on_meta("resnet50_dcn", modulated=True)
    # DCNv2: the offset conv also predicts 3·3 masks: 27 outputs instead of 18.
    assert count_params(model) == RESNET50 + 3 * (512 * 27 * 9 + 27)
    s = summarize(model, (3, 64, 64))
    op = next(r for r in s.layers if r.name == "layer4.0.conv2.deform")
    assert op.other_ops == 9 * 512 * 9 * 4 + 62 * 9 * 4 + 3 + 3 + 11 * (2 + 2)


def test_cli_summary_and_rf(capsys):
    from cnnlab.cli import main

    assert main(["rf", "resnet50_dcn", "--input", "3x64x64"]) == 0
    out = capsys.readouterr().out
    assert "input-dependent" in out and "layer3" in out
    assert main(["summary", "resnet50_dcn", "--input", "3x64x64"]) == 0
    out = capsys.readouterr().out
    assert "DeformConv2dOp" in out and "conv_offset" in out
