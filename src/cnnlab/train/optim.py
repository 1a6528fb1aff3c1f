"""Optimisers from a recipe: SGD (momentum, Nesterov), AdamW, RMSprop; weight-decay groups."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnlab.train.recipes import Recipe

__all__ = ["build_optimizer", "param_groups", "set_lr"]


def param_groups(model: nn.Module, weight_decay: float, no_decay_1d: bool,
                 backbone_lr_scale: float = 1.0) -> list[dict]:
    """One group with weight decay and, with ``no_decay_1d``, one without for 1-d tensors
    (BN scales and shifts, biases), which L2 on would only shrink toward zero.

    A fine-tuned model names its new layers in ``head_names``; its other (pretrained)
    parameters then get their own groups whose ``lr_scale`` is ``backbone_lr_scale``.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    heads = tuple(f"{h}." for h in getattr(model, "head_names", ()))
    if heads and backbone_lr_scale != 1.0:
        parts = [([p for n, p in params if not n.startswith(heads)], backbone_lr_scale),
                 ([p for n, p in params if n.startswith(heads)], 1.0)]
    else:
        parts = [([p for _, p in params], 1.0)]
    groups = []
    for part, scale in parts:
        if not no_decay_1d or weight_decay == 0:
            groups.append({"params": part, "weight_decay": weight_decay, "lr_scale": scale})
            continue
        groups += [
            {"params": [p for p in part if p.ndim > 1], "weight_decay": weight_decay,
             "lr_scale": scale},
            {"params": [p for p in part if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": scale},
        ]
    return groups


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.weight_decay, recipe.no_decay_1d,
                          recipe.backbone_lr_scale)
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
    """The schedule's rate, times each group's ``lr_scale`` (a fine-tuned backbone's)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
