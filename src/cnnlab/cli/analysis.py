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
from cnnlab.cli import add_threads_option, at_least, positive

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


MAX_SIDE = 2**31 - 1  # each of C, H, W and the batch: beyond it torch's sizes overflow


def input_size(text: str) -> tuple[int, int, int]:
    """Parse "3x224x224" (CxHxW) or "224" (3x224x224). Two numbers are refused: "3x224" could
    be HxW or C and H, and reading it either way silently would be a guess."""
    parts = text.strip().lower().split("x")
    if not all(re.fullmatch(r"-?\d+", p) for p in parts) or len(parts) not in (1, 3):
        hint = (" (two numbers are ambiguous: write CxHxW, e.g. "
                f"3x{parts[0]}x{parts[1]} for a {parts[0]}x{parts[1]} RGB image)"
                if len(parts) == 2 else "")
        raise argparse.ArgumentTypeError(
            f"must be CxHxW (e.g. 3x224x224) or one side (224 = 3x224x224), got {text!r}{hint}")
    values = [int(v) for v in parts]
    if len(values) == 1:
        values = [3, values[0], values[0]]
    if not all(1 <= v <= MAX_SIDE for v in values):
        raise argparse.ArgumentTypeError(
            f"must have sizes between 1 and {MAX_SIDE:,}, got {text!r}")
    return values[0], values[1], values[2]


nonnegative = at_least(0)


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


SIZE_HELP = "CxHxW, e.g. 3x224x224, or one side (224 = 3x224x224); default: the paper's"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="per-layer shapes, params, MACs, memory, receptive field")
    p.add_argument("model", help="a registered model name")
    p.add_argument("--input", type=input_size, default=None, help=SIZE_HELP)
    p.add_argument("--batch", type=at_least(1, MAX_SIDE), default=1,
                   help="batch size (counts stay per image; default 1)")
    p.add_argument("--depth", type=positive, default=None, help="group rows by module path")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                   help="element type for the memory columns (default fp32)")
    p.add_argument("--format", choices=("table", "json", "csv", "markdown"), default="table",
                   help="output format (default table)")
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
    add_threads_option(p)
    p.set_defaults(func=run_summary)

    p = sub.add_parser("rf", help="receptive field per stage")
    p.add_argument("model", help="a registered model name")
    p.add_argument("--input", type=input_size, default=None, help=SIZE_HELP)
    add_threads_option(p)
    p.set_defaults(func=run_rf)

    add_erf_parser(sub)

    p = sub.add_parser("calc", help="the lectures' formulas by hand")
    calc = p.add_subparsers(dest="what", metavar="WHAT", parser_class=type(p))
    calc.required = True
    c = calc.add_parser("conv", help="output size, parameters and MACs of one convolution")
    c.add_argument("--n", type=positive, required=True, help="input size N")
    c.add_argument("--k", type=positive, required=True, help="kernel size F")
    c.add_argument("--s", type=positive, default=1, help="stride S (default 1)")
    c.add_argument("--p", type=at_least(0), default=0, help="padding P (default 0)")
    c.add_argument("--d", type=positive, default=1, help="dilation D (default 1)")
    c.add_argument("--c-in", type=positive, default=None,
                   help="input channels (with --c-out: parameters and MACs)")
    c.add_argument("--c-out", type=positive, default=None, help="output channels (filters)")
    c.set_defaults(func=run_calc_conv)

    c = calc.add_parser("pool", help="output size of one pooling window")
    c.add_argument("--n", type=positive, required=True, help="input size N")
    c.add_argument("--k", type=positive, required=True, help="window size F")
    c.add_argument("--s", type=positive, default=None, help="stride S (default: F)")
    c.add_argument("--p", type=at_least(0), default=0, help="padding P (default 0)")
    c.add_argument("--ceil", action="store_true",
                   help="round up, as Caffe (and GoogLeNet's pools) do; default: floor")
    c.set_defaults(func=run_calc_pool)

    c = calc.add_parser("rf", help="receptive field of a chain of layers")
    c.add_argument("--layers", type=layer_chain, required=True,
                   help="comma-separated layers, first to last: convK or poolK, with optional "
                        "sS (stride), pP (padding), dD (dilation), e.g. conv3,conv3,conv3 or "
                        "conv11s4,pool3s2,conv5p2; convK has stride 1, poolK stride K")
    c.set_defaults(func=run_calc_rf)


_LAYER = re.compile(r"(conv|pool)(\d+)(?:s(\d+))?(?:p(\d+))?(?:d(\d+))?")


def layer_chain(text: str) -> list[tuple[str, tuple[int, int, int, int]]]:
    """"conv3,pool2" -> [("conv3", (3, 1, 0, 1)), ("pool2", (2, 2, 0, 1))]: (k, s, p, d)."""
    chain = []
    for part in (p.strip().lower() for p in text.split(",")):
        m = _LAYER.fullmatch(part)
        if not m or int(m[2]) < 1 or (m[3] is not None and int(m[3]) < 1) or (
                m[5] is not None and int(m[5]) < 1):
            raise argparse.ArgumentTypeError(
                f"must be layers such as conv3, conv7s2p3, pool2 or pool3s2 "
                f"(K, stride and dilation >= 1), got {part!r} in {text!r}")
        k = int(m[2])
        s = int(m[3]) if m[3] else (k if m[1] == "pool" else 1)
        chain.append((part, (k, s, int(m[4] or 0), int(m[5] or 1))))
    return chain


def add_erf_parser(sub: argparse._SubParsersAction) -> None:
    """`erf`, here and as `cnnlab viz erf` (the same command in the figures family)."""
    p = sub.add_parser("erf", help="effective receptive field (Luo et al. 2016) of a layer")
    p.add_argument("model", help="a registered model name")
    p.add_argument("--layer", required=True, help="qualified module name, e.g. features.12")
    p.add_argument("--input", type=input_size, default=None, help=SIZE_HELP)
    p.add_argument("--samples", type=positive, default=4,
                   help="random inputs to average the gradient over (default 4)")
    p.add_argument("--out", type=png_path, default=None, help="write the gradient map as a PNG")
    add_threads_option(p)
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
    if summary.first_global is not None:
        print(f"every unit sees the whole input from {summary.first_global} on")
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


def _lecture_line(n: int, k: int, s: int, p: int, d: int) -> str:
    """The lectures' (N - F + 2P)/S + 1, with the dilated window F = D(F-1) + 1 when D > 1,
    shown as an exact fraction: when it is not an integer the stride "doesn't fit"."""
    f = d * (k - 1) + 1
    window = str(k) if d == 1 else f"{f} (dilated: {d}*({k}-1)+1)"
    top = n - f + 2 * p
    value = f"{top // s + 1}" if top % s == 0 else (
        f"{top}/{s} + 1 = {top / s + 1:.2f}: not an integer, the stride does not fit")
    return f"lectures: (N - F + 2P)/S + 1 = ({n} - {window} + 2*{p})/{s} + 1 = {value}"


def run_calc_conv(args: argparse.Namespace) -> int:
    if (args.c_in is None) != (args.c_out is None):
        raise ValueError("give both --c-in and --c-out for parameters and MACs")
    out = formulas.conv_output_size(args.n, args.k, args.s, args.p, args.d)
    span = args.n + 2 * args.p - args.d * (args.k - 1) - 1
    note = "" if span % args.s == 0 else (
        f" (N+2P-D(F-1)-1 = {span} is not divisible by S = {args.s}: floored, "
        f"the last {span % args.s} input row(s) are never covered)")
    print(_lecture_line(args.n, args.k, args.s, args.p, args.d))
    print(f"PyTorch: floor((N + 2P - D(F-1) - 1)/S) + 1 = ({args.n} + 2*{args.p} - "
          f"{args.d}*({args.k}-1) - 1) / {args.s} + 1 = {out}{note}")
    if args.c_in is not None:
        params = formulas.conv_params(args.c_in, args.c_out, args.k)
        macs = formulas.conv_macs(args.c_in, args.c_out, args.k, out)
        print(f"output volume: {out}x{out}x{args.c_out} = {out * out * args.c_out:,} values")
        print(f"params: {args.k}*{args.k}*{args.c_in}*{args.c_out} + {args.c_out} = {params:,}")
        print(f"MACs: {out}*{out}*{args.c_out} * {args.k}*{args.k}*{args.c_in} = {macs:,}")
    return 0


def run_calc_pool(args: argparse.Namespace) -> int:
    s = args.k if args.s is None else args.s
    out = formulas.pool_output_size(args.n, args.k, s, args.p, ceil_mode=args.ceil)
    rounding = "ceil" if args.ceil else "floor"
    print(_lecture_line(args.n, args.k, s, args.p, 1))
    print(f"PyTorch ({rounding}): {rounding}((N + 2P - F)/S) + 1 = {rounding}(({args.n} + "
          f"2*{args.p} - {args.k}) / {s}) + 1 = {out}"
          + (" (a last window starting in the padding is dropped)" if args.ceil else ""))
    print("params: 0 (pooling has no weights)")
    return 0


def run_calc_rf(args: argparse.Namespace) -> int:
    table = Table("layer", "K", "S", "P", "D", "RF size", "jump", "start",
                  title="receptive field per layer")
    done: list[tuple[int, int, int, int]] = []
    for name, layer in args.layers:
        done.append(layer)
        rf = formulas.receptive_field(done)
        table.add_row(name, *map(str, layer), str(rf.size), str(rf.jump), f"{rf.start:g}")
    Console(width=120).print(table)
    rf = formulas.receptive_field(done)
    print(f"receptive field: {rf.size}x{rf.size} input pixels, jump {rf.jump} "
          "(per layer: RF += (K-1)*D*jump, then jump *= S; from RF 1, jump 1)")
    return 0
