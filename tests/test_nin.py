"""Network in Network (Lin et al. 2014): mlpconv counts, map sizes, global average pooling."""

from __future__ import annotations

import torch

import cnnlab

from zoo_helpers import build_on_meta, count_params


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_out * (c_in * k * k + 1)


def mlpconv_params(c_in: int, widths: tuple[int, int, int], k: int) -> int:
    a, b, c = widths
    return conv_params(c_in, a, k) + conv_params(a, b, 1) + conv_params(b, c, 1)


def test_cifar_nin_params_from_its_layer_table():
    # 192-160-96 (5x5) / 192-192-192 (5x5) / 192-192-10 (3x3)
    derived = (mlpconv_params(3, (192, 160, 96), 5) + mlpconv_params(96, (192, 192, 192), 5)
               + mlpconv_params(192, (192, 192, 10), 3))
    assert derived == 14_592 + 30_880 + 15_456 + 460_992 + 37_056 * 2 + 331_968 + 37_056 + 1_930
    assert count_params(build_on_meta("nin_cifar")) == derived


def test_imagenet_nin_params_from_the_model_zoo_layout():
    derived = (mlpconv_params(3, (96, 96, 96), 11) + mlpconv_params(96, (256, 256, 256), 5)
               + mlpconv_params(256, (384, 384, 384), 3)
               + mlpconv_params(384, (1024, 1024, 1000), 3))
    assert derived == 7_595_176
    assert round(derived * 4 / 2**20) == 29  # the Model Zoo's "small (29MB) model", float32
    assert count_params(build_on_meta("nin")) == derived


def test_cifar_map_sizes_and_pool_types():
    model = build_on_meta("nin_cifar", features_only=True).eval()
    maps = model(torch.empty(1, 3, 32, 32, device="meta"))
    # 3x3/2 pools rounding up: ceil((32-3)/2)+1 = 16, ceil((16-3)/2)+1 = 8
    assert [tuple(m.shape[1:]) for m in maps] == [(96, 16, 16), (192, 8, 8), (10, 8, 8)]
    f = cnnlab.create_model("nin_cifar").features
    assert isinstance(f.pool1, torch.nn.MaxPool2d) and isinstance(f.pool2, torch.nn.AvgPool2d)
    assert f.drop1.p == f.drop2.p == 0.5


def test_imagenet_map_sizes():
    model = build_on_meta("nin", features_only=True).eval()
    maps = model(torch.empty(1, 3, 224, 224, device="meta"))
    # conv1 11x11/4: (224-11)//4+1 = 54; pools round up: 27, 13, 6
    assert [tuple(m.shape[1:]) for m in maps] == [
        (96, 27, 27), (256, 13, 13), (384, 6, 6), (1000, 6, 6)]


def test_logits_are_the_average_of_the_class_maps():
    torch.manual_seed(0)
    model = cnnlab.create_model("nin_cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = model.forward_features(x)
        logits = model(x)
    assert maps.shape == (2, 10, 8, 8)
    torch.testing.assert_close(logits, maps.mean(dim=(2, 3)))
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())  # no FC layer


def test_num_classes_sets_the_last_mlp_layer():
    model = cnnlab.create_model("nin_cifar", num_classes=100)
    assert model.features.block3.cccp2.out_channels == 100
