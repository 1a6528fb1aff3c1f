"""The model a deploy command works on: a registered name or a cnnlab training checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from cnnlab.registry import create_model, list_models

__all__ = ["model_from"]


def model_from(spec: str) -> nn.Module:
    """Build ``spec`` (a registered model name) or load it (a checkpoint path), in eval mode."""
    if spec in list_models():
        return create_model(spec).eval()
    path = Path(spec)
    if path.is_file():
        from cnnlab.train.inference import load_member

        member = load_member(path)
        member.model.model_name = member.name
        return member.model.eval()
    if path.suffix or "/" in spec:
        raise ValueError(f"checkpoint {spec!r} does not exist (give a model name or a .pt file)")
    create_model(spec)  # raises the registry's "unknown model ... closest: ..." message
    raise AssertionError("unreachable")  # pragma: no cover
