"""Shared helpers for the per-model tests over the whole registry."""

from __future__ import annotations

import os

import pytest
import torch

import cnnlab

# Real-valued tests of models above this many parameters (ViT-H/14, 632M; RegNetY-128GF, 645M)
# fill and run gigabytes: up to ~3 minutes and 6 GB each on the 2-core machine. They run with
# CNNLAB_HEAVY=1 (`make test-heavy`, a step of .ci/run); their shapes and counts are checked on
# meta tensors either way. ViT-L (304M, 307M) stays in `make test`.
HEAVY_PARAMS = 400_000_000


def heavy_param(name: str):
    """``name`` as a test parameter, skipped for a heavy model unless CNNLAB_HEAVY=1."""
    if cnnlab.model_info(name).params <= HEAVY_PARAMS or os.environ.get("CNNLAB_HEAVY") == "1":
        return name
    return pytest.param(name, marks=pytest.mark.skip(
        reason=f"{name}: over {HEAVY_PARAMS:,} parameters; set CNNLAB_HEAVY=1 to run"))


def small_input_hw(name: str, model: torch.nn.Module) -> tuple[int, int]:
    """A small valid input: the model's fixed size, else the paper's size for CIFAR/MNIST
    nets and 64x64 (or the model's minimum, if larger) for ImageNet nets.

    A model whose training-mode forward needs more than ``min_input_size`` (Inception v3's
    auxiliary head needs 299x299) declares ``min_train_input_size``, and that is used.
    """
    if model.fixed_input_size is not None:
        return model.fixed_input_size
    info = cnnlab.model_info(name)
    if info.dataset != "imagenet":
        return info.input_size[1:]
    mh, mw = getattr(model, "min_train_input_size", None) or model.min_input_size
    return max(64, mh), max(64, mw)


def small_build(name: str) -> dict:
    """Builder options for a cheap real forward: a ViT takes one size, its position
    embedding's, so it is built for a 4x4 grid of patches (2x2 for /32): the same layers with
    17 (5) tokens instead of 197 (50). Other models: none."""
    if cnnlab.model_info(name).family != "vit":
        return {}
    patch = int(name.rsplit("_", 1)[1])
    return {"image_size": 4 * patch if patch < 32 else 2 * patch}


def build_on_meta(name: str, **kwargs) -> torch.nn.Module:
    """Build without allocating or initialising real memory: shapes and counts only."""
    with torch.device("meta"):
        return cnnlab.create_model(name, **kwargs)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

