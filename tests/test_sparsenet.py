"""SparseNet: the exponential-offset aggregation by hand, counts against the authors' table and
a hand derivation, stage shapes, MACs, and the DenseNet pieces it reuses."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.models.sparsenet import (
    SparseBlock,
    SparseNet,
    SparseNetConfig,
    _cifar_config,
    sparse_inputs,
    sparse_widths,
)

from zoo_helpers import build_on_meta, count_params

# Which earlier maps layer i receives (x_0 = the block input), typed from the rule
# "offsets 1, 2, 4, 8, ...": i-1, i-2, i-4, ... while the offset is at most i.
RECEIVES = {
    1: (0,), 2: (1, 0), 3: (2, 1), 4: (3, 2, 0), 5: (4, 3, 1), 6: (5, 4, 2), 7: (6, 5, 3),
    8: (7, 6, 4, 0), 9: (8, 7, 5, 1), 12: (11, 10, 8, 4), 13: (12, 11, 9, 5),
    16: (15, 14, 12, 8, 0), 17: (16, 15, 13, 9, 1), 33: (32, 31, 29, 25, 17, 1),
}


@pytest.mark.parametrize(("i", "maps"), RECEIVES.items())
def test_layer_i_receives_the_maps_at_exponential_offsets(i, maps):
    assert sparse_inputs(i) == maps


def test_layer_numbers_start_at_1():
    with pytest.raises(ValueError, match="from 1"):
        sparse_inputs(0)


def test_input_widths_of_a_block_by_hand():
    # x_0 has 48 maps, every layer adds k = 24: layer 1 takes x_0 (48); layer 2 x_1 + x_0 (72);
    # layer 3 x_2 + x_1 (48); layer 4 x_3 + x_2 + x_0 (96); the block's output, what a layer 5
    # would take, x_4 + x_3 + x_1 (72).
    assert sparse_widths(48, 24, 4) == [48, 72, 48, 96, 72]


def test_the_block_feeds_each_layer_exactly_those_maps():
    # Hooks record which tensors reach each layer, so the wiring is checked, not the rule.
    cfg = SparseNetConfig((2,), (5,), 3, bottleneck=False, compression=1.0, imagenet_stem=False)
    block = SparseBlock(5, 3, 2, cfg).eval()
    outputs: dict[int, torch.Tensor] = {}
    received: dict[int, list[torch.Tensor]] = {}
    for i, layer in enumerate(block.values(), start=1):
        layer.register_forward_pre_hook(lambda m, args, i=i: received.__setitem__(i, args[0]))
        layer.register_forward_hook(lambda m, args, out, i=i: outputs.__setitem__(i, out))
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        y = block(x)
    maps = {0: x, **outputs}
    for i in range(1, 6):
        assert [id(t) for t in received[i]] == [id(maps[j]) for j in RECEIVES[i]], i
    # the output: x_5, x_4, x_2 (6 is not a power of 2 away from x_0)
    torch.testing.assert_close(y, torch.cat([maps[5], maps[4], maps[2]], 1))


def bn(c: int) -> int:
    return 2 * c  # gamma and beta


def received_width(i: int, c0: int, k: int) -> int:
    """Channels layer i takes, counted with offsets 1, 2, 4, ... (written apart from the code)."""
    total, offset = 0, 1
    while offset <= i:
        total += c0 if offset == i else k
        offset *= 2
    return total


def sparsenet_params(
    ks: tuple[int, ...], blocks: tuple[int, ...], stem: int, *, bottleneck: bool, theta: float,
    imagenet_stem: bool, classes: int,
) -> int:
    """Sum of the layers: the stem (bias-free 3x3, or 7x7 + BN for ImageNet); per layer
    BN(c) + 3x3 c->k, or BN(c) + 1x1 c->4k + BN(4k) + 3x3 4k->k with the bottleneck; per
    transition BN(c) + 1x1 c->floor(theta c); the final BN and the FC layer."""
    total = 3 * stem * (49 if imagenet_stem else 9) + (bn(stem) if imagenet_stem else 0)
    c = stem
    for b, (k, n) in enumerate(zip(ks, blocks, strict=True)):
        for i in range(1, n + 1):
            cin = received_width(i, c, k)
            if bottleneck:
                total += bn(cin) + cin * 4 * k + bn(4 * k) + 9 * 4 * k * k
            else:
                total += bn(cin) + 9 * cin * k
        c = received_width(n + 1, c, k)
        if b < len(blocks) - 1:
            out = int(theta * c)
            total += bn(c) + c * out
            c = out
    return total + bn(c) + c * classes + classes


# The authors' CIFAR table (Lyken17/SparseNet README: the paper's CIFAR results), params in
# millions at 100 classes and the C100+ error; SparseNet-L-k, -BC with bottleneck and theta 0.5.
TABLE = [
    ("sparsenet40_24", 40, (24, 24, 24), False, 0.76, 24.65),
    ("sparsenet100_36", 100, (36, 36, 36), False, 5.65, 20.50),
    ("sparsenet100_16_32_64", 100, (16, 32, 64), False, 7.22, 19.49),
    ("sparsenet_bc_100_24", 100, (24, 24, 24), True, 1.46, 22.12),
    ("sparsenet_bc_100_16_32_64", 100, (16, 32, 64), True, 4.38, 19.71),
    ("sparsenet_bc_100_32_64_128", 100, (32, 64, 128), True, 16.72, 17.71),
]
# The two -BC nets with doubling growth rates, whose table count the layout does not give.
UNMATCHED = {"sparsenet_bc_100_16_32_64": 4.37, "sparsenet_bc_100_32_64_128": 17.34}


@pytest.mark.parametrize(("name", "depth", "ks", "bc", "millions", "c100_error"), TABLE)
def test_cifar_counts_follow_from_the_architecture(name, depth, ks, bc, millions, c100_error):
    n = (depth - 4) // (6 if bc else 3)
    derived = sparsenet_params(
        ks, (n, n, n), 2 * ks[0], bottleneck=bc, theta=0.5 if bc else 1.0,
        imagenet_stem=False, classes=100,
    )
    info = cnnlab.model_info(name)
    assert info.params == derived
    assert count_params(build_on_meta(name)) == derived
    assert info.top1_error == c100_error and info.dataset == "cifar100"
    if name in UNMATCHED:  # named as a deviation, with both numbers
        assert round(derived / 1e6, 2) == UNMATCHED[name]
        assert any(f"{UNMATCHED[name]:.2f}M" in d and f"{millions:.2f}M" in d
                   for d in info.deviations)
    else:
        assert round(derived / 1e6, 2) == millions


def test_one_block_count_by_hand():
    # SparseNet-40-24's first block: 12 single-conv layers, x_0 = the 48-map stem. Their inputs
    # (from RECEIVES): 48, 72, 48, 96, 72, 72, 72, 120, 96, 96, 96, 96 maps = 984 in all; each
    # layer is BN (2 per map) + a 3x3 conv to 24 maps (9 * 24 per map): 218 per input map.
    model = build_on_meta("sparsenet40_24")
    assert count_params(model.features.sparseblock1) == 218 * 984 == 214_512
    # ... and the block hands x_12, x_11, x_9, x_5 (4 x 24 = 96 maps) to the transition.
    assert model.features.transition1.conv.in_channels == 96


@pytest.mark.parametrize(
    ("name", "blocks"),
    [("sparsenet121", (6, 12, 24, 16)), ("sparsenet169", (6, 12, 32, 32)),
     ("sparsenet201", (6, 12, 48, 32))],
)
def test_imagenet_counts_follow_from_densenet_table_1_layouts(name, blocks):
    derived = sparsenet_params(
        (32,) * 4, blocks, 64, bottleneck=True, theta=0.5, imagenet_stem=True, classes=1000
    )
    assert cnnlab.model_info(name).params == derived
    assert count_params(build_on_meta(name)) == derived


def test_sparsenet121_count_is_well_under_densenet121s():
    # The paper's point: the same layout with sparse links has far fewer parameters
    # (DenseNet-121: 7,978,856).
    assert 3.2e6 < cnnlab.model_info("sparsenet121").params < 3.3e6


def test_imagenet_stage_shapes():
    # Blocks at 56, 28, 14, 7. Block outputs: 6 layers -> x_6, x_5, x_3 = 96; 12 layers ->
    # x_12, x_11, x_9, x_5 = 128; 24 -> x_24, x_23, x_21, x_17, x_9 = 160; 16 -> x_16, x_15,
    # x_13, x_9, x_1 = 160 (k = 32 each); transitions halve 96, 128, 160.
    backbone = build_on_meta("sparsenet121", features_only=True)
    maps = backbone(torch.empty(1, 3, 224, 224, device="meta"))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (96, 56, 56), (128, 28, 28), (160, 14, 14), (160, 7, 7),
    ]
    assert build_on_meta("sparsenet121").features.transition1.conv.out_channels == 48


def test_cifar_stage_shapes_with_doubling_growth_rates():
    # SparseNet-BC-100-{16,32,64}: 16 layers a block; the output is x_16, x_15, x_13, x_9, x_1:
    # 5k maps = 80, 160, 320 at 32, 16, 8; the stem has 2 x 16 = 32 maps.
    model = build_on_meta("sparsenet_bc_100_16_32_64")
    assert model.features.conv0.out_channels == 32
    maps = build_on_meta("sparsenet_bc_100_16_32_64", features_only=True)(
        torch.empty(1, 3, 32, 32, device="meta")
    )
    assert [tuple(m.shape[1:]) for m in maps] == [(80, 32, 32), (160, 16, 16), (320, 8, 8)]


def sparsenet121_macs() -> int:
    """Conv and FC multiply-adds at 224: the 7x7/2 stem at 112, blocks at 56, 28, 14, 7 (each
    layer a 1x1 c->128 and a 3x3 128->32), transitions' 1x1 c->c/2 before their pool."""
    total, side, c = 112 * 112 * 3 * 64 * 49, 56, 64
    for b, n in enumerate((6, 12, 24, 16)):
        for i in range(1, n + 1):
            total += side * side * (received_width(i, c, 32) * 128 + 9 * 128 * 32)
        c = received_width(n + 1, c, 32)
        if b < 3:
            total += side * side * c * (c // 2)
            c, side = c // 2, side // 2
    return total + c * 1000


def test_sparsenet121_macs_by_hand():
    model = build_on_meta("sparsenet121").eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    derived = sparsenet121_macs()
    assert counter.get_total_flops() / 2 == derived
    assert 1.0e9 < derived < 2.0e9  # DenseNet-121's is 2.83 G


def test_info_names_the_paper_and_the_recipes():
    info = cnnlab.model_info("sparsenet_bc_100_24")
    assert (info.year, info.title) == (2018, "Sparsely Aggregated Convolutional Networks")
    assert info.recipe == "huang2017_cifar" and info.num_classes == 100
    assert cnnlab.model_info("sparsenet121").recipe == "he2016_imagenet"
    assert cnnlab.model_info("sparsenet121").top1_error is None


def test_growth_rates_must_match_the_blocks():
    with pytest.raises(ValueError, match="one growth rate per block"):
        SparseNet(SparseNetConfig((12, 12), (2, 2, 2), 24, imagenet_stem=False))


def test_cifar_depth_must_give_equal_blocks():
    with pytest.raises(ValueError, match="depth 41"):
        _cifar_config(41, (12,) * 3, bc=True)


def test_memory_efficient_layers_give_the_same_outputs_and_gradients():
    cfg = _cifar_config(28, (4, 8, 8), bc=True)  # 4 layers per block
    torch.manual_seed(0)
    plain = SparseNet(cfg, num_classes=3).train()
    ckpt = SparseNet(cfg, num_classes=3, memory_efficient=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, 8)
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        grads.append((out.detach(), model.features.conv0.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
