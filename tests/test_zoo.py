"""Checks that every registered model must pass (parametrised over the registry)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnlab

from conftest import torchvision_reference
from zoo_helpers import build_on_meta, count_params, heavy_param, small_build, small_input_hw

ALL = cnnlab.list_models()
TORCHVISION = [n for n in ALL if cnnlab.model_info(n).torchvision]
# Models whose paper or reference publishes a MAC count; the others declare None.
WITH_MACS = [n for n in ALL if cnnlab.model_info(n).macs is not None]
# torchvision's DEFAULT vit_h_14 weights are at 518x518; cnnlab builds it at 224, as
# torchvision's constructor does, and declares the 224 weight set, retyped from torchvision's
# ViT_H_14_Weights.IMAGENET1K_SWAG_LINEAR_V1.
AT_224 = {"vit_h_14": {"num_params_published": 632_045_800, "gflops_published": 167.295,
                       "acc1": 85.708, "acc5": 97.73, "min_size": [224, 224]}}


def _published(name: str) -> dict:
    return {**torchvision_reference()[name], **AT_224.get(name, {})}


@pytest.mark.parametrize("name", ALL)
def test_declared_params_equal_measured(name):
    assert count_params(build_on_meta(name)) == cnnlab.model_info(name).params


@pytest.mark.parametrize("name", WITH_MACS)
def test_declared_macs_equal_flop_counter(name):
    info = cnnlab.model_info(name)
    model = build_on_meta(name).eval()
    x = torch.empty((1, *info.input_size), device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x)
    measured = counter.get_total_flops() / 2
    # Published figures are rounded to three decimals of a GMAC (torchvision) or stated
    # to two significant figures (papers); accept that rounding and nothing more.
    assert measured == pytest.approx(info.macs, rel=5e-3, abs=5e5)


@pytest.mark.parametrize("name", ALL)
def test_meta_forward_honours_num_classes_and_in_chans(name):
    info = cnnlab.model_info(name)
    model = build_on_meta(name, num_classes=7, in_chans=2).eval()
    h, w = small_input_hw(name, model)
    out = model(torch.empty(3, 2, h, w, device="meta"))
    assert tuple(out.shape) == (3, 7)
    assert info.num_classes != 7  # the override really changed something


@pytest.mark.parametrize("name", [heavy_param(n) for n in ALL])
def test_forward_backward_real(name):
    model = cnnlab.create_model(name, **small_build(name)).train()
    h, w = small_input_hw(name, model)
    x = torch.randn(2, model.in_chans, h, w, requires_grad=True)
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, cnnlab.model_info(name).num_classes)
    assert torch.isfinite(logits).all()
    logits.float().pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_features_only_gives_declared_channels_and_reductions(name):
    model = build_on_meta(name)
    h, w = small_input_hw(name, model)
    if model.fixed_input_size is None:
        # 160, not 128: the valid-padded stems of Inception-v4/-ResNet-v2 leave a 2x2 map
        # at reduction 32 from 128x128, which the lower bound below would reject.
        h, w = max(h, 160), max(w, 160)
    backbone = build_on_meta(name, features_only=True).eval()
    maps = backbone(torch.empty(1, model.in_chans, h, w, device="meta"))
    assert len(maps) == len(model.feature_info) >= 1
    for fmap, info in zip(maps, backbone.feature_info, strict=True):
        assert fmap.shape[1] == info["channels"], info
        # Valid (unpadded) layers lose a few pixels, so a stage is allowed to be smaller
        # than H/reduction, but never as small as a stage with twice the reduction.
        assert h / (2 * info["reduction"]) < fmap.shape[2] <= math.ceil(h / info["reduction"]), info


@pytest.mark.parametrize("name", ALL)
def test_input_checks_name_model_and_shape(name):
    model = build_on_meta(name)
    h, w = small_input_hw(name, model)
    c = model.in_chans
    with pytest.raises(ValueError, match=f"{name}.*channels"):
        model(torch.empty(1, c + 1, h, w, device="meta"))
    with pytest.raises(ValueError, match=f"{name}.*4-D"):
        model(torch.empty(c, h, w, device="meta"))
    mh, mw = model.fixed_input_size or model.min_input_size
    if (mh, mw) != (1, 1):
        with pytest.raises(ValueError, match=f"{name}.*{mh}x{mw}"):
            model(torch.empty(1, c, mh - 1, mw, device="meta"))


@pytest.mark.parametrize("name", ALL)
def test_min_input_size_is_accepted(name):
    model = build_on_meta(name).eval()
    mh, mw = model.fixed_input_size or model.min_input_size
    out = model(torch.empty(1, model.in_chans, mh, mw, device="meta"))
    assert out.shape[-1] == cnnlab.model_info(name).num_classes


@pytest.mark.parametrize("name", TORCHVISION)
def test_state_dict_keys_and_shapes_match_torchvision(name):
    ref = torchvision_reference()[name]
    model = build_on_meta(name, **ref["constructor_kwargs"])
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(k, s) for k, s in ref["state_dict"]]
    assert count_params(model) == ref["num_params_constructed"]


# torchvision declares Swin's min_size as 224, the size its weights were evaluated at; its
# layers pad to windows and take any size. cnnlab's rule (models/swin.py): at least 32x32, so
# that stage 4 (stride 32) holds a whole token.
MIN_SIZE_DEVIATES = {"swin_t": [32, 32], "swin_s": [32, 32], "swin_b": [32, 32]}


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_min_size_matches(name):
    model = build_on_meta(name)
    expected = MIN_SIZE_DEVIATES.get(name, _published(name)["min_size"])
    assert list(model.min_input_size) == expected


@pytest.mark.parametrize("name", TORCHVISION)
def test_declared_facts_match_torchvision(name):
    ref, info = _published(name), cnnlab.model_info(name)
    assert info.params == ref["num_params_published"]
    assert info.macs == pytest.approx(ref["gflops_published"] * 1e9, abs=5e5)
    assert info.top1_error == pytest.approx(100 - ref["acc1"])
    assert info.top5_error == pytest.approx(100 - ref["acc5"])
