"""Optimisers from a recipe: SGD (momentum, Nesterov), AdamW, RMSprop; weight-decay groups."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnlab.train.recipes import Recipe

__all__ = ["build_optimizer", "param_groups", "set_lr"]


def param_groups(model: nn.Module, weight_decay: float, no_decay_1d: bool) -> list[dict]:
    """One group with weight decay and, with ``no_decay_1d``, one without for 1-d tensors
    (BN scales and shifts, biases), which L2 on would only shrink toward zero."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_1d or weight_decay == 0:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.weight_decay, recipe.no_decay_1d)
    if recipe.optimizer == "sgd":
        # PyTorch's SGD adds weight decay to the gradient before momentum, as Caffe and the
        # papers' L2 term do.
        return torch.optim.SGD(
            groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov
        )
    if recipe.optimizer == "adamw":
        b1, b2 = recipe.betas
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(b1, b2), eps=recipe.eps)
    return torch.optim.RMSprop(
        groups, lr=recipe.lr, alpha=recipe.alpha, eps=recipe.eps, momentum=recipe.momentum
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
