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
from zoo_helpers import heavy_param

RECORDED = sorted(p.stem for p in (DATA / "torchvision_logits").glob("*.json"))


def test_every_torchvision_compatible_model_has_recorded_logits():
    expected = sorted(n for n in cnnlab.list_models() if cnnlab.model_info(n).torchvision)
    assert RECORDED == expected


@pytest.mark.parametrize("name", [heavy_param(n) for n in RECORDED])
def test_outputs_equal_torchvision_for_the_same_weights(name):
    recorded = json.loads((DATA / "torchvision_logits" / f"{name}.json").read_text())
    # "build": options both sides were built with (a ViT for a small grid of patches)
    kwargs = {**torchvision_reference()[name]["constructor_kwargs"], **recorded.get("build", {})}
    # Built on meta, without the init that the loaded weights replace (645M values for
    # RegNetY-128GF). Seeding overwrites only floating-point entries, so a model whose other
    # buffers carry values (Swin's relative position index; buffers outside the state_dict)
    # is built for real; BN's num_batches_tracked counters are not read in eval mode.
    with torch.device("meta"):
        model = cnnlab.create_model(name, **kwargs).eval()
    state = model.state_dict()
    kept = [k for k, v in state.items()
            if not v.is_floating_point() and not k.endswith("num_batches_tracked")]
    if kept or any(n not in state for n, _ in model.named_buffers()):
        model = cnnlab.create_model(name, **kwargs).eval()
    else:
        model = model.to_empty(device="cpu")
    model.load_state_dict(deterministic_state_dict(model.state_dict()), strict=True)
    size = recorded["input_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    expected = torch.tensor(recorded["logits"])
    torch.testing.assert_close(out[:, :10], expected, rtol=1e-4, atol=1e-4)
