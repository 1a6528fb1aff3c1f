"""Pins for the data pipeline's constants and rules (a mutation audit found them loose):
every crop offset is reachable, ImageNet's statistics in RGB order, the centre-crop rounding
rule, and PCA lighting along the eigenvector columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.data import transforms as T
from cnnlab.train import run


@pytest.mark.parametrize("padding", [0, 2])
def test_random_crop_reaches_every_offset(padding):
    h = w = 4 if padding else 6
    size = 4 if padding else 2
    x = torch.arange(1, h * w + 1, dtype=torch.uint8).reshape(1, 1, h, w)
    padded = np.pad(x[0, 0].numpy(), padding)
    span = padded.shape[0] - size + 1  # offsets 0..span-1 on each axis
    windows = {padded[t:t + size, l:l + size].tobytes(): (t, l)
               for t in range(span) for l in range(span)}
    assert len(windows) == span * span  # every window is distinct
    g = torch.Generator().manual_seed(0)
    out = T.random_crop(x.expand(2000, 1, h, w), size, padding=padding, generator=g)
    seen = {windows[o[0].numpy().tobytes()] for o in out}
    assert seen == set(windows.values())  # all (span)^2 offsets, the last row/column too


def test_imagenet_mean_std_are_rgb():
    # retyped from torchvision's ImageNet weights' preprocessing: R, G, B
    assert T.IMAGENET_MEAN == pytest.approx((0.485, 0.456, 0.406), abs=0)
    assert T.IMAGENET_STD == pytest.approx((0.229, 0.224, 0.225), abs=0)
    assert run.IMAGENET_MEAN is T.IMAGENET_MEAN and run.IMAGENET_STD is T.IMAGENET_STD


@pytest.mark.parametrize("h, crop, top", [
    (5, 2, 1),  # margin 3: floor(1.5) = 1 (torchvision's round(1.5) = 2); the extra row: bottom
    (5, 4, 0),  # margin 1: 0
    (7, 2, 2),  # margin 5: floor(2.5) = 2
    (9, 2, 3),  # margin 7: floor(3.5) = 3 (torchvision: 4)
    (6, 2, 2),  # even margin 4: 2
])
def test_center_crop_odd_margins_floor_to_the_top_left(h, crop, top):
    x = torch.arange(h * h, dtype=torch.float32).reshape(1, 1, h, h)
    out = T.center_crop(x, crop)
    assert torch.equal(out, x[:, :, top:top + crop, top:top + crop])
    tall = torch.arange(h * 3, dtype=torch.float32).reshape(1, 1, h, 3)
    assert torch.equal(T.center_crop(tall, (crop, 1)), tall[:, :, top:top + crop, 1:2])


def test_pca_lighting_shifts_along_eigenvector_columns():
    # a non-symmetric eigenvector matrix: column j (the j-th eigenvector) differs from row j
    vecs = torch.tensor([[0.6, 0.0, 0.8], [0.0, 1.0, 0.0], [-0.8, 0.0, 0.6]]).T.contiguous()
    assert not torch.allclose(vecs, vecs.T)
    x = torch.zeros(4000, 3, 2, 2)
    for j in range(3):
        vals = torch.zeros(3)
        vals[j] = 2.0
        out = T.pca_lighting(x, vals, vecs, std=0.1, generator=torch.Generator().manual_seed(j))
        shift = out[:, :, 0, 0].double()  # per image: a_j * l_j * p_j
        assert torch.equal(out, shift[:, :, None, None].expand_as(out).float())
        coeff = shift @ vecs[:, j].double()  # the part along column j ...
        residual = shift - coeff[:, None] * vecs[:, j].double()
        assert residual.abs().max() < 1e-6  # ... is all of it
        assert float(coeff.std()) == pytest.approx(0.1 * 2.0, rel=0.1)  # a ~ N(0, 0.1), l = 2
