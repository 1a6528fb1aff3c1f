"""Layer settings the papers state, retyped here: dropout 0.5 in AlexNet's, ZFNet's and VGG's
classifiers, NiN's mlpconv = [conv, ReLU] x 3, and GoogLeNet's LRN (the BVLC release)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import cnnlab

from zoo_helpers import build_on_meta

# Krizhevsky et al. 2012, Sec. 4.2: dropout "with probability 0.5" in the first two fully
# connected layers; Zeiler & Fergus 2014, Sec. 3: dropout rate 0.5 (layers 6 and 7);
# Simonyan & Zisserman 2015, Sec. 3.1: "dropout regularisation for the first two
# fully-connected layers (dropout ratio set to 0.5)".
FC_DROPOUT_MODELS = (["alexnet", "alexnet_2012", "zfnet", "zfnet_b"]
                     + [n for n in cnnlab.list_models("vgg*")])


@pytest.mark.parametrize("name", FC_DROPOUT_MODELS)
def test_the_two_hidden_fc_layers_have_dropout_one_half(name):
    classifier = build_on_meta(name).classifier
    layers = list(classifier.children())
    dropouts = [m for m in layers if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.5, 0.5]
    linears = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    # One dropout next to each hidden FC (on its input in torchvision's AlexNet, on its
    # output elsewhere), none after the last.
    drops = [i for i, m in enumerate(layers) if isinstance(m, nn.Dropout)]
    assert all(i < linears[-1] for i in drops)
    assert drops[0] < linears[1] < drops[1] + 2


@pytest.mark.parametrize("name", ["nin", "nin_cifar"])
def test_every_mlpconv_block_is_conv_relu_three_times(name):
    # Lin et al. 2014, Sec. 3.1 and eq. 2: each layer of the micro MLP is a ReLU layer;
    # the first is the k x k convolution, the other two are 1x1 ("cccp") convolutions.
    model = cnnlab.create_model(name)
    blocks = [m for n, m in model.features.named_children() if n.startswith("block")]
    assert len(blocks) == (4 if name == "nin" else 3)
    for block in blocks:
        kinds = [type(m) for m in block.children()]
        assert kinds == [nn.Conv2d, nn.ReLU] * 3
        convs = [m for m in block.children() if isinstance(m, nn.Conv2d)]
        assert [c.kernel_size for c in convs[1:]] == [(1, 1), (1, 1)]
        assert convs[0].kernel_size[0] > 1
        x = torch.randn(1, convs[0].in_channels, 12, 12)
        assert block(x).min() >= 0  # the block ends in its third ReLU


def test_googlenet_paper_lrn_is_the_bvlc_releases():
    # BVLC GoogLeNet deploy.prototxt: pool1/norm1 and conv2/norm2 with local_size 5,
    # alpha 0.0001, beta 0.75 (Caffe's k = 1; Caffe divides alpha by local_size, as torch).
    model = cnnlab.create_model("googlenet_paper")
    for lrn in (model.lrn1, model.lrn2):
        assert isinstance(lrn, nn.LocalResponseNorm)
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 1.0)
    # b_c = a_c / (1 + 1e-4 / 5 * sum over the 5 channels around c of a^2) ** 0.75
    a = torch.arange(1.0, 8.0).view(1, 7, 1, 1) * 30
    expected = torch.empty_like(a)
    for c in range(7):
        window = a[0, max(0, c - 2): c + 3, 0, 0]
        expected[0, c] = a[0, c] / (1 + 1e-4 / 5 * (window**2).sum()) ** 0.75
    torch.testing.assert_close(model.lrn1(a), expected)
    # Table 1: LRN after the first max-pool and after the 3x3 conv (before the second pool).
    order = []
    for name in ("maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2"):
        getattr(model, name).register_forward_hook(lambda *_a, n=name: order.append(n))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 64))
    assert order == ["maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2"]
    assert not any(isinstance(m, nn.LocalResponseNorm)
                   for m in cnnlab.create_model("googlenet").modules())
