"""Training: the papers' recipes, pure learning-rate schedules, the loop, checkpoints, logs.

``fit`` trains a model under a ``Recipe``; ``get_recipe(name)`` returns a paper's recipe;
checkpoints are atomic and resume exactly (see ``cnnlab.train.checkpoint``).
"""

from cnnlab.train.checkpoint import export_safetensors, load_checkpoint, save_atomic
from cnnlab.train.engine import EMA, FitResult, NonFiniteLoss, evaluate, fit, seed_everything
from cnnlab.train.recipes import (
    RECIPES,
    Recipe,
    apply_overrides,
    build_schedule,
    get_recipe,
    list_recipes,
    parse_overrides,
)

__all__ = [
    "EMA",
    "RECIPES",
    "FitResult",
    "NonFiniteLoss",
    "Recipe",
    "apply_overrides",
    "build_schedule",
    "evaluate",
    "export_safetensors",
    "fit",
    "get_recipe",
    "list_recipes",
    "load_checkpoint",
    "parse_overrides",
    "save_atomic",
    "seed_everything",
]
