"""Deformable convolution (Dai et al. 2017; DCNv2, Zhu et al. 2019) against independent
references: F.conv2d at zero and integer offsets, and a per-pixel loop written from the
definition (bilinear sampling, zero outside the image) for values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.layers import DeformConv2d, deform_conv2d

D = torch.float64


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _offsets(n, groups, kh, kw, ho, wo, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 2 * groups * kh * kw, ho, wo, generator=g, dtype=D)


# --- the reference: one output value at a time, from the paper's Eq. (2) ------------------

def _pixel(x, c, y, xx):
    """x[c] at real position (y, xx), bilinear over the four integer neighbours, each
    neighbour outside the image reading 0."""
    h, w = x.shape[-2:]
    total = x.new_zeros(())
    y0, x0 = math.floor(y.item()), math.floor(xx.item())
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= yi < h and 0 <= xi < w:
                total = total + (1 - (y - yi).abs()) * (1 - (xx - xi).abs()) * x[c, yi, xi]
    return total


def reference(x, offset, weight, bias, stride, padding, dilation, mask=None):
    n, c, h, w = x.shape
    c_out, cg, kh, kw = weight.shape
    groups = c // cg
    og = offset.shape[1] // (2 * kh * kw)
    ho, wo = offset.shape[-2:]
    out = []
    for b in range(n):
        for o in range(c_out):
            g = o // (c_out // groups)
            for oy in range(ho):
                for ox in range(wo):
                    acc = bias[o].clone() if bias is not None else x.new_zeros(())
                    for ci in range(cg):
                        cin = g * cg + ci
                        og_i = cin // (c // og)
                        for i in range(kh):
                            for j in range(kw):
                                k = og_i * kh * kw + i * kw + j
                                y = oy * stride - padding + i * dilation + offset[b, 2 * k, oy, ox]
                                xx = ox * stride - padding + j * dilation \
                                    + offset[b, 2 * k + 1, oy, ox]
                                v = _pixel(x[b], cin, y, xx)
                                if mask is not None:
                                    v = v * mask[b, k, oy, ox]
                                acc = acc + weight[o, ci, i, j] * v
                    out.append(acc)
    return torch.stack(out).view(n, c_out, ho, wo)


# stride, padding, dilation, groups, offset_groups, kernel (kh, kw)
CONFIGS = [
    (1, 0, 1, 1, 1, (3, 3)),
    (1, 1, 1, 1, 1, (3, 3)),
    (2, 1, 1, 1, 1, (3, 3)),
    (1, 2, 2, 1, 1, (3, 3)),
    (2, 0, 1, 2, 1, (2, 3)),
    (1, 1, 1, 4, 2, (3, 1)),
    (3, 2, 2, 2, 4, (3, 2)),
    (1, 0, 1, 1, 2, (1, 1)),
]


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups", "og", "kernel"), CONFIGS)
def test_zero_offsets_are_the_regular_convolution(stride, padding, dilation, groups, og, kernel):
    torch.manual_seed(0)
    kh, kw = kernel
    x = torch.randn(2, 8, 9, 11, dtype=D)
    weight = torch.randn(6 if groups != 4 else 8, 8 // groups, kh, kw, dtype=D)
    bias = torch.randn(weight.shape[0], dtype=D)
    ho, wo = _out_size(9, kh, stride, padding, dilation), _out_size(11, kw, stride, padding,
                                                                     dilation)
    offset = torch.zeros(2, 2 * og * kh * kw, ho, wo, dtype=D)
    expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    got = deform_conv2d(x, offset, weight, bias, stride, padding, dilation)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    ones = torch.ones(2, og * kh * kw, ho, wo, dtype=D)
    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, stride, padding, dilation,
                                             ones), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups", "og", "kernel"),
                         [CONFIGS[1], CONFIGS[4], CONFIGS[6]])
def test_random_offsets_match_the_per_pixel_loop(stride, padding, dilation, groups, og, kernel):
    torch.manual_seed(1)
    kh, kw = kernel
    x = torch.randn(2, 4, 5, 6, dtype=D)
    weight = torch.randn(4, 4 // groups, kh, kw, dtype=D)
    bias = torch.randn(4, dtype=D)
    ho, wo = _out_size(5, kh, stride, padding, dilation), _out_size(6, kw, stride, padding,
                                                                     dilation)
    og = min(og, 4)
    offset = _offsets(2, og, kh, kw, ho, wo, scale=2.0)  # many samples leave the image
    mask = torch.rand(2, og * kh * kw, ho, wo, dtype=D)
    for m in (None, mask):
        got = deform_conv2d(x, offset, weight, bias, stride, padding, dilation, m)
        want = reference(x, offset, weight, bias, stride, padding, dilation, m)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_gradients_match_the_per_pixel_loop_and_gradcheck():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 4, 4, dtype=D, requires_grad=True)
    weight = torch.randn(2, 1, 2, 2, dtype=D, requires_grad=True)
    bias = torch.randn(2, dtype=D, requires_grad=True)
    offset = _offsets(1, 2, 2, 2, 5, 5, scale=1.5).requires_grad_()
    mask = torch.rand(1, 2 * 2 * 2, 5, 5, dtype=D, requires_grad=True)
    inputs = (x, offset, weight, bias, mask)

    def ours(x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask)

    def theirs(x, offset, weight, bias, mask):
        return reference(x, offset, weight, bias, 1, 1, 1, mask)

    up = torch.randn(1, 2, 5, 5, dtype=D)
    g_ours = torch.autograd.grad((ours(*inputs) * up).sum(), inputs)
    g_ref = torch.autograd.grad((theirs(*inputs) * up).sum(), inputs)
    for a, b in zip(g_ours, g_ref, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(ours, inputs)


def test_integer_offsets_are_a_shifted_convolution():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 7, 8, dtype=D)
    weight = torch.randn(5, 3, 3, 3, dtype=D)
    dy, dx = 1, -2
    offset = torch.zeros(2, 18, 7, 8, dtype=D)
    offset[:, 0::2], offset[:, 1::2] = dy, dx
    # Every tap moved by (dy, dx) is the convolution of the zero-extended input, read
    # (dy, dx) further on: compute it with a wider padding m and crop it by hand.
    m = 3
    full = F.conv2d(x, weight, padding=1 + m)  # unit (m, m) is the padding-1 output's (0, 0)
    expected = full[:, :, m + dy:m + dy + 7, m + dx:m + dx + 8]
    torch.testing.assert_close(deform_conv2d(x, offset, weight, padding=1), expected,
                               rtol=0, atol=1e-12)


def test_samples_outside_the_image_are_zero():
    x = torch.randn(1, 2, 4, 4, dtype=D)
    weight = torch.randn(3, 2, 3, 3, dtype=D)
    bias = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    for far in (4.0, -4.0, 100.0):  # every tap at least one pixel beyond the border
        offset = torch.full((1, 18, 2, 2), far, dtype=D)
        out = deform_conv2d(x, offset, weight, bias)
        assert torch.equal(out, bias.view(1, 3, 1, 1).expand(1, 3, 2, 2))
    # Half a pixel beyond the last row: only the inside corner counts, with weight 1/2.
    offset = torch.zeros(1, 2, 4, 4, dtype=D)
    offset[0, 0, 0, 0] = 3.5  # dy of output (0, 0): sample row 3.5 of a 4-row image
    w1 = torch.ones(1, 1, 1, 1, dtype=D)
    got = deform_conv2d(x[:, :1], offset, w1)
    assert got[0, 0, 0, 0].item() == pytest.approx(0.5 * x[0, 0, 3, 0].item(), abs=1e-15)


def test_module_starts_as_the_regular_convolution():
    torch.manual_seed(4)
    x = torch.randn(2, 4, 6, 6)
    layer = DeformConv2d(4, 6, 3, stride=2, padding=1, groups=2, offset_groups=2)
    # in x out/groups x k x k + bias; offset conv 4 -> 2*2*9 = 36 with a 3x3 kernel and bias.
    assert sum(p.numel() for p in layer.parameters()) == 6 * 2 * 9 + 6 + 4 * 36 * 9 + 36
    assert torch.count_nonzero(layer.conv_offset.weight) == 0
    expected = F.conv2d(x, layer.weight, layer.bias, 2, 1, 1, 2)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    mod = DeformConv2d(4, 6, 3, padding=1, bias=False, modulated=True)
    assert mod.conv_offset.out_channels == 27  # 18 offsets + 9 masks
    # DCNv2 at initialisation: every mask is sigmoid(0) = 1/2.
    torch.testing.assert_close(mod(x), 0.5 * F.conv2d(x, mod.weight, padding=1), rtol=1e-5,
                               atol=1e-5)
    layer(x).sum().backward()
    assert layer.conv_offset.weight.grad.abs().sum() > 0  # offsets learn from zero


def test_bad_shapes_are_refused():
    x = torch.randn(1, 4, 5, 5)
    w = torch.randn(4, 4, 3, 3)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(x, torch.zeros(1, 17, 3, 3), w)
    with pytest.raises(ValueError, match="mask"):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), w, mask=torch.zeros(1, 8, 3, 3))
    with pytest.raises(ValueError, match="offset_groups"):
        DeformConv2d(4, 4, offset_groups=3)


def test_interchanges_with_torchvision_ops():
    ops = pytest.importorskip("torchvision.ops")
    torch.manual_seed(5)
    x = torch.randn(2, 4, 7, 6, dtype=D)
    weight = torch.randn(6, 2, 3, 2, dtype=D)
    bias = torch.randn(6, dtype=D)
    offset = _offsets(2, 2, 3, 2, 4, 3, scale=2.0)
    mask = torch.rand(2, 12, 4, 3, dtype=D)
    want = ops.deform_conv2d(x, offset, weight, bias, (2, 2), (1, 1), (1, 1), mask)
    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, 2, 1, 1, mask), want)
