"""`cnnlab recipes [NAME]`: the papers' training recipes, listed or shown field by field."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from cnnlab.train.recipes import Recipe, get_recipe, list_recipes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the training recipes, or show one with its paper")
    p.add_argument("name", nargs="?", help="a recipe to show in full, e.g. he2016_cifar")
    p.set_defaults(func=run)


def _length(recipe: Recipe) -> str:
    return f"{recipe.max_steps:,} steps" if recipe.max_steps else f"{recipe.epochs} epochs"


def _value(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def models_using(name: str) -> list[str]:
    from cnnlab.registry import list_models, model_info

    return [m for m in list_models() if model_info(m).recipe == name]


def run(args: argparse.Namespace) -> int:
    console = Console(width=max(Console().width, 100))
    if args.name is None:
        table = Table("recipe", "paper and section", "optimizer", "lr", "batch", "length",
                      title=f"cnnlab recipes ({len(list_recipes())})")
        for name in list_recipes():
            r = get_recipe(name)
            table.add_row(name, r.citation, r.optimizer, f"{r.lr:g}", str(r.batch_size),
                          _length(r))
        console.print(table)
        return 0
    recipe = get_recipe(args.name)
    print(f"{recipe.name}: {recipe.citation}")
    for key in recipe.to_dict():
        if key in ("name", "citation", "unstated", "source"):
            continue
        mark = "  (not stated in the paper)" if key in recipe.unstated else ""
        print(f"  {key}: {_value(getattr(recipe, key))}{mark}")
    if recipe.source:
        print(f"values not in the paper: {recipe.source}")
    users = models_using(recipe.name)
    print(f"default recipe of: {', '.join(users) if users else 'no model (use --recipe)'}")
    return 0
