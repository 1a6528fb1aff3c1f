"""BN folding (cnnlab.deploy.fuse_bn) over the whole registry, and the fold's arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import cnnlab
from cnnlab.deploy import fuse_bn, optimize_for_inference
from cnnlab.deploy.fuse import calibrate_bn, fold_bn_into

from zoo_helpers import build_on_meta, heavy_param

ALL = cnnlab.list_models()
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def bn_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, BATCH_NORMS)]


def randomise_bn(model: nn.Module) -> None:
    """Give every BN non-trivial statistics and affine terms, so a wrong fold shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BATCH_NORMS):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def tiny_hw(model: nn.Module) -> tuple[int, int]:
    if model.fixed_input_size is not None:
        return model.fixed_input_size
    mh, mw = model.min_input_size
    return max(mh, 16), max(mw, 16)


def check_report(model: nn.Module, fused: nn.Module, report) -> None:
    expected = bn_names(model)
    assert report.bn_count == len(expected)
    assert sorted(bn for bn, _ in report.folded + report.left) == sorted(expected)
    # Folded BNs are gone from the new model; those left are still there, each with a reason.
    assert sorted(bn_names(fused)) == sorted(bn for bn, _ in report.left)
    assert all(reason for _, reason in report.left)
    assert bn_names(model) == expected  # the original model is untouched


@pytest.mark.parametrize("name", [heavy_param(n) for n in ALL])
def test_fused_equals_unfused_in_float64(name):
    meta = build_on_meta(name).eval()
    if not bn_names(meta):
        # Nothing to fold (checked on meta tensors, the weights are not needed): the fused
        # model must be the same modules, none replaced, so it computes the same thing.
        fused, report = fuse_bn(meta)
        check_report(meta, fused, report)
        assert [(n, type(m)) for n, m in fused.named_modules()] == [
            (n, type(m)) for n, m in meta.named_modules()
        ]
        return
    model = cnnlab.create_model(name, num_classes=10).double().eval()
    randomise_bn(model)
    fused, report = fuse_bn(model)
    check_report(model, fused, report)
    x = torch.randn(2, model.in_chans, *tiny_hw(model), dtype=torch.float64)
    with torch.no_grad():
        want, got = model(x), fused(x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


# Counts derived by hand from the architectures, not from the code.
@pytest.mark.parametrize(
    "name, folded, left",
    [
        ("resnet50", 53, 0),  # 1 stem + 16 blocks x 3 + 4 downsample BNs, all after a conv
        # 58 dense layers: norm2 follows conv1 (folds), norm1 follows a concatenation (left);
        # the stem's norm0 folds; the 3 transition norms and norm5 follow concatenations.
        ("densenet121", 58 + 1, 58 + 3 + 1),
        # 8 pre-activation blocks: bn2 follows conv1 (folds), bn1 follows the previous sum
        # (the first block uses the stem's BN, which follows the stem conv); final_norm too.
        ("preact_resnet18", 8 + 1, 7 + 1),
        ("mobilenet_v2", 52, 0),  # depthwise and pointwise convs, each with its BN
        ("googlenet", 57, 0),  # BasicConv2d everywhere, eps=1e-3; aux heads off by default
    ],
)
def test_hand_counted_folds(name, folded, left):
    _, report = fuse_bn(build_on_meta(name).eval())
    assert (len(report.folded), len(report.left)) == (folded, left)


def test_inception_v3_aux_head_bns_are_reported_not_skipped():
    _, report = fuse_bn(build_on_meta("inception_v3").eval())
    aux = [(bn, why) for bn, why in report.left if bn.startswith("AuxLogits")]
    assert len(aux) == 2 and all("does not run" in why for _, why in aux)


def test_fold_arithmetic_by_hand():
    conv = nn.Conv2d(1, 2, 1, bias=True)
    bn = nn.BatchNorm2d(2, eps=1e-3)  # Inception's eps
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 0.5]))
        bn.running_mean.copy_(torch.tensor([3.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0 - 1e-3, 1.0 - 1e-3]))  # sqrt(var + eps) = 2, 1
        bn.weight.copy_(torch.tensor([0.5, 3.0]))
        bn.bias.copy_(torch.tensor([0.25, -1.0]))
    fold_bn_into(conv, bn)
    # channel 0: s = 0.5/2 = 0.25: w = 0.5, b = 0.25*(1-3)+0.25 = -0.25
    # channel 1: s = 3/1 = 3:      w = -3,  b = 3*(0.5+2)-1 = 6.5
    assert conv.weight.flatten().tolist() == pytest.approx([0.5, -3.0])
    assert conv.bias.tolist() == pytest.approx([-0.25, 6.5])


def test_conv_without_bias_gets_one_and_eps_is_the_bns_own():
    conv = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)  # depthwise
    bn = nn.BatchNorm2d(3, eps=1e-3)
    with torch.no_grad():
        bn.running_var.zero_()  # scale = 1/sqrt(eps) = 31.62...
    w = conv.weight.detach().clone()
    fold_bn_into(conv, bn)
    assert torch.allclose(conv.weight, w / math.sqrt(1e-3))
    assert conv.bias is not None and torch.equal(conv.bias, torch.zeros(3))


class _SharedConvOutput(nn.Module):
    """conv -> (bn, and the raw conv output as a shortcut): folding would change the shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)
        self.conv2, self.bn2 = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn2(self.relu(self.conv2(x)))  # in-place ReLU between conv and BN
        return self.bn(y) + y + z


def test_bn_whose_conv_output_is_read_elsewhere_is_left_with_reason():
    model = _SharedConvOutput().double().eval()
    randomise_bn(model)
    fused, report = fuse_bn(model, torch.zeros(1, 2, 5, 5, dtype=torch.float64))
    reasons = dict(report.left)
    assert report.folded == [] and set(reasons) == {"bn", "bn2"}
    assert "also read elsewhere" in reasons["bn"]
    assert "activation" in reasons["bn2"]
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    assert torch.allclose(fused(x), model(x))


def test_linear_then_batchnorm1d_folds():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU()).double().eval()
    randomise_bn(model)
    fused, report = fuse_bn(model, torch.zeros(2, 4, dtype=torch.float64))
    assert report.folded == [("1", "0")] and isinstance(fused[1], nn.Identity)
    x = torch.randn(5, 4, dtype=torch.float64)
    assert torch.allclose(fused(x), model(x), rtol=0, atol=1e-12)


def test_non_cnnlab_model_needs_an_example_input():
    with pytest.raises(ValueError, match="example_input"):
        fuse_bn(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))


def test_optimize_for_inference_keeps_outputs_and_takes_nchw():
    model = cnnlab.create_model("resnet18", num_classes=10).eval()
    randomise_bn(model)
    fast = optimize_for_inference(model)
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert len(fast.fusion_report.folded) == 20
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, got = model(x), fast(x)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    half = optimize_for_inference(model, dtype=torch.bfloat16)
    with torch.no_grad():
        out = half(x)  # a float32 input is cast by the model
    assert out.dtype == torch.bfloat16
    assert (out.float() - want).abs().max() <= 0.1 * want.abs().max()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched


def test_optimize_for_inference_compile_wraps_the_fused_model():
    compiled = optimize_for_inference(build_on_meta("resnet20").eval(), compile=True)
    inner = compiled._orig_mod  # torch.compile's wrapper; compilation itself waits for a call
    assert inner.fusion_report.bn_count == 19 and not inner.fusion_report.left


def test_calibrate_bn_sets_statistics_from_the_batch():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, momentum=0.3), nn.Dropout(0.9))
    x = torch.randn(8, 1, 4, 4)
    calibrate_bn(model, x)
    y = model[0](x)
    assert torch.allclose(model[1].running_mean, y.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(model[1].running_var, y.var((0, 2, 3)), atol=1e-5)  # unbiased
    assert model[1].momentum == 0.3 and model.training  # restored
