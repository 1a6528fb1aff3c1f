"""`cnnlab demo`: the README's main job."""

from __future__ import annotations

import argparse

from rich.console import Console

from cnnlab.cli import models as models_command
from cnnlab.registry import create_model, list_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the README demo: the zoo and LeNet-5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    models_command.run(argparse.Namespace(pattern="*", json=False, markdown=False))
    name = "lenet5" if "lenet5" in list_models() else list_models()[0]
    Console().print(create_model(name))
    return 0
