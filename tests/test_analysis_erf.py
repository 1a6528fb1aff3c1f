"""Effective receptive field (Luo et al. 2016): hand-checkable cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from cnnlab.analysis import effective_receptive_field


def test_single_conv_erf_is_its_window():
    conv = nn.Conv2d(1, 1, 5, bias=False)
    nn.init.ones_(conv.weight)
    model = nn.Sequential(conv)
    erf = effective_receptive_field(model, "0", (1, 15, 15), samples=2)
    # Output 11x11, centre unit 5 sees input rows/cols 5..9: a flat 5x5 window of |w| = 1.
    expected = torch.zeros(15, 15)
    expected[5:10, 5:10] = 1.0
    assert torch.equal(erf.map, expected)
    assert erf.centre == (7.0, 7.0)
    # Distances from the centre: 0 (1 pixel), 1 (4), sqrt2 (4), 2 (4), sqrt5 (8), sqrt8 (4);
    # 95% of 25 pixels needs all 25, so the radius is sqrt(8).
    assert erf.radius == pytest.approx(math.sqrt(8), abs=0.01)


def test_deep_stack_concentrates_the_mass():
    # Ten 3x3 layers: theoretical field 21 (radius 10), but the gradient is the distribution
    # of a sum of 10 uniform {-1, 0, 1} steps per axis (Luo et al., Sec. 2.1): nearly
    # Gaussian with sigma^2 = 10 * 2/3, whose 95% disc has radius sigma * sqrt(2 ln 20).
    layers = [nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(10)]
    for layer in layers:
        nn.init.constant_(layer.weight, 1 / 9)
    model = nn.Sequential(*layers)
    erf = effective_receptive_field(model, "9", (1, 41, 41), samples=1)
    assert (erf.map > 0).sum() == 21 * 21
    sigma = math.sqrt(10 * 2 / 3)
    assert erf.radius == pytest.approx(sigma * math.sqrt(2 * math.log(20)), abs=0.3)
    assert erf.radius < 10


def test_unknown_layer_names_the_closest():
    with pytest.raises(ValueError, match="closest: features.5"):
        effective_receptive_field("alexnet", "features.55", (3, 95, 95), samples=1)


def test_layer_the_forward_never_runs_is_a_clear_error():
    class WithAux(nn.Module):  # like an auxiliary head, unused in eval mode
        def __init__(self) -> None:
            super().__init__()
            self.body, self.aux = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.aux(self.body(x)) if self.training else self.body(x)

    with pytest.raises(ValueError, match="'aux' is not run"):
        effective_receptive_field(WithAux(), "aux", (1, 9, 9), samples=1)
