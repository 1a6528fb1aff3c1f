"""`cnnlab export`: write ONNX, TorchScript, safetensors or PT2, checked by its runtime."""

from __future__ import annotations

import argparse
import json

from cnnlab.cli.analysis import input_size
from cnnlab.deploy.exporter import FORMATS, export
from cnnlab.deploy.fuse import fuse_bn
from cnnlab.deploy.source import model_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a model (ONNX checked by ONNX Runtime, TorchScript, ...)",
        description="Export a registered model or a training checkpoint; the file is loaded "
        "back by its runtime and compared with PyTorch before it is kept.",
    )
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT",
                   help="a registered model name, or a checkpoint / run folder")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (checked by ONNX Runtime), torchscript, safetensors or pt2 "
                   "(default onnx)")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--input", type=input_size, default=None, help="CxHxW (default: the paper's)")
    p.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="ONNX exporter (auto: TorchScript-based, then dynamo)")
    p.add_argument("--fuse", action="store_true", help="fold BatchNorm into the convs first")
    p.add_argument("--json", action="store_true", help="print the check as JSON")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    model = model_from(args.model)
    if args.fuse:
        model, report = fuse_bn(model)
        print(report.render().splitlines()[0])
    result = export(model, args.out, args.format, args.input, exporter=args.exporter)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    c, h, w = result.input_size
    print(f"wrote {result.path} ({result.format}, by {result.exporter}, input Nx{c}x{h}x{w})")
    print(f"checked on a batch of {result.check_batch}: max |diff| {result.max_abs_diff:.3g} "
          f"({result.relative_diff:.2g} of the output range), top-1 agrees: {result.top1_agree}")
    for note in result.notes:
        print(f"note: {note}")
    return 0
