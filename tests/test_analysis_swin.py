"""The analyser on Swin (Liu et al. 2021): window attention's receptive-field bound, by hand."""

from __future__ import annotations

import pytest
import torch.nn as nn

from cnnlab.analysis import summarize
from cnnlab.analysis.receptive_field import TensorRF, input_rf, module_rule
from cnnlab.cli import main


@pytest.fixture(scope="module")
def swin_t():
    return summarize("swin_t")


def _field(summary, module: str) -> tuple:
    shape, rf = summary.module_outputs[module]
    return rf.size, rf.jump, rf.covers_input


def test_swin_t_first_stages_by_hand(swin_t):
    # Patch embedding: a 4x4/4 conv, so a token sees 4 px and tokens are 4 px apart. Each
    # window-attention block (M = 7, shifted or not) adds M - 1 = 6 tokens on each side:
    # 2·6·jump px. Patch merging: a 2x2/2 window, +1 token (jump px), jump doubles.
    m, field, jump = 7, 4, 4
    assert _field(swin_t, "features.0") == (field, jump, False)
    for block in range(2):  # stage 1: W-MSA, SW-MSA
        field += 2 * (m - 1) * jump
        assert _field(swin_t, f"features.1.{block}") == (field, jump, False)
    assert field == 100 and _field(swin_t, "features.1") == (100, 4, False)
    field, jump = field + jump, 2 * jump  # patch merging
    assert _field(swin_t, "features.2") == (104, 8, False) == (field, jump, False)
    for block in range(2):  # stage 2
        field += 2 * (m - 1) * jump
        assert _field(swin_t, f"features.3.{block}")[:2] == (field, jump)
    assert field == 296
    assert _field(swin_t, "features.4") == (304, 16, False)
    # Stage 3's first block: 304 + 192 = 496 px around a 16-px-spaced 14x14 grid: the first
    # token then reaches past pixel 223 and the last past pixel 0, so the field is global.
    assert _field(swin_t, "features.5.0") == (496, 16, True)
    assert not swin_t.unaccounted


def test_window_rule_is_the_stated_bound():
    from cnnlab.models.swin import WindowAttention

    attention = WindowAttention(dim=8, num_heads=2, window=7, shift=0)
    rf = module_rule(attention, input_rf())
    assert rf is None  # a (B, C, H, W) map is not what window attention takes

    tokens = TensorRF(input_rf().axes, False, channels_last=True)
    out = module_rule(attention, tokens)
    assert (out.axes[0].lo, out.axes[0].hi) == (-6, 6)  # 2M - 1 = 13 tokens

    class WindowAttention(nn.Module):  # a user's module of the same name: not Swin's rule
        window = 7

    assert module_rule(WindowAttention(), tokens) is None


def test_cli_rf_swin(capsys):
    assert main(["rf", "swin_t"]) == 0
    out = capsys.readouterr().out
    assert "1x96x56x56" in out and "100" in out and "1456 (global)" in out
    assert "whole input from features.5.0.attn on" in out  # stage 3's first window block
    assert "UNACCOUNTED" not in out
