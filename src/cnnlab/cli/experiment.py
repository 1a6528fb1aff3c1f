"""`cnnlab experiment NAME --out DIR` and `cnnlab experiment list`: the lectures' experiments,
each writing result.json, figures and report.md, and resuming when interrupted."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="reproduce a lecture's experiment (`list` shows them)")
    p.add_argument("name", metavar="NAME", help="an experiment, or `list`")
    p.add_argument("--data", help="dataset name (default: the bundled mnist-sample)")
    p.add_argument("--root", help="folder holding the dataset's files")
    p.add_argument("--budget", choices=("tiny", "quick", "paper"), default="quick",
                   help="tiny (seconds, for tests), quick (minutes on a CPU) or paper "
                   "(the papers' schedules); default quick")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--out", help="output folder (required to run one)")
    p.add_argument("--samples", type=int, metavar="N",
                   help="design-space: models sampled per design space (default: the budget's)")
    p.set_defaults(func=run_experiment_cli)


def run_experiment_cli(args: argparse.Namespace) -> int:
    from cnnlab.experiments import list_experiments, run_experiment

    if args.name == "list":
        table = Table("experiment", "paper", "quick budget", "paper budget", "claim")
        for spec in list_experiments():
            fmt = ", ".join
            table.add_row(spec.name, spec.paper,
                          fmt(f"{k}={v}" for k, v in spec.budgets["quick"].items()),
                          fmt(f"{k}={v}" for k, v in spec.budgets["paper"].items()), spec.claim)
        Console(width=200).print(table)
        return 0
    if not args.out:
        raise ValueError(f"experiment {args.name}: give --out DIR (where result.json, the "
                         f"figures and report.md go)")
    result = run_experiment(args.name, args.out, budget=args.budget, data=args.data,
                            root=args.root, device=args.device,
                            command=_command(args), samples=args.samples)
    print(f"{args.name} ({args.budget}): {result['wall_s']:.1f} s; wrote "
          f"{args.out}/result.json, report.md and {len(result['figures'])} figure files")
    return 0


def _command(args: argparse.Namespace) -> list[str]:
    """The command line that reproduces this run (as parsed, so it holds every default)."""
    cmd = ["cnnlab", "experiment", args.name, "--budget", args.budget, "--out", args.out]
    for flag, value in (("--data", args.data), ("--root", args.root),
                        ("--samples", args.samples)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd
