"""Inference speed of resnet50 on the CPU: eager eval-mode NCHW vs `optimize_for_inference`
(BN folded, channels-last) vs ONNX Runtime, side by side in one run.

Claim (issue 10): at batch 1, 224x224, 2 CPU threads, `optimize_for_inference` gives >= 1.8x
the images/s of the eval-mode eager NCHW model (an earlier study here: 90 ms -> 50 ms with
fusion + channels-last); batch 16 and ONNX Runtime (the BN-folded model, exported and checked
by `cnnlab.deploy.export`) are measured next to them, each with its % of a GEMM peak measured
in the same run. The variants take turns, round by round, so a change in the machine's load
hits them all; each figure is the median over rounds of the per-round median latency.

    PYTHONPATH=src python benchmarks/inference_speed.py
    PYTHONPATH=src python benchmarks/inference_speed.py --batches 1 --rounds 1 --iters 3 \\
        --no-write                                   # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

# On a shared, oversubscribed machine OpenMP's default spin-waiting makes a 2-thread PyTorch
# run up to 10x slower (measured here: resnet50 batch 1, 8.0 s vs 0.87 s); passive waiting
# keeps the comparison about the model, not the scheduler. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnlab  # noqa: E402
from cnnlab.deploy.bench import BenchConfig, bench_model, gemm_peak_gflops  # noqa: E402
from report import machine, write_section  # noqa: E402

VARIANTS = {
    "eager NCHW (eval)": {},
    "optimize_for_inference": {"fuse": True, "channels_last": True},
    "ONNX Runtime (BN folded)": {"fuse": True, "onnxruntime": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.manual_seed(0)
    model = cnnlab.create_model(args.model).eval()
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    # The roof is the best GEMM rate seen in the run: it is measured again in every round, so
    # a burst of load during one measurement does not lower it.
    peaks = [gemm_peak_gflops("cpu", torch.float32, n=1024, repeats=10)]
    results: dict[tuple[str, int], list] = {}
    for batch in args.batches:
        iters = max(3, args.iters // max(1, batch // 4))
        for _ in range(args.rounds):
            peaks.append(gemm_peak_gflops("cpu", torch.float32, n=1024, repeats=10))
            for label, options in VARIANTS.items():
                cfg = BenchConfig(batches=(batch,), warmup=2, iters=iters, **options)
                (row,) = bench_model(model, cfg, peaks[-1])
                results.setdefault((label, batch), []).append(row)
                print(f"{label:28s} batch {batch:3d}: {row.p50_ms:9.1f} ms", flush=True)
    peak = max(peaks)
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    lines = [
        "## Inference speed: eager vs `optimize_for_inference` vs ONNX Runtime",
        "",
        f"`PYTHONPATH=src python benchmarks/inference_speed.py` — {args.model}, 224x224, "
        f"{args.threads} CPU threads, {args.rounds} rounds (variants take turns), median of "
        f"per-round medians; {machine()}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}.",
        f"GEMM peak (1024^3 fp32 `torch.mm`, best of {len(peaks)} measurements in this run): "
        f"{peak:.1f} GFLOP/s (lowest measurement {min(peaks):.1f}).",
        "",
        "| variant | batch | ms / batch (p50) | images/s | vs eager | vs eager, per round "
        "| GFLOP/s | % of GEMM peak |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for batch in args.batches:
        eager = [r.p50_ms for r in results[("eager NCHW (eval)", batch)]]
        base = statistics.median(eager)
        for label in VARIANTS:
            rows = results[(label, batch)]
            p50 = statistics.median(r.p50_ms for r in rows)
            per_round = ", ".join(f"{e / r.p50_ms:.2f}x" for e, r in zip(eager, rows, strict=True))
            gflops = 2 * rows[0].gmacs * batch / (p50 / 1e3)
            lines.append(f"| {label} | {batch} | {p50:.1f} | {batch / p50 * 1e3:.2f} | "
                         f"{base / p50:.2f}x | {per_round} | {gflops:.1f} | "
                         f"{100 * gflops / peak:.1f} |")
    lines += [
        "",
        f"Load: before `{load_before}`; after `{load_after}`. This machine has 2 cores and was "
        "shared with other jobs during the run, so absolute times are inflated and noisy; "
        "the ratios, measured side by side, are the figures to read.",
        "GPU figures (batch 256, AMP, eager vs compiled) are not measured: no GPU was lent to "
        "this session.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("inference_speed", body)


if __name__ == "__main__":
    main()
