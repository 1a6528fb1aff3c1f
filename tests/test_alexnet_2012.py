"""AlexNet as published (Krizhevsky et al. 2012): counts, map sizes, LRN, towers, init."""

from __future__ import annotations

import pytest
import torch

import cnnlab
from cnnlab.models.alexnet import paper_lrn

from zoo_helpers import build_on_meta, count_params


def conv_params(c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    return c_out * (c_in // groups * k * k + 1)


def fc_params(n_in: int, n_out: int) -> int:
    return n_out * (n_in + 1)


def conv_out(size: int, k: int, stride: int = 1, pad: int = 0) -> int:
    return (size + 2 * pad - k) // stride + 1


# Sec. 3.5 / Fig. 2: conv2, conv4, conv5 see only their own GPU's half of the maps.
PAPER_LAYERS = {
    "features.conv1": conv_params(3, 96, 11),  # 34,944
    "features.conv2": conv_params(96, 256, 5, groups=2),  # 307,456
    "features.conv3": conv_params(256, 384, 3),  # 885,120
    "features.conv4": conv_params(384, 384, 3, groups=2),  # 663,936
    "features.conv5": conv_params(384, 256, 3, groups=2),  # 442,624
    "classifier.fc6": fc_params(256 * 6 * 6, 4096),  # 37,752,832
    "classifier.fc7": fc_params(4096, 4096),  # 16,781,312
    "classifier.fc8": fc_params(4096, 1000),  # 4,097,000
}


def test_parameters_per_layer_and_total():
    assert PAPER_LAYERS["features.conv1"] == 34_944
    assert sum(PAPER_LAYERS.values()) == 60_965_224
    model = build_on_meta("alexnet_2012")
    modules = dict(model.named_modules())
    assert {n: count_params(modules[n]) for n in PAPER_LAYERS} == PAPER_LAYERS
    assert count_params(model) == 60_965_224


def test_map_sizes_at_227():
    # conv1 11x11/4 at 227: (227-11)/4+1 = 55; pools 3/2: 55->27, 27->13, 13->6.
    s1 = conv_out(227, 11, 4)
    p1 = conv_out(s1, 3, 2)
    p2 = conv_out(conv_out(p1, 5, 1, 2), 3, 2)
    p5 = conv_out(p2, 3, 2)
    assert (s1, p1, p2, p5) == (55, 27, 13, 6)
    model = build_on_meta("alexnet_2012").eval()
    sizes = {}
    for name in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv5", "pool5"):
        getattr(model.features, name).register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, tuple(out.shape[1:])))
    model(torch.empty(1, 3, 227, 227, device="meta"))
    assert sizes == {
        "conv1": (96, s1, s1), "pool1": (96, p1, p1), "conv2": (256, p1, p1),
        "pool2": (256, p2, p2), "conv3": (384, p2, p2), "conv5": (256, p2, p2),
        "pool5": (256, p5, p5),
    }


def test_lrn_is_the_papers_formula():
    # b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, k=2, n=5, alpha=1e-4, beta=0.75
    torch.manual_seed(0)
    a = torch.randn(2, 12, 3, 3) * 30  # large enough that the normalisation matters
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    expected = torch.empty_like(a)
    for i in range(a.shape[1]):
        lo, hi = max(0, i - n // 2), min(a.shape[1] - 1, i + n // 2)
        expected[:, i] = a[:, i] / (k + alpha * a[:, lo:hi + 1].pow(2).sum(1)) ** beta
    torch.testing.assert_close(paper_lrn()(a), expected)
    assert not torch.allclose(expected, a / k**beta, rtol=1e-2)  # the test can tell


def test_order_relu_lrn_pool_and_dropout_after_hidden_fc():
    model = cnnlab.create_model("alexnet_2012")
    names = list(dict(model.features.named_children()))
    assert names[:8] == ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2"]
    assert isinstance(model.features.norm1, torch.nn.LocalResponseNorm)
    pools = [m for m in model.features if isinstance(m, torch.nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3  # overlapping
    assert list(dict(model.classifier.named_children())) == [
        "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    assert model.classifier.drop6.p == model.classifier.drop7.p == 0.5


def test_towers_do_not_mix_in_conv2():
    conv2 = cnnlab.create_model("alexnet_2012").features.conv2
    x = torch.randn(1, 96, 9, 9)
    bumped = x.clone()
    bumped[:, 48:] += 1.0  # the second GPU's maps only
    diff = (conv2(bumped) - conv2(x)).abs().flatten(2).amax(-1)[0]
    assert (diff[:128] == 0).all() and (diff[128:] > 0).all()


def test_init_gaussian_0_01_and_bias_one_in_conv2_4_5_and_hidden_fc():
    torch.manual_seed(0)
    model = cnnlab.create_model("alexnet_2012")
    f, c = model.features, model.classifier
    for layer in (f.conv1, f.conv3, c.fc8):
        assert (layer.bias == 0).all()
    for layer in (f.conv2, f.conv4, f.conv5, c.fc6, c.fc7):
        assert (layer.bias == 1).all()
    assert abs(c.fc6.weight.std().item() - 0.01) < 2e-4


def test_real_forward_at_227_gives_1000_logits():
    model = cnnlab.create_model("alexnet_2012").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 227, 227))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_declared_paper_errors():
    info = cnnlab.model_info("alexnet_2012")
    assert (info.top1_error, info.top5_error, info.input_size) == (40.7, 18.2, (3, 227, 227))


def test_takes_exactly_227():
    model = build_on_meta("alexnet_2012")
    with pytest.raises(ValueError, match=r"alexnet_2012.*3x227x227.*224, 224"):
        model(torch.empty(1, 3, 224, 224, device="meta"))


def test_neuron_counts_of_fig_2_caption():
    # Fig. 2: "253,440-186,624-64,896-64,896-43,264-4096-4096-1000" neurons per layer. All but
    # the first are the conv outputs 27^2*256, 13^2*384, 13^2*384, 13^2*256; conv1 at 227 has
    # 55^2*96 = 290,400 (253,440 matches no square map of 96 channels: the caption's known
    # slip). Total: the abstract's "650,000 neurons".
    model = build_on_meta("alexnet_2012").eval()
    counts = {}
    names = ("relu1", "relu2", "relu3", "relu4", "relu5")
    for name in names:
        getattr(model.features, name).register_forward_hook(
            lambda _m, _i, out, name=name: counts.__setitem__(name, out[0].numel()))
    model(torch.empty(1, 3, 227, 227, device="meta"))
    assert [counts[n] for n in names[1:]] == [186_624, 64_896, 64_896, 43_264]
    assert counts["relu1"] == 55 * 55 * 96 == 290_400
    assert all(253_440 != 96 * s * s for s in range(1, 100))
    total = sum(counts.values()) + 4096 + 4096 + 1000
    assert total == 290_400 + 186_624 + 2 * 64_896 + 43_264 + 2 * 4096 + 1000 == 659_272
    assert abs(total - 650_000) / 650_000 < 0.02
