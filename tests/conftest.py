import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every machine and every run (CI and a developer
# test the same cases): derandomised, and no example database carrying state between runs.
# HYPOTHESIS_PROFILE=explore draws fresh random examples, to hunt for new failures.
settings.register_profile("cnnlab", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "cnnlab"))

DATA = Path(__file__).parent / "data"


@cache
def torchvision_reference() -> dict:
    """Published torchvision facts (tests/data/README.md)."""
    return json.loads((DATA / "torchvision_reference.json").read_text())


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core (make test runs pytest -n auto): one torch thread each, or the
    # workers' threads thrash.
    torch.set_num_threads(1)
