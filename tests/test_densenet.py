"""DenseNet: counts from the paper's architecture arithmetic, Table 1 shapes, options."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.models.densenet import DenseNet, _cifar_config

from zoo_helpers import build_on_meta, count_params


def bn(c: int) -> int:
    return 2 * c  # gamma and beta


def densenet_params(
    growth: int, blocks: tuple[int, ...], stem: int, *, bottleneck: bool, theta: float,
    imagenet_stem: bool, classes: int, in_chans: int = 3,
) -> int:
    """Sum of Huang et al. 2017's layers, written from Sec. 3 and Table 1:
    stem conv (7x7 + BN for ImageNet, bias-free 3x3 for CIFAR); per dense layer
    BN(c) + 1x1 c->4k + BN(4k) + 3x3 4k->k (-B) or BN(c) + 3x3 c->k; per transition
    BN(c) + 1x1 c->floor(theta c); final BN and the FC layer."""
    total = in_chans * stem * (49 if imagenet_stem else 9) + (bn(stem) if imagenet_stem else 0)
    c = stem
    for i, n in enumerate(blocks):
        for _ in range(n):
            if bottleneck:
                total += bn(c) + c * 4 * growth + bn(4 * growth) + 9 * 4 * growth * growth
            else:
                total += bn(c) + 9 * c * growth
            c += growth
        if i < len(blocks) - 1:
            out = int(theta * c)
            total += bn(c) + c * out
            c = out
    return total + bn(c) + c * classes + classes


@pytest.mark.parametrize(
    ("name", "depth", "k", "bc", "published_millions"),
    [
        ("densenet40_12", 40, 12, False, 1.0),  # Table 2
        ("densenet_bc_100_12", 100, 12, True, 0.8),
        ("densenet_bc_250_24", 250, 24, True, 15.3),
    ],
)
def test_cifar_counts_follow_from_the_architecture(name, depth, k, bc, published_millions):
    # Sec. 3: 3 dense blocks; L = 3n + 4 (or 6n + 4 with the two-conv -B layers).
    n = (depth - 4) // (6 if bc else 3)
    derived = densenet_params(
        k, (n, n, n), 2 * k if bc else 16, bottleneck=bc, theta=0.5 if bc else 1.0,
        imagenet_stem=False, classes=10,
    )
    assert cnnlab.model_info(name).params == derived
    assert count_params(build_on_meta(name)) == derived
    assert round(derived / 1e6, 1) == published_millions


@pytest.mark.parametrize(
    ("name", "k", "blocks", "stem"),
    [  # Table 1; the ImageNet DenseNets are -BC with theta = 0.5 and a 2k-channel stem
        ("densenet121", 32, (6, 12, 24, 16), 64),
        ("densenet169", 32, (6, 12, 32, 32), 64),
        ("densenet201", 32, (6, 12, 48, 32), 64),
        ("densenet161", 48, (6, 12, 36, 24), 96),
    ],
)
def test_imagenet_counts_follow_from_table_1(name, k, blocks, stem):
    derived = densenet_params(
        k, blocks, stem, bottleneck=True, theta=0.5, imagenet_stem=True, classes=1000
    )
    assert cnnlab.model_info(name).params == derived
    assert stem == 2 * k


def test_densenet121_count_is_the_published_one():
    assert cnnlab.model_info("densenet121").params == 7_978_856


def test_densenet121_stage_shapes_follow_table_1():
    # Table 1 at 224: blocks at 56, 28, 14, 7; channels 64 + 6*32 = 256, 128 + 12*32 = 512,
    # 256 + 24*32 = 1024, 512 + 16*32 = 1024.
    backbone = build_on_meta("densenet121", features_only=True)
    maps = backbone(torch.empty(1, 3, 224, 224, device="meta"))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (256, 56, 56), (512, 28, 28), (1024, 14, 14), (1024, 7, 7),
    ]


def test_cifar_stage_shapes_follow_sec_3():
    # "The feature-map sizes in the three dense blocks are 32x32, 16x16, and 8x8."
    # DenseNet-BC-100: 24 + 16*12 = 216 -> 108; 108 + 192 = 300 -> 150; 150 + 192 = 342.
    backbone = build_on_meta("densenet_bc_100_12", features_only=True)
    maps = backbone(torch.empty(1, 3, 32, 32, device="meta"))
    assert [tuple(m.shape[1:]) for m in maps] == [(216, 32, 32), (300, 16, 16), (342, 8, 8)]


def test_cifar_depth_must_give_equal_blocks():
    with pytest.raises(ValueError, match="depth 41"):
        _cifar_config(41, 12, bc=True)


def test_memory_efficient_layers_give_the_same_outputs_and_gradients():
    cfg = _cifar_config(16, 4, bc=True)  # 2 layers per block
    torch.manual_seed(0)
    plain = DenseNet(cfg, num_classes=3).train()
    ckpt = DenseNet(cfg, num_classes=3, memory_efficient=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16)
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        grads.append((out.detach(), model.features.conv0.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_drop_rate_is_active_only_in_training():
    model = cnnlab.create_model("densenet40_12", drop_rate=0.2)
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_imagenet_densenets_name_the_resnet_recipe_and_cifar_ones_their_own():
    assert cnnlab.model_info("densenet121").recipe == "he2016_imagenet"
    assert cnnlab.model_info("densenet_bc_100_12").recipe == "huang2017_cifar"
    assert cnnlab.model_info("densenet_bc_100_12").dataset == "cifar10"


@pytest.mark.parametrize(("name", "side"), [("densenet121", 29), ("densenet_bc_100_12", 4)])
def test_min_input_size_is_the_smallest_the_layers_take(name, side):
    # Each transition halves the map with a 2x2 pool, which needs at least 2x2 input:
    # CIFAR: 4 -> 2 -> 1; ImageNet: 29 -> 15 (conv) -> 8 (pool) -> 4 -> 2 -> 1.
    model = build_on_meta(name).eval()
    assert model.min_input_size == (side, side)
    model.forward_features(torch.empty(1, 3, side, side, device="meta"))
    with pytest.raises(RuntimeError):
        model.forward_features(torch.empty(1, 3, side - 1, side - 1, device="meta"))


def test_non_bc_densenet_keeps_channels_through_transitions():
    # DenseNet (L = 40, k = 12): 12 single-conv layers per block, theta = 1:
    # 16 + 12*12 = 160, 160 + 144 = 304, 304 + 144 = 448; one 3x3 conv per layer.
    model = build_on_meta("densenet40_12")
    layer = model.features.denseblock1.denselayer1
    assert layer.conv1.kernel_size == (3, 3) and not hasattr(layer, "conv2")
    assert model.features.transition1.conv.out_channels == 160
    maps = build_on_meta("densenet40_12", features_only=True)(
        torch.empty(1, 3, 32, 32, device="meta")
    )
    assert [m.shape[1] for m in maps] == [160, 304, 448]


def densenet_macs(growth: int, blocks: tuple[int, ...], stem: int) -> int:
    """Conv and FC multiply-adds of an ImageNet DenseNet-BC at 224x224 (Table 1): the 7x7/2
    stem at 112, the blocks at 56, 28, 14, 7; each -B layer a 1x1 c->4k and a 3x3 4k->k,
    each transition a 1x1 c->c/2 at its block's resolution before the 2x2 pool."""
    total, side, c = 112 * 112 * 3 * stem * 49, 56, stem
    for i, n in enumerate(blocks):
        for _ in range(n):
            total += side * side * (c * 4 * growth + 9 * 4 * growth * growth)
            c += growth
        if i < len(blocks) - 1:
            total += side * side * c * (c // 2)
            c, side = c // 2, side // 2
    return total + c * 1000


@pytest.mark.parametrize(
    ("name", "k", "blocks", "stem"),
    [("densenet121", 32, (6, 12, 24, 16), 64), ("densenet169", 32, (6, 12, 32, 32), 64),
     ("densenet201", 32, (6, 12, 48, 32), 64), ("densenet161", 48, (6, 12, 36, 24), 96)],
)
def test_imagenet_macs_follow_from_table_1(name, k, blocks, stem):
    derived = densenet_macs(k, blocks, stem)
    # torchvision publishes GFLOPs (= GMACs) to three decimals.
    assert round(derived, -6) == cnnlab.model_info(name).macs
    model = build_on_meta(name).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() / 2 == derived
