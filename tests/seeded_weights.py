"""Seeded weights shared with scripts/make_torchvision_logits.py (pure torch, no cnnlab)."""

from __future__ import annotations

import torch


def deterministic_state_dict(state_dict: dict[str, torch.Tensor], seed: int = 0) -> dict:
    """Fill a state_dict's tensors with seeded values that keep activations in range.

    Pure torch and order-based, so applying it to torchvision's model (with the same keys
    and shapes) gives the same weights: that is how tests/data/torchvision_logits/ was made
    (scripts/make_torchvision_logits.py) and how the tests compare against it.
    """
    g = torch.Generator().manual_seed(seed)
    filled = {}
    for key, t in state_dict.items():
        if not t.is_floating_point():
            filled[key] = t.clone()
            continue
        values = torch.randn(t.shape, generator=g, dtype=torch.float64)
        if key.endswith("running_var"):
            values = values.abs() * 0.5 + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            values = values * 0.1
        elif t.dim() >= 2:  # conv / linear weights: unit-variance outputs
            values = values / max(1, t[0].numel()) ** 0.5
        else:  # BN weight, layer scales
            values = 1.0 + 0.1 * values
        filled[key] = values.to(t.dtype)
    return filled
