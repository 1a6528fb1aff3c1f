"""`cnnlab summary | rf | erf | calc`: the analyser from the command line."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from cnnlab.analysis import formulas, render
from cnnlab.analysis.summary import summarize

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def input_size(text: str) -> tuple[int, int, int]:
    """Parse "3x224x224" (or "224" for 3x224x224, "224x160" for 3x224x160)."""
    if not re.fullmatch(r"-?\d+(x-?\d+){0,2}", text.strip().lower()):
        raise argparse.ArgumentTypeError(
            f"input size must look like 3x224x224 (CxHxW), 224x224 or 224, got {text!r}")
    values = [int(v) for v in text.strip().lower().split("x")]
    if len(values) == 1:
        values = [3, values[0], values[0]]
    elif len(values) == 2:
        values = [3, *values]
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"input sizes must be positive, got {text!r}")
    return values[0], values[1], values[2]


def _integer(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive(text: str) -> int:
    return _integer(text, 1, "a positive integer")


def nonnegative(text: str) -> int:
    return _integer(text, 0, "an integer >= 0")


def png_path(text: str) -> Path:
    """A PNG file to write: ends in .png, in a folder that exists (checked before the work)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; name a file such as "
                                         f"{str(path / 'erf.png')!r}")
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"expected a file name ending in .png, got {text!r}")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(path.parent)!r} does not exist")
    return path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="per-layer shapes, params, MACs, memory, receptive field")
    p.add_argument("model", help="a registered model name")
    p.add_argument("--input", type=input_size, default=None, help="CxHxW (default: the paper's)")
    p.add_argument("--batch", type=positive, default=1)
    p.add_argument("--depth", type=positive, default=None, help="group rows by module path")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--format", choices=("table", "json", "csv", "markdown"), default="table")
    p.add_argument("--wide", action="store_true",
                   help="every column (default: a compact table that fits the terminal)")
    p.add_argument("--input-shape", action="store_true", help="add each layer's input shape")
    p.add_argument("--kernel", action="store_true", help="add conv/pool kernel and stride")
    p.add_argument("--tree", action="store_true",
                   help="show the modules as a tree, to --depth levels (default: all)")
    p.add_argument("--in-chans", type=positive, default=None,
                   help="summarise a variant with this many input channels")
    p.add_argument("--num-classes", type=nonnegative, default=None,
                   help="summarise a variant with this many classes (0: pooled features)")
    p.set_defaults(func=run_summary)

    p = sub.add_parser("rf", help="receptive field per stage")
    p.add_argument("model")
    p.add_argument("--input", type=input_size, default=None)
    p.set_defaults(func=run_rf)

    add_erf_parser(sub)

    p = sub.add_parser("calc", help="the lectures' formulas by hand")
    calc = p.add_subparsers(dest="what", metavar="WHAT", parser_class=type(p))
    calc.required = True
    c = calc.add_parser("conv", help="output size, parameters and MACs of one convolution")
    c.add_argument("--n", type=positive, required=True, help="input size N")
    c.add_argument("--k", type=positive, required=True, help="kernel size F")
    c.add_argument("--s", type=positive, default=1, help="stride S")
    c.add_argument("--p", type=int, default=0, help="padding P")
    c.add_argument("--d", type=positive, default=1, help="dilation D")
    c.add_argument("--c-in", type=positive, default=None)
    c.add_argument("--c-out", type=positive, default=None)
    c.set_defaults(func=run_calc_conv)


def add_erf_parser(sub: argparse._SubParsersAction) -> None:
    """`erf`, here and as `cnnlab viz erf` (the same command in the figures family)."""
    p = sub.add_parser("erf", help="effective receptive field (Luo et al. 2016) of a layer")
    p.add_argument("model")
    p.add_argument("--layer", required=True, help="qualified module name, e.g. features.12")
    p.add_argument("--input", type=input_size, default=None)
    p.add_argument("--samples", type=positive, default=4)
    p.add_argument("--out", type=png_path, default=None, help="write the gradient map as a PNG")
    p.set_defaults(func=run_erf)


def _default_input(name: str, given: tuple[int, int, int] | None) -> tuple[int, int, int]:
    if given is not None:
        return given
    from cnnlab.registry import model_info

    return model_info(name).input_size


def run_summary(args: argparse.Namespace) -> int:
    from cnnlab.registry import create_model

    with torch.device("meta"):
        model = create_model(args.model, in_chans=args.in_chans, num_classes=args.num_classes)
    summary = summarize(model, args.input, args.batch, DTYPES[args.dtype], args.depth)
    if args.format == "json":
        print(render.to_json(summary))
    elif args.format == "csv":
        print(render.to_csv(summary), end="")
    elif args.format == "markdown":
        print(render.to_markdown(summary), end="")
    else:
        # A terminal gets a table that fits it; a pipe gets every cell at its natural width.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        extra = tuple(name for name, on in (("input shape", args.input_shape),
                                            ("kernel", args.kernel), ("stride", args.kernel))
                      if on)
        table = render.fitted_table(summary, width, wide=args.wide, extra=extra, tree=args.tree)
        Console(width=max(width or 0, render.natural_width(table))).print(table)
    return 0


def _local(rf) -> str:  # type: ignore[no-untyped-def]
    return "" if rf is None else render._num(rf.local_size)


def run_rf(args: argparse.Namespace) -> int:
    size = _default_input(args.model, args.input)
    summary = summarize(args.model, size)
    table = Table("stage", "module", "output shape", "RF size", "jump", "start", "local RF",
                  title=f"{args.model} receptive field @ {'x'.join(map(str, size))}",
                  caption=render.GLOBAL_NOTE, caption_justify="left")
    for i, stage in enumerate(summary.stages):
        shape, rf = summary.module_outputs.get(stage["module"], (None, None))
        table.add_row(str(i), stage["module"], "x".join(map(str, shape or ())),
                      *render._rf_cells(rf), _local(rf))
    table.add_row("features", "forward_features", "", *render._rf_cells(summary.receptive_field),
                  _local(summary.receptive_field))
    Console(width=200).print(table)
    for line in summary.unaccounted:
        print(f"UNACCOUNTED: {line}")
    return 0


def run_erf(args: argparse.Namespace) -> int:
    from cnnlab.analysis.erf import effective_receptive_field

    size = _default_input(args.model, args.input)
    theory = summarize(args.model, size).module_outputs.get(args.layer, (None, None))[1]
    erf = effective_receptive_field(args.model, args.layer, size, samples=args.samples)
    print(f"{args.model} {args.layer} @ {'x'.join(map(str, size))}: {erf.mass:.0%} of the "
          f"gradient mass within radius {erf.radius:.1f} px of ({erf.centre[0]:.1f}, "
          f"{erf.centre[1]:.1f}); theoretical field "
          f"{'unknown' if theory is None else render._num(theory.size)} px")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(erf.map.numpy(), cmap="viridis")
        ax.add_patch(plt.Circle(erf.centre[::-1], erf.radius, fill=False, color="white"))
        ax.set_title(f"ERF {args.model} {args.layer}")
        fig.savefig(args.out, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        print(f"wrote {args.out}")
    return 0


def run_calc_conv(args: argparse.Namespace) -> int:
    if (args.c_in is None) != (args.c_out is None):
        raise ValueError("give both --c-in and --c-out for parameters and MACs")
    out = formulas.conv_output_size(args.n, args.k, args.s, args.p, args.d)
    span = args.n + 2 * args.p - args.d * (args.k - 1) - 1
    note = "" if span % args.s == 0 else (
        f" (N+2P-D(F-1)-1 = {span} is not divisible by S = {args.s}: floored, "
        f"the last {span % args.s} input row(s) are never covered)")
    print(f"output: ({args.n} + 2*{args.p} - {args.d}*({args.k}-1) - 1) / {args.s} + 1 = {out}"
          f"{note}")
    if args.c_in is not None:
        params = formulas.conv_params(args.c_in, args.c_out, args.k)
        macs = formulas.conv_macs(args.c_in, args.c_out, args.k, out)
        print(f"output volume: {out}x{out}x{args.c_out} = {out * out * args.c_out:,} values")
        print(f"params: {args.k}*{args.k}*{args.c_in}*{args.c_out} + {args.c_out} = {params:,}")
        print(f"MACs: {out}*{out}*{args.c_out} * {args.k}*{args.k}*{args.c_in} = {macs:,}")
    return 0
