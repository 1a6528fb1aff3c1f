"""`cnnlab bench`: latency, throughput, memory, efficiency and energy; Canziani's charts."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from cnnlab.cli import CliError
from cnnlab.cli.analysis import input_size, positive


def batch_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"batches must be comma-separated integers such as 1,8,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batches must be positive, got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark models: latency, images/s, memory, %% of GEMM peak, energy",
        description="Per model and batch: median/p90/p99 latency, images/s, peak memory, "
        "MACs, achieved GFLOP/s and % of a GEMM peak measured in the same run, energy per "
        "image where the hardware exposes it. --chart draws Canziani et al. 2016's Figs. 2, 3, 10.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="registered names or checkpoints")
    p.add_argument("--batch", type=batch_list, default=(1, 8, 32), help="e.g. 1,8,32")
    p.add_argument("--input", type=input_size, default=None, help="CxHxW (default: the paper's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where to run (default cpu)")
    p.add_argument("--fuse", action="store_true", help="fold BN into the convs first")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC memory format (the fast path for CPU and tensor-core convs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--onnxruntime", action="store_true", help="run the ONNX export in ORT")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="bf16/fp16 run under autocast (AMP)")
    p.add_argument("--mode", choices=("infer", "train"), default="infer",
                   help="infer: forward in eval mode; train: forward, backward and SGD step")
    p.add_argument("--warmup", type=positive, default=3,
                   help="untimed iterations first (default 3)")
    p.add_argument("--iters", type=positive, default=10,
                   help="timed iterations per model and batch (default 10)")
    p.add_argument("--gemm-size", type=positive, default=None,
                   help="n of the n^3 GEMM whose GFLOP/s is the peak (default 1024; 8192 on GPU)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV (timm's columns first)")
    fmt.add_argument("--json", action="store_true", help="print JSON (rows and run facts)")
    p.add_argument("--chart", default=None, metavar="OUT.png|svg",
                   help="draw Figs. 2, 3 and 10 of Canziani et al. 2016")
    p.add_argument("--from", dest="from_csv", default=None, metavar="CSV",
                   help="chart an earlier bench CSV instead of measuring")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if args.chart is not None:
        chart = Path(args.chart)
        if chart.suffix.lower() not in (".png", ".svg"):
            raise CliError(f"--chart must name a .png or .svg file, got {args.chart!r}")
        if not chart.parent.is_dir():
            raise CliError(f"folder {str(chart.parent)!r} does not exist")
    if args.from_csv is not None:
        if args.chart is None or args.models:
            raise CliError("--from CSV only draws charts: give --chart OUT.png and no models")
        with open(args.from_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        return _chart(rows, args.chart)
    if not args.models:
        raise CliError("name at least one model to benchmark (or --from CSV --chart OUT.png)")

    from cnnlab.deploy.bench import BenchConfig, bench, rows_to_csv
    from cnnlab.deploy.source import model_from

    cfg = BenchConfig(
        batches=args.batch, input_size=args.input, device=args.device, fuse=args.fuse,
        channels_last=args.channels_last, compile=args.compile, onnxruntime=args.onnxruntime,
        dtype=args.dtype, mode=args.mode, warmup=args.warmup, iters=args.iters,
        gemm_size=args.gemm_size,
    )
    models = [model_from(spec) for spec in args.models]
    result = bench(models, cfg, log=lambda line: print(line, file=sys.stderr))
    if args.csv:
        print(rows_to_csv(result.rows), end="")
    elif args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _print_table(result)
    if args.chart is not None:
        from dataclasses import asdict

        _chart([asdict(r) for r in result.rows], args.chart)
    return 0


def _chart(rows: list[dict], out: str) -> int:
    from cnnlab.deploy.charts import draw_charts

    drawn = draw_charts(rows, out)
    print(f"wrote {out}: Fig. 2 {len(drawn['fig2'])} models, Fig. 3 {len(drawn['fig3'])} "
          f"points, Fig. 10 {len(drawn['fig10'])} models", file=sys.stderr)
    return 0


def _print_table(result) -> None:  # type: ignore[no-untyped-def]
    meta = result.meta
    print(f"device {meta['device']}, {meta['threads']} threads, torch {meta['torch']}; "
          f"GEMM peak {meta['gemm_peak_gflops']} GFLOP/s; variant {meta['variant']}")
    head = ("model", "batch", "img/s", "p50 ms", "p90 ms", "p99 ms", "GMACs", "GFLOP/s",
            "% peak", "peak MB", "J/img")
    print("  ".join(f"{h:>9}" if i else f"{h:<20}" for i, h in enumerate(head)))
    for r in result.rows:
        joules = "n/a" if r.joules_per_img is None else f"{r.joules_per_img:.3g}"
        cells = (r.model, r.batch, r.samples_per_sec, r.p50_ms, r.p90_ms, r.p99_ms, r.gmacs,
                 r.gflops_per_s, r.pct_of_peak, r.peak_mem_mb, joules)
        print("  ".join(f"{c!s:>9}" if i else f"{c!s:<20}" for i, c in enumerate(cells)))
        if r.note:
            print(f"  note: {r.note}")
    first = result.rows[0] if result.rows else None
    if first is not None:
        print(f"warm-up {first.warmup}, {first.iters} timed iterations per batch; memory: "
              f"{first.memory_source}; energy: {first.energy_source}")
