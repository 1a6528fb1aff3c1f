import json
from functools import cache
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


@cache
def torchvision_reference() -> dict:
    """Published torchvision facts (tests/data/README.md)."""
    return json.loads((DATA / "torchvision_reference.json").read_text())


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
