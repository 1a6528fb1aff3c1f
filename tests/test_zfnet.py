"""ZFNet (Zeiler & Fergus 2014, Fig. 3): feature-map sizes and parameter count."""

from __future__ import annotations

import pytest
import torch

import cnnlab

from zoo_helpers import build_on_meta, count_params


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_out * (c_in * k * k + 1)


def fc_params(n_in: int, n_out: int) -> int:
    return n_out * (n_in + 1)


def test_feature_map_sizes_of_fig_3():
    # Fig. 3: 224 -> 110 (conv1) -> 55 (pool1) -> 26 (conv2) -> 13 (pool2, conv3-5) -> 6
    model = build_on_meta("zfnet").eval()
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    sizes = {}
    for name in names:
        getattr(model.features, name).register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, tuple(out.shape[1:])))
    model(torch.empty(1, 3, 224, 224, device="meta"))
    assert [sizes[n] for n in names] == [
        (96, 110, 110), (96, 55, 55), (256, 26, 26), (256, 13, 13),
        (384, 13, 13), (384, 13, 13), (256, 13, 13), (256, 6, 6)]


def test_parameter_count_from_fig_3():
    layers = [
        conv_params(3, 96, 7),  # 14,208
        conv_params(96, 256, 5),  # 614,656
        conv_params(256, 384, 3),  # 885,120
        conv_params(384, 384, 3),  # 1,327,488
        conv_params(384, 256, 3),  # 884,992
        fc_params(6 * 6 * 256, 4096),  # 37,752,832
        fc_params(4096, 4096),  # 16,781,312
        fc_params(4096, 1000),  # 4,097,000
    ]
    assert layers[0] == 96 * (7 * 7 * 3) + 96 == 14_208
    model = build_on_meta("zfnet")
    assert count_params(model) == sum(layers) == cnnlab.model_info("zfnet").params


def test_layer_order_pool_then_contrast_norm_and_init():
    model = cnnlab.create_model("zfnet")
    names = list(dict(model.features.named_children()))
    assert names[:4] == ["conv1", "relu1", "pool1", "norm1"]
    assert (model.features.conv1.bias == 0).all()
    assert abs(model.classifier.fc6.weight.std().item() - 0.01) < 2e-4


def test_needs_224():
    with pytest.raises(ValueError, match="zfnet.*3x224x224"):
        build_on_meta("zfnet")(torch.empty(1, 3, 227, 227, device="meta"))


def test_variant_b_widens_layers_3_to_5():
    # Table 2 (b): "layers 3,4,5: 512,1024,512 maps"
    layers = [
        conv_params(3, 96, 7), conv_params(96, 256, 5),
        conv_params(256, 512, 3), conv_params(512, 1024, 3), conv_params(1024, 512, 3),
        fc_params(6 * 6 * 512, 4096), fc_params(4096, 4096), fc_params(4096, 1000),
    ]
    model = build_on_meta("zfnet_b")
    assert count_params(model) == sum(layers) == cnnlab.model_info("zfnet_b").params
    out = model.forward_features(torch.empty(1, 3, 224, 224, device="meta"))
    assert tuple(out.shape[1:]) == (512, 6, 6)
