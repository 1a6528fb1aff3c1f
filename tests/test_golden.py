"""Seeded logits, so an unintended change to a layer or an init shows up: a few models at
up to 96x96 with their own init, and every model without recorded torchvision logits at a
small input with seeded weights.

Set CNNLAB_UPDATE_GOLDEN=1 to rewrite the files, after checking the change is intended.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import cnnlab

from conftest import DATA
from zoo_helpers import small_input_hw

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


# Every model that tests/test_torchvision_logits.py does not pin (not torchvision-compatible)
# and the list above does not hold, at a small input so that the test stays fast.
ZOO = [n for n in cnnlab.list_models() if not cnnlab.model_info(n).torchvision
       and n not in MODELS]


@torch.no_grad()
def fill_seeded(model: torch.nn.Module, seed: int = 0) -> None:
    """Seeded weights that keep the signal's scale through any depth: He-scaled weights
    (variance 2 / fan-in, so ReLU layers neither shrink nor grow it), BN statistics near 1.
    A fresh init leaves some deep nets' logits nearly input-independent (their biases), and
    such a file would not see a layer change."""
    g = torch.Generator().manual_seed(seed)
    for key, t in model.state_dict(keep_vars=True).items():
        if not t.is_floating_point():
            continue
        values = torch.randn(t.shape, generator=g)
        if key.endswith("running_var"):
            values = values.abs() * 0.5 + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            values = values * 0.1
        elif t.dim() >= 2:
            values = values * (2.0 / max(1, t[0].numel())) ** 0.5
        else:  # BN weight, layer scales
            values = 1.0 + 0.1 * values
        t.copy_(values)


def small_input_logits(name: str) -> torch.Tensor:
    """In float64, so that the check is the same on every CPU and ResNet-1202's residual
    stream stays in range."""
    with torch.device("meta"):  # no init: fill_seeded sets every value
        model = cnnlab.create_model(name).eval()
    persistent = set(model.state_dict())
    if any(n not in persistent for n, _ in model.named_buffers()):
        torch.manual_seed(0)  # fixed tables (LeNet's C3 connections) come from the builder
        model = cnnlab.create_model(name).eval()
    else:
        model = model.to_empty(device="cpu")
    fill_seeded(model)
    model.double()
    h, w = small_input_hw(name, model)  # the fixed size, CIFAR's/MNIST's, or 64x64
    if model.fixed_input_size is None and cnnlab.model_info(name).dataset != "imagenet":
        h, w = (max(16, m) for m in model.min_input_size)  # CIFAR nets: 16x16 is enough
    x = torch.randn(2, model.in_chans, h, w, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    with torch.no_grad():
        return model(x)[:, :8]


def test_every_model_has_torchvision_logits_or_a_golden_output():
    recorded = {p.stem for p in (DATA / "torchvision_logits").glob("*.json")}
    golden = {p.stem for p in GOLDEN.glob("*.json")}
    assert set(cnnlab.list_models()) <= recorded | golden
    assert len(ZOO) + len(MODELS) == len(golden)


@pytest.mark.parametrize("name", ZOO)
def test_small_input_logits_match_golden(name):
    path = GOLDEN / f"{name}.json"
    logits = small_input_logits(name)
    if UPDATE:
        path.write_text(json.dumps([[float(f"{v:.9g}") for v in row] for row in logits.tolist()])
                        + "\n")
    if not path.exists():
        pytest.fail(f"{path.name} missing: run with CNNLAB_UPDATE_GOLDEN=1 to create it")
    expected = torch.tensor(json.loads(path.read_text()), dtype=torch.float64)
    scale = expected.abs().max().item()
    # The logits must depend on the input, or the file pins nothing but the head's bias.
    assert torch.isfinite(expected).all() and scale > 0
    assert (expected[0] - expected[1]).abs().max() > 1e-3 * scale
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6 * scale)
