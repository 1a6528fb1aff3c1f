"""VGG (Simonyan & Zisserman 2015): Table 1 configurations, Table 2 counts, the lecture's
VGG16 memory arithmetic, A-LRN and config C."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnlab

from zoo_helpers import build_on_meta, count_params

# Table 1, written out block by block: the kernel size of each conv in the five blocks
# (widths 64, 128, 256, 512, 512), independent of the model code's layer lists.
WIDTHS = (64, 128, 256, 512, 512)
TABLE_1 = {
    "A": ((3,), (3,), (3, 3), (3, 3), (3, 3)),
    "B": ((3, 3), (3, 3), (3, 3), (3, 3), (3, 3)),
    "C": ((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)),
    "D": ((3, 3), (3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    "E": ((3, 3), (3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)),
}
# Table 2: "number of parameters (in millions)".
TABLE_2_MILLIONS = {"A": 133, "B": 133, "C": 134, "D": 138, "E": 144}
MODEL_OF = {"A": "vgg11", "B": "vgg13", "C": "vgg16_c", "D": "vgg16", "E": "vgg19"}


def table_1_params(config: str, batch_norm: bool = False) -> int:
    total, c_in = 0, 3
    for width, kernels in zip(WIDTHS, TABLE_1[config], strict=True):
        for k in kernels:
            total += width * (c_in * k * k + 1) + (2 * width if batch_norm else 0)
            c_in = width
    fc = [(512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)]
    return total + sum(n_out * (n_in + 1) for n_in, n_out in fc)


@pytest.mark.parametrize("config", sorted(TABLE_1))
def test_params_match_table_2(config):
    derived = table_1_params(config)
    assert round(derived / 1e6) == TABLE_2_MILLIONS[config]
    assert count_params(build_on_meta(MODEL_OF[config])) == derived


def test_vgg16_is_138_357_544_and_bn_adds_two_per_channel():
    assert table_1_params("D") == 138_357_544
    for config, name in (("A", "vgg11_bn"), ("B", "vgg13_bn"), ("D", "vgg16_bn"),
                         ("E", "vgg19_bn")):
        assert count_params(build_on_meta(name)) == table_1_params(config, batch_norm=True)


def test_a_lrn_has_the_count_of_a_and_lrn_after_the_first_conv():
    model = cnnlab.create_model("vgg11_lrn")
    assert count_params(model) == table_1_params("A")
    kinds = [type(m).__name__ for m in list(model.features)[:4]]
    assert kinds == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]


def test_config_c_has_1x1_convs_in_blocks_3_to_5():
    convs = [m for m in build_on_meta("vgg16_c").features if isinstance(m, torch.nn.Conv2d)]
    kernels = [c.kernel_size[0] for c in convs]
    assert kernels == [k for block in TABLE_1["C"] for k in block]


def test_vgg16_activation_memory_of_the_lecture_slide():
    # The slide's rows: input, every conv, every pool and the three FC layers (values, not
    # bytes). 224^2*3 + 2*224^2*64 + 112^2*64 + 2*112^2*128 + 56^2*128 + 3*56^2*256 + 28^2*256
    # + 3*28^2*512 + 14^2*512 + 3*14^2*512 + 7^2*512 + 4096 + 4096 + 1000
    slide = (224**2 * 3 + 2 * 224**2 * 64 + 112**2 * 64 + 2 * 112**2 * 128 + 56**2 * 128
             + 3 * 56**2 * 256 + 28**2 * 256 + 3 * 28**2 * 512 + 14**2 * 512
             + 3 * 14**2 * 512 + 7**2 * 512 + 4096 + 4096 + 1000)
    assert slide == 15_237_608
    model = build_on_meta("vgg16").eval()
    counted = [224 * 224 * 3]
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.Linear)):
            m.register_forward_hook(lambda _m, _i, out: counted.append(out[0].numel()))
    model(torch.empty(1, 3, 224, 224, device="meta"))
    assert sum(counted) == slide


def test_glorot_init_option_and_bad_init():
    torch.manual_seed(0)
    conv = cnnlab.create_model("vgg11", init="glorot").features[0]
    bound = (6 / (3 * 9 + 64 * 9)) ** 0.5  # Glorot uniform: sqrt(6 / (fan_in + fan_out))
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    with pytest.raises(ValueError, match="init must be 'kaiming' or 'glorot', got 'he'"):
        cnnlab.create_model("vgg11", init="he")


def table_1_macs(config: str, size: int = 224) -> int:
    """Multiply-adds of the conv and FC layers: block i runs at size / 2^i (Table 1's 2x2/2
    pools after each block), a k x k conv costs H*W*c_in*c_out*k*k."""
    total, c_in = 0, 3
    for i, (width, kernels) in enumerate(zip(WIDTHS, TABLE_1[config], strict=True)):
        side = size // 2**i
        for k in kernels:
            total += side * side * c_in * width * k * k
            c_in = width
    return total + 512 * 7 * 7 * 4096 + 4096 * 4096 + 4096 * 1000


@pytest.mark.parametrize("config", ["A", "B", "D", "E"])
def test_declared_macs_are_table_1_arithmetic(config):
    derived = table_1_macs(config)
    for name in (MODEL_OF[config], f"{MODEL_OF[config]}_bn"):  # BN adds no multiply-adds
        # torchvision publishes GFLOPs (= GMACs) to three decimals.
        assert round(derived, -6) == cnnlab.model_info(name).macs
    model = build_on_meta(MODEL_OF[config]).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() / 2 == derived
