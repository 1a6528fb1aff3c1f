"""SqueezeNet (Iandola et al. 2016): Table 1's parameter count, fire modules, v1.1."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnlab

from zoo_helpers import build_on_meta, count_params


def fire_params(c_in: int, s: int, e1: int, e3: int) -> int:
    return s * (c_in + 1) + e1 * (s + 1) + e3 * (s * 9 + 1)


# Table 1: s1x1, e1x1, e3x3 of fire2..fire9; every fire's input is the previous e1 + e3.
FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
         (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]


def squeezenet_params(conv1_filters: int, conv1_kernel: int) -> int:
    total = conv1_filters * (3 * conv1_kernel**2 + 1)
    c_in = conv1_filters
    for s, e1, e3 in FIRES:
        total += fire_params(c_in, s, e1, e3)
        c_in = e1 + e3
    return total + 1000 * (512 + 1)  # conv10: 1x1, 512 -> 1000


def test_v1_0_params_are_table_1_total():
    derived = squeezenet_params(96, 7)
    assert derived == 1_248_424  # Table 1's total (no sparsity, no Deep Compression)
    assert count_params(build_on_meta("squeezenet1_0")) == derived
    # "50x fewer parameters" than AlexNet (as published, 60,965,224).
    assert 45 < 60_965_224 / derived < 55


def test_v1_1_has_a_64_filter_3x3_conv1():
    derived = squeezenet_params(64, 3)
    assert count_params(build_on_meta("squeezenet1_1")) == derived == 1_235_496


def test_fire_output_concatenates_expand_maps():
    model = cnnlab.create_model("squeezenet1_0").eval()
    fire2 = model.features[3]
    out = fire2(torch.randn(1, 96, 9, 9))
    assert out.shape == (1, 64 + 64, 9, 9)
    # squeeze ratio SR = s1x1 / (e1x1 + e3x3) = 0.125 in every fire; pct3x3 = 0.5
    assert all(s / (e1 + e3) == 0.125 and e3 / (e1 + e3) == 0.5 for s, e1, e3 in FIRES)


def test_unknown_version_is_a_clear_error():
    from cnnlab.models.squeezenet import SqueezeNet

    with pytest.raises(ValueError, match="version must be one of.*got '1_2'"):
        SqueezeNet("1_2")


def squeezenet_macs(conv1_filters: int, conv1_kernel: int, pools_after: set[int]) -> int:
    """Conv multiply-adds at 224x224: conv1 stride 2 (no padding), 3x3/2 max pools rounding
    up after conv1 and after the fires in ``pools_after`` (0 = fire2), conv10 on the last map."""
    def pool(side: int) -> int:
        return -(-(side - 3) // 2) + 1

    side = (224 - conv1_kernel) // 2 + 1
    total = side * side * 3 * conv1_filters * conv1_kernel**2
    side, c_in = pool(side), conv1_filters
    for i, (s, e1, e3) in enumerate(FIRES):
        total += side * side * (c_in * s + s * e1 + s * e3 * 9)
        c_in = e1 + e3
        if i in pools_after:
            side = pool(side)
    return total + side * side * 512 * 1000


@pytest.mark.parametrize(
    ("name", "conv1", "pools_after"),
    [("squeezenet1_0", (96, 7), {2, 6}),  # Table 1: maxpool after conv1, fire4, fire8
     ("squeezenet1_1", (64, 3), {1, 3})],  # v1.1: pools moved to after fire3 and fire5
)
def test_declared_macs_follow_from_the_layers(name, conv1, pools_after):
    derived = squeezenet_macs(*conv1, pools_after)
    # torchvision publishes GFLOPs (= GMACs) to three decimals: 0.819 and 0.349.
    assert round(derived, -6) == cnnlab.model_info(name).macs
    model = build_on_meta(name).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() / 2 == derived
