"""Same weights, same outputs as torchvision.

tests/data/torchvision_logits/ holds torchvision's own logits for seeded weights
(scripts/make_torchvision_logits.py); here cnnlab's model gets the same weights and must agree.
"""

from __future__ import annotations

import json

import pytest
import torch

import cnnlab

from conftest import DATA, torchvision_reference
from seeded_weights import deterministic_state_dict

RECORDED = sorted(p.stem for p in (DATA / "torchvision_logits").glob("*.json"))


def test_every_torchvision_compatible_model_has_recorded_logits():
    expected = sorted(n for n in cnnlab.list_models() if cnnlab.model_info(n).torchvision)
    assert RECORDED == expected


# vit_h_14's 632M parameters are materialised twice (built, then seeded): minutes on two
# loaded cores, so it is marked slow (-m "not slow" leaves it out).
SLOW = {"vit_h_14"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in RECORDED])
def test_outputs_equal_torchvision_for_the_same_weights(name):
    recorded = json.loads((DATA / "torchvision_logits" / f"{name}.json").read_text())
    # "build": options both sides were built with (a ViT for a small grid of patches)
    kwargs = {**torchvision_reference()[name]["constructor_kwargs"], **recorded.get("build", {})}
    model = cnnlab.create_model(name, **kwargs).eval()
    model.load_state_dict(deterministic_state_dict(model.state_dict()), strict=True)
    size = recorded["input_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    expected = torch.tensor(recorded["logits"])
    torch.testing.assert_close(out[:, :10], expected, rtol=1e-4, atol=1e-4)
