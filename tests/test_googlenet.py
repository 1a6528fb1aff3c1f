"""GoogLeNet and the Inception module against Szegedy et al. 2015 (Table 1) and the lecture."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.models import Inception, InceptionNaive
from cnnlab.models.googlenet import GoogLeNetOutputs

from zoo_helpers import build_on_meta, count_params

# Table 1 of the paper, typed in again here (not imported from the code):
# name: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, ops in millions).
TABLE_1 = {
    "3a": (64, 96, 128, 16, 32, 32, 128),
    "3b": (128, 128, 192, 32, 96, 64, 304),
    "4a": (192, 96, 208, 16, 48, 64, 73),
    "4b": (160, 112, 224, 24, 64, 64, 88),
    "4c": (128, 128, 256, 24, 64, 64, 100),
    "4d": (112, 144, 288, 32, 64, 64, 119),
    "4e": (256, 160, 320, 32, 128, 128, 170),
    "5a": (256, 160, 320, 32, 128, 128, 54),
    "5b": (384, 192, 384, 48, 128, 128, 71),
}


def conv(cin: int, cout: int, k: int, bias: bool = True, bn: bool = False) -> int:
    return k * k * cin * cout + (cout if bias else 0) + (2 * cout if bn else 0)


def googlenet_params(*, paper: bool, aux: bool) -> int:
    """Sum of Table 1's layers: paper form (biases, 5x5) or torchvision's (BN, 3x3, no bias)."""
    c = lambda cin, cout, k: conv(cin, cout, k, bias=paper, bn=not paper)  # noqa: E731
    k5 = 5 if paper else 3
    total = c(3, 64, 7) + c(64, 64, 1) + c(64, 192, 3)
    cin, widths = 192, {}
    for name, (n1, r3, n3, r5, n5, pp, _ops) in TABLE_1.items():
        total += c(cin, n1, 1) + c(cin, r3, 1) + c(r3, n3, 3) + c(cin, r5, 1) + c(r5, n5, k5)
        total += c(cin, pp, 1)
        cin = widths[name] = n1 + n3 + n5 + pp
    total += cin * 1000 + 1000
    if aux:  # Sec. 5: 1x1 conv 128, FC 1024 on the 4x4x128 map, linear 1000
        for tap in ("4a", "4d"):
            total += c(widths[tap], 128, 1) + (4 * 4 * 128 * 1024 + 1024) + (1024 * 1000 + 1000)
    return total


def test_table_1_arithmetic_gives_the_published_counts():
    assert googlenet_params(paper=True, aux=False) == 6_998_552  # paper_numbers.md
    assert googlenet_params(paper=True, aux=True) == 13_378_280
    assert googlenet_params(paper=False, aux=False) == 6_624_904  # torchvision's published
    assert googlenet_params(paper=False, aux=True) == 13_004_888


@pytest.mark.parametrize(
    "name, aux", [("googlenet", False), ("googlenet", True), ("googlenet_paper", False),
                  ("googlenet_paper", True)]
)
def test_param_counts_equal_table_1_arithmetic(name, aux):
    model = build_on_meta(name, aux_logits=aux)
    assert count_params(model) == googlenet_params(paper=name.endswith("paper"), aux=aux)


def module_macs(model: torch.nn.Module, size: int) -> dict[str, float]:
    with FlopCounterMode(display=False, depth=2) as counter:
        model(torch.empty(1, 3, size, size, device="meta"))
    return {k.split(".", 1)[-1]: sum(v.values()) / 2 for k, v in counter.get_flop_counts().items()}


def test_paper_form_module_ops_match_table_1():
    macs = module_macs(build_on_meta("googlenet_paper").eval(), 224)
    for name, (*_cols, ops_m) in TABLE_1.items():
        if name == "5a":
            # Table 1 prints 54M, but its own columns give 7*7*(832*256 + 832*160 + 160*9*320
            # + 832*32 + 32*25*128 + 832*128) = 51.08M; the code follows the columns.
            assert macs["inception5a"] == 49 * 1_042_432
            continue
        # Table 1 rounds to whole millions (and truncates 4a's 73.6M to 73M).
        assert abs(macs[f"inception{name}"] / 1e6 - ops_m) < 1.0, name
    # conv 3x3 stage (1x1 reduce + 3x3) on 56x56: Table 1 says 360M.
    assert (macs["conv2"] + macs["conv3"]) / 1e6 == pytest.approx(360, abs=1)
    assert macs["fc"] == 1024 * 1000  # the linear layer's 1M


# The lecture's example: one module on a 28x28x256 map.
def test_lecture_naive_module_is_one_line_and_gives_672_channels():
    module = InceptionNaive(256, c1=128, c3=192, c5=96)
    out = module(torch.randn(1, 256, 28, 28))
    assert out.shape == (1, 128 + 192 + 96 + 256, 28, 28) == (1, 672, 28, 28)
    with FlopCounterMode(display=False) as counter:
        module(torch.empty(1, 256, 28, 28, device="meta"))
    # The slide's three conv terms: 28*28*128*1*1*256, 28*28*192*3*3*256, 28*28*96*5*5*256.
    terms = [28 * 28 * 128 * 256, 28 * 28 * 192 * 9 * 256, 28 * 28 * 96 * 25 * 256]
    assert [round(t / 1e6, 1) for t in terms] == [25.7, 346.8, 481.7]
    assert counter.get_total_flops() / 2 == sum(terms)
    assert round(sum(terms) / 1e6) == 854  # "854M ops"


def test_lecture_reduced_module_with_its_numbers():
    # 1x1 reductions to 64 before the 3x3 and the 5x5, and a 64-filter pool projection.
    module = Inception(256, c1=128, c3_reduce=64, c3=192, c5_reduce=64, c5=96, pool_proj=64)
    out = module(torch.randn(1, 256, 28, 28))
    assert out.shape == (1, 128 + 192 + 96 + 64, 28, 28) == (1, 480, 28, 28)
    with FlopCounterMode(display=False) as counter:
        module(torch.empty(1, 256, 28, 28, device="meta"))
    hw = 28 * 28
    terms = [hw * 64 * 256, hw * 64 * 256, hw * 128 * 256, hw * 192 * 9 * 64, hw * 96 * 25 * 64,
             hw * 64 * 256]
    assert counter.get_total_flops() / 2 == sum(terms)
    # The slide's own terms sum to 271.4M (it prints a larger total; paper_numbers.md).
    assert round(sum(terms) / 1e6, 1) == 271.4
    params = sum(p.numel() for p in module.parameters())
    assert params == (256 * 128 + 256 * 64 + 9 * 64 * 192 + 256 * 64 + 25 * 64 * 96 + 256 * 64
                      + 128 + 64 + 192 + 64 + 96 + 64)


def test_modules_are_exported_from_the_package():
    import cnnlab.models as models
    import cnnlab.models.googlenet as googlenet

    assert models.InceptionNaive is googlenet.InceptionNaive
    assert models.Inception is googlenet.Inception


def test_torchvision_form_has_3x3_in_the_5x5_branch_and_paper_form_5x5():
    tv, paper = build_on_meta("googlenet"), build_on_meta("googlenet_paper")
    assert tv.inception3a.branch3[1].conv.kernel_size == (3, 3)
    assert paper.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert paper.inception3a.branch3[1].conv.bias is not None
    assert isinstance(paper.lrn1, torch.nn.LocalResponseNorm)
    assert paper.dropout.p == 0.4 and tv.dropout.p == 0.2


def test_aux_heads_return_torchvision_tuple_in_training_only():
    model = cnnlab.create_model("googlenet", aux_logits=True, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    out = model.train()(x)
    assert isinstance(out, GoogLeNetOutputs) and out._fields == (
        "logits", "aux_logits2", "aux_logits1")
    assert all(t.shape == (2, 10) for t in out)
    assert isinstance(model.eval()(x), torch.Tensor)
    # Without aux heads (the default), training mode returns plain logits.
    plain = cnnlab.create_model("googlenet", num_classes=10).train()
    assert plain.aux1 is None and isinstance(plain(x), torch.Tensor)


def test_paper_aux_heads_need_the_224_geometry():
    model = build_on_meta("googlenet_paper", aux_logits=True).train()
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert isinstance(out, GoogLeNetOutputs) and out.aux_logits1.shape == (1, 1000)
    with pytest.raises(ValueError, match="4x4"):
        model(torch.empty(1, 3, 128, 128, device="meta"))


def test_transform_input_is_torchvisions_rescaling():
    model = cnnlab.create_model("googlenet", transform_input=True).eval()
    x = torch.randn(1, 3, 32, 32)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    manual = torch.stack([x[:, i] * std[i] / 0.5 + (mean[i] - 0.5) / 0.5 for i in range(3)], 1)
    model.transform_input = False
    expected = model(manual)
    model.transform_input = True
    torch.testing.assert_close(model(x), expected)


def googlenet_macs(*, k5: int) -> int:
    """Conv and FC multiply-adds at 224x224 from Table 1: conv1 at 112, conv2/conv3 at 56,
    inception 3x at 28, 4x at 14, 5x at 7 (the max pools halve, rounding up)."""
    total = 112 * 112 * 3 * 64 * 49 + 56 * 56 * (64 * 64 + 64 * 192 * 9)
    cin = 192
    for name, (n1, r3, n3, r5, n5, pp, _ops) in TABLE_1.items():
        side = {"3": 28, "4": 14, "5": 7}[name[0]]
        total += side * side * (cin * n1 + cin * r3 + r3 * n3 * 9 + cin * r5 + r5 * n5 * k5 * k5
                                + cin * pp)
        cin = n1 + n3 + n5 + pp
    return total + cin * 1000


def test_torchvision_form_macs_follow_table_1():
    derived = googlenet_macs(k5=3)  # torchvision's 3x3 "5x5" branch
    assert round(derived, -6) == cnnlab.model_info("googlenet").macs  # 1.498 GFLOPs
    model = build_on_meta("googlenet").eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() / 2 == derived


def test_paper_form_macs_and_why_none_is_declared():
    derived = googlenet_macs(k5=5)
    assert module_macs(build_on_meta("googlenet_paper").eval(), 224)["Global"] == derived
    # Table 1's ops column sums to 1,502M, but its conv1 row (34M) is far below the
    # 7x7x3x64 convolution at 112x112 (118M): the layers give 1.58G, so no MAC count is
    # declared for googlenet_paper.
    table_ops = 34 + 360 + sum(row[-1] for row in TABLE_1.values()) + 1
    assert table_ops == 1502 and 112 * 112 * 49 * 3 * 64 // 10**6 == 118
    assert round(derived / 1e9, 2) == 1.58
    assert cnnlab.model_info("googlenet_paper").macs is None
