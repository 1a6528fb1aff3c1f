"""The lectures' formulas, by hand-derived tables and against what PyTorch really does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.analysis import formulas


@pytest.mark.parametrize(
    ("n", "k", "s", "p", "d", "expected", "why"),
    [
        (227, 11, 4, 0, 1, 55, "AlexNet conv1: (227-11)/4+1"),
        (224, 3, 1, 1, 1, 224, "VGG 'same' 3x3: (224+2-3)/1+1"),
        (7, 3, 1, 0, 1, 5, "lecture 7x7 input, 3x3 filter, stride 1"),
        (7, 3, 2, 0, 1, 3, "lecture stride 2: (7-3)/2+1"),
        (7, 3, 3, 0, 1, 2, "lecture stride 3 does not fit: floor(4/3)+1"),
        (32, 5, 1, 0, 1, 28, "LeNet C1: 32-5+1"),
        (28, 5, 1, 0, 1, 24, "lecture LeNet conv1 on 28x28"),
        (224, 7, 2, 3, 1, 112, "ResNet stem: floor((224+6-7)/2)+1"),
        (10, 3, 1, 0, 2, 6, "dilation 2 makes the 3x3 span 5: 10-5+1"),
        (10, 3, 1, 2, 2, 10, "dilated 'same': padding = dilation"),
        (1, 1, 1, 0, 1, 1, "1x1 on 1x1"),
    ],
)
def test_conv_output_size_table(n, k, s, p, d, expected, why):
    assert formulas.conv_output_size(n, k, s, p, d) == expected, why


@pytest.mark.parametrize(
    ("args", "match"),
    [((3, 5), "smaller than 1"), ((0, 3), "n must be"), ((5, 3, 0), "s must be"),
     ((5, 3, 1, -1), "padding"), ((5, 3, 1, 0, 0), "d must be"), ((9, 5, 1, 0, 3), "dilation 3")],
)
def test_conv_output_size_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        formulas.conv_output_size(*args)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), p=st.integers(0, 3),
       d=st.integers(1, 3))
def test_conv_output_size_equals_real_conv2d(n, k, s, p, d):
    x = torch.empty(1, 1, n, n, device="meta")
    w = torch.empty(1, 1, k, k, device="meta")
    try:
        real = F.conv2d(x, w, stride=s, padding=p, dilation=d).shape[-1]
    except RuntimeError:
        real = None
    if real is None or real < 1:
        with pytest.raises(ValueError):
            formulas.conv_output_size(n, k, s, p, d)
    else:
        assert formulas.conv_output_size(n, k, s, p, d) == real


@pytest.mark.parametrize(
    ("n", "k", "s", "p", "ceil", "expected"),
    [(55, 3, 2, 0, False, 27), (224, 2, None, 0, False, 112), (13, 3, 2, 0, False, 6),
     (112, 3, 2, 0, True, 56), (56, 3, 2, 0, True, 28), (56, 3, 2, 0, False, 27),
     (14, 3, 2, 1, True, 8), (14, 3, 2, 1, False, 7)],
)
def test_pool_output_size_table(n, k, s, p, ceil, expected):
    assert formulas.pool_output_size(n, k, s, p, ceil_mode=ceil) == expected


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 5), s=st.integers(1, 4), p=st.integers(0, 3),
       ceil=st.booleans())
def test_pool_output_size_equals_real_max_pool(n, k, s, p, ceil):
    x = torch.zeros(1, 1, n, n)
    try:
        real = F.max_pool2d(x, k, s, p, ceil_mode=ceil).shape[-1]
    except RuntimeError:
        real = None
    if real is None or real < 1:
        with pytest.raises(ValueError):
            formulas.pool_output_size(n, k, s, p, ceil_mode=ceil)
    else:
        assert formulas.pool_output_size(n, k, s, p, ceil_mode=ceil) == real


@pytest.mark.parametrize(
    ("args", "kwargs", "expected", "why"),
    [
        ((3, 96, 11), {}, 11 * 11 * 3 * 96 + 96, "AlexNet conv1: 34,944"),
        ((3, 64, 3), {}, 3 * 3 * 3 * 64 + 64, "VGG conv1_1: 1,792"),
        ((512, 512, 3), {}, 9 * 512 * 512 + 512, "VGG conv5: 2,359,808"),
        ((32, 32, 3), {"groups": 32}, 9 * 32 + 32, "depthwise 3x3"),
        ((64, 128, 1), {"bias": False}, 64 * 128, "1x1 projection without bias"),
        ((4, 8, (1, 7)), {}, 7 * 4 * 8 + 8, "Inception v3 1x7"),
    ],
)
def test_conv_params_table(args, kwargs, expected, why):
    assert formulas.conv_params(*args, **kwargs) == expected, why


def test_conv_params_rejects_bad_groups():
    with pytest.raises(ValueError, match="groups"):
        formulas.conv_params(6, 8, 3, groups=4)


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((3, 96, 11, 55), {}, 55 * 55 * 96 * 11 * 11 * 3),  # AlexNet conv1: 105,415,200
        ((3, 64, 3, 224), {}, 224 * 224 * 64 * 27),  # VGG conv1_1: 86,704,128
        ((32, 32, 3, 112), {"groups": 32}, 112 * 112 * 32 * 9),  # depthwise
        ((256, 64, 1, 28, 14), {}, 28 * 14 * 64 * 256),  # non-square output
    ],
)
def test_conv_macs_table(args, kwargs, expected):
    assert formulas.conv_macs(*args, **kwargs) == expected


@pytest.mark.parametrize(("k", "n", "expected"), [(3, 1, 3), (3, 2, 5), (3, 3, 7), (5, 2, 9),
                                                  (7, 1, 7)])
def test_stacked_receptive_field(k, n, expected):
    assert formulas.stacked_receptive_field(k, n) == expected


@pytest.mark.parametrize(("k", "p", "expected"), [(5, 2, 6), (3, 2, 4), (1, 1, 1), (3, 3, 5)])
def test_conv_pool_receptive_field_is_p_plus_k_minus_1(k, p, expected):
    assert formulas.conv_pool_receptive_field(k, p) == expected


def test_receptive_field_chain_alexnet():
    # torchvision AlexNet's features: (k, s, p) per conv/pool.
    chain = [(11, 4, 2), (3, 2), (5, 1, 2), (3, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 2)]
    rf = formulas.receptive_field(chain)
    # size: 1 +10·1 +2·4 +4·8 +2·16 +2·16 +2·16 +2·16 = 195; jump 4·2·2·2 = 32;
    # start: (10/2-2)·1 + 1·4 + 0·8 + 1·8 + 0 + 0 + 0 + 1·16 = 31
    assert (rf.size, rf.jump, rf.start) == (195, 32, 31.0)


def test_receptive_field_with_dilation():
    # Two 3x3 convolutions with dilation 2: each adds (3-1)·2 = 4.
    assert formulas.receptive_field([(3, 1, 2, 2), (3, 1, 2, 2)]).size == 9


def test_receptive_field_rejects_bad_layer():
    with pytest.raises(ValueError, match="each layer"):
        formulas.receptive_field([(3,)])
