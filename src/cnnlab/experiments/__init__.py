"""The lectures' experiments, one command each: ``run_experiment(name, out, budget=...)``.

Each experiment is one module here whose docstring states the claim, the paper's figure and
the budgets. Every run writes ``result.json`` (every number, the command, hardware, versions,
seeds, wall time), PNG/SVG figures and ``report.md`` into its output folder, and reuses the
training engine's checkpoints there, so an interrupted experiment resumes.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cnnlab.experiments.base import BUDGETS, Context, Experiment, Outcome

__all__ = ["BUDGETS", "EXPERIMENTS", "Experiment", "Outcome", "get_experiment",
           "list_experiments", "run_experiment"]

# name -> module, in the order the lectures meet them
EXPERIMENTS = {
    "inception-cost": "inception_cost",
    "small-filters": "small_filters",
    "gap-vs-fc": "gap_vs_fc",
    "degradation": "degradation",
    "batchnorm": "batchnorm",
    "zfnet-vs-alexnet": "zfnet_vs_alexnet",
    "lesion": "lesion",
    "loss-landscape": "loss_landscape",
    "design-space": "design_space",
}


def _module(name: str) -> Any:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of "
                         f"{', '.join(EXPERIMENTS)} (`cnnlab experiment list`)")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name]}")


def get_experiment(name: str) -> Experiment:
    return _module(name).SPEC


def list_experiments() -> list[Experiment]:
    return [get_experiment(name) for name in EXPERIMENTS]


def _environment(device: torch.device) -> dict[str, Any]:
    import matplotlib
    import numpy

    from cnnlab import __version__

    hardware = {"platform": platform.platform(), "machine": platform.machine(),
                "processor": _cpu_name(),
                "cpu_count": __import__("os").cpu_count(), "torch_threads":
                torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": numpy.__version__, "matplotlib": matplotlib.__version__,
                "cnnlab": __version__}
    return {"hardware": hardware, "versions": versions}


def _cpu_name() -> str:
    """The CPU's model name where the OS says it (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _claim_folder(out: Path, name: str, budget: str, data: str | None) -> None:
    """An output folder belongs to one experiment, budget and dataset: reusing it resumes;
    anything else there is refused rather than mixed in or overwritten."""
    marker = out / "experiment.json"
    mine = {"experiment": name, "budget": budget, "data": data}
    if marker.is_file():
        try:
            theirs = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            theirs = None
        if not isinstance(theirs, dict) or {k: theirs.get(k) for k in mine} != mine:
            raise ValueError(f"--out {out} holds another experiment's results ({theirs}); "
                             f"choose another folder")
        return
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} is not empty and holds no experiment; choose a new or "
                         f"empty folder")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(mine) + "\n")


def run_experiment(
    name: str,
    out: str | Path,
    *,
    budget: str = "quick",
    data: str | None = None,
    root: str | None = None,
    device: str = "auto",
    console: Console | None = None,
    command: Sequence[str] | None = None,
    samples: int | None = None,
) -> dict[str, Any]:
    """Run experiment ``name`` at ``budget`` into ``out``; returns what result.json holds.
    ``samples`` replaces the budget's number of sampled models (experiments that sample)."""
    from cnnlab.train.checkpoint import replacing
    from cnnlab.train.run import resolve_device

    module = _module(name)
    spec: Experiment = module.SPEC
    if budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    if root is not None and data is None:
        raise ValueError("--root needs --data (the dataset's name, e.g. mnist)")
    overrides = _overrides(spec, budget, samples)
    data = data or ("mnist-sample" if spec.uses_data else None)
    dev = resolve_device(device)
    out = Path(out)
    _claim_folder(out, name, budget, data)
    ctx = Context(spec, out, budget, data or "", root, dev, console or Console(),
                  overrides=overrides)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    outcome: Outcome = module.run(ctx)
    wall = time.perf_counter() - t0
    result = {
        "experiment": name, "claim": spec.claim, "paper": spec.paper,
        "budget": budget, "settings": dict(ctx.settings),
        "command": list(command) if command is not None else ["python", *sys.argv],
        "data": data, "root": root, **_environment(dev),
        "seeds": {"training (recipe seed)": 0, "train subset": 0, "test subset": 1},
        "started": started.isoformat(timespec="seconds"), "wall_s": round(wall, 2),
        "train_s": round(sum(r["train_s"] for r in ctx.runs.values()), 2),
        "resumed": any(r["resumed"] for r in ctx.runs.values()),
        "numbers": outcome.numbers, "runs": ctx.runs, "figures": ctx.figures,
    }
    with replacing(out / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=_plain) + "\n")
    with replacing(out / "report.md") as tmp:
        tmp.write_text(_report(spec, result, outcome))
    return result


def _overrides(spec: Experiment, budget: str, samples: int | None) -> dict[str, Any]:
    if samples is None:
        return {}
    if "samples" not in spec.budgets[budget]:
        sampling = [e for e in EXPERIMENTS if "samples" in get_experiment(e).budgets[budget]]
        raise ValueError(f"--samples applies to experiments that sample models "
                         f"({', '.join(sampling)}), not {spec.name}")
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    return {"samples": samples}


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _report(spec: Experiment, result: dict[str, Any], outcome: Outcome) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in result["settings"].items())
    hw = result["hardware"]
    figures = "".join(f"![{f}]({f})\n\n" for f in result["figures"] if f.endswith(".png"))
    return (
        f"# {spec.name}\n\n**Claim.** {spec.claim}\n\n**Paper.** {spec.paper}\n\n"
        f"## What ran\n\n`{' '.join(result['command'])}`\n\n"
        f"- budget `{result['budget']}`: {settings}\n"
        f"- data: {result['data'] or 'none (analytic)'}\n"
        f"- {hw['device']} ({hw['processor']}, {hw['torch_threads']} torch threads), "
        f"torch {result['versions']['torch']}\n"
        f"- wall time {result['wall_s']:.1f} s"
        + (f" (this invocation, which resumed saved runs; their training took "
           f"{result['train_s']:.1f} s in all)" if result["resumed"] else "")
        + "; seed 0\n\n"
        f"## What it shows\n\n{outcome.shows}\n\n{figures}"
        f"## Compared with the paper\n\n{outcome.versus_paper}\n\n"
        f"## What this budget cannot show\n\n{outcome.limits}\n"
    )
