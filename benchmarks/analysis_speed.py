"""How fast is `cnnlab.analysis.summarize`, side by side with torchinfo, in one run.

Claim (issue 4): the full report (shapes, params, MACs, other ops, memory, receptive field)
for resnet50 @224 is no slower than torchinfo's summary on meta tensors (which computes no
receptive field and no memory per layer), and at 1024x1024 it is >= 10x faster than
torchinfo's default summary, which runs a real forward; the same for resnet152 and
densenet121. From 224 to 1024 the analyser's time grows <= 1.2x, and vgg16 @1024 grows the
process's peak RSS by < 100 MB (nothing real is allocated).

Both tools get the same prebuilt model (built on the meta device for the meta runs, on the
CPU with its default initialisation for torchinfo's real forward); model building is not
timed. Times are medians of ``--repeats`` runs after one warm-up.

    pip install -c constraints.txt -e ".[bench]"    # torchinfo, a benchmark extra only
    PYTHONPATH=src python benchmarks/analysis_speed.py
    PYTHONPATH=src python benchmarks/analysis_speed.py --models resnet18 --sizes 64 128 \\
        --repeats 1 --no-write                       # smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnlab  # noqa: E402
from cnnlab.analysis import summarize  # noqa: E402
from report import machine, write_section  # noqa: E402


def median_time(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()  # garbage from a previous tool's run must not be collected inside ours
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torchinfo_meta(model: torch.nn.Module, size: int) -> Callable[[], object]:
    import torchinfo

    x = torch.empty(1, 3, size, size, device="meta")
    return lambda: torchinfo.summary(model, input_data=x, device="meta", verbose=0)


def torchinfo_real(model: torch.nn.Module, size: int) -> Callable[[], object]:
    import torchinfo

    return lambda: torchinfo.summary(model, input_size=(1, 3, size, size), device="cpu",
                                     verbose=0)


RSS_PROBE = """
import json, resource, sys, torch
from cnnlab.analysis import summarize
import cnnlab
with torch.device("meta"):
    model = cnnlab.create_model(sys.argv[1]).eval()
summarize(model, (3, int(sys.argv[3]), int(sys.argv[3])))  # warm: only the size differs
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = summarize(model, (3, int(sys.argv[2]), int(sys.argv[2])))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "after_kb": after, "act_bytes": s.activation_bytes}))
"""


def rss_growth(name: str, size: int, warm: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, name, str(size), str(warm)],
                         check=True,
                         capture_output=True, text=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return {"growth_mb": (data["after_kb"] - data["before_kb"]) / 1024,
            "act_mb": data["act_bytes"] / 2**20}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "resnet152", "densenet121"])
    p.add_argument("--sizes", nargs=2, type=int, default=[224, 1024])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--real-repeats", type=int, default=1)
    p.add_argument("--rss-model", default="vgg16")
    p.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    args = p.parse_args()
    small, large = args.sizes
    torch.set_num_threads(max(1, torch.get_num_threads()))

    lines = [
        "## Analyser speed (`benchmarks/analysis_speed.py`)",
        "",
        f"Machine: {machine()}, {torch.get_num_threads()} torch threads. Command: "
        f"`PYTHONPATH=src python benchmarks/analysis_speed.py` (median of {args.repeats} after "
        f"a warm-up; torchinfo's "
        f"real forward: {args.real_repeats} run(s)). cnnlab = full report (shapes, params, MACs, "
        f"other ops, memory, receptive field); torchinfo meta = `torchinfo.summary` on meta "
        f"tensors; torchinfo real = its default summary (a real forward on the CPU).",
        "",
        f"| model | input | cnnlab (ms) | torchinfo meta (ms) | torchinfo real (ms) | "
        f"meta / cnnlab | real / cnnlab | cnnlab {large}/{small} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.models:
        with torch.device("meta"):
            meta_model = cnnlab.create_model(name).eval()
        real_model = cnnlab.create_model(name).eval()
        # Both of our sizes first, back to back, so the growth ratio compares like with like.
        ours = {
            size: median_time(lambda m=meta_model, s=size: summarize(m, (3, s, s)), args.repeats)
            for size in (small, large)
        }
        for size in (small, large):
            meta = median_time(torchinfo_meta(meta_model, size), args.repeats)
            with torch.no_grad():
                real = median_time(torchinfo_real(real_model, size), args.real_repeats,
                                   warmup=False)
            growth = f"{ours[large] / ours[small]:.2f}x" if size == large else ""
            row = (f"| {name} | {size} | {ours[size] * 1e3:.1f} | {meta * 1e3:.1f} | "
                   f"{real * 1e3:.1f} | {meta / ours[size]:.2f}x | "
                   f"{real / ours[size]:.1f}x | {growth} |")
            print(row, flush=True)
            lines.append(row)
        del real_model
    rss = rss_growth(args.rss_model, large, small)
    rss_line = (f"- Peak RSS growth of `summarize({args.rss_model!r}, (3, {large}, {large}))` "
                f"in a fresh process: **{rss['growth_mb']:.1f} MB** (the report's activation "
                f"memory at that size: {rss['act_mb']:.0f} MiB, never allocated).")
    print(rss_line)
    lines += ["", rss_line]
    if not args.no_write:
        write_section("analysis_speed", "\n".join(lines))
        print("wrote the analysis_speed section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
