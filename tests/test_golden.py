"""Seeded logits of a few models, so an unintended change to a layer or an init shows up.

Set CNNLAB_UPDATE_GOLDEN=1 to rewrite the files, after checking the change is intended.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import cnnlab

from conftest import DATA

GOLDEN = DATA / "golden"
UPDATE = os.environ.get("CNNLAB_UPDATE_GOLDEN") == "1"
MODELS = [n for n in ("alexnet", "resnet18", "lenet5", "resnet20", "mobilenet_v2")
          if n in cnnlab.list_models()]


def seeded_logits(name: str) -> torch.Tensor:
    torch.manual_seed(0)
    model = cnnlab.create_model(name).eval()
    h, w = model.fixed_input_size or cnnlab.model_info(name).input_size[1:]
    h, w = min(h, 96), min(w, 96)
    x = torch.randn(2, model.in_chans, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)[:, :8].double()


@pytest.mark.parametrize("name", MODELS)
def test_seeded_logits_match_golden(name):
    path = GOLDEN / f"{name}.json"
    logits = seeded_logits(name)
    if UPDATE:
        path.write_text(json.dumps(logits.tolist(), indent=1) + "\n")
    if not path.exists():
        pytest.fail(f"{path.name} missing: run with CNNLAB_UPDATE_GOLDEN=1 to create it")
    expected = torch.tensor(json.loads(path.read_text()), dtype=torch.float64)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-6)
