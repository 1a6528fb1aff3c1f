"""`cnnlab demo`: the README's main job. Trains LeNet-5 on the bundled MNIST sample.

The model is ``lenet5_modern`` (LeNet-5's widths with ReLU, max-pooling and a linear output)
under the ``fast_cpu`` one-cycle recipe: it passes 97% test accuracy in a few epochs on two
CPU cores. The faithful ``lenet5`` (scaled tanh, trainable subsampling, fixed RBF
prototypes) needs LeCun et al.'s slow schedule (``lecun1998``, 20 passes); under the
demo's one-cycle rate it did not train at all (about 10% test accuracy after 4 epochs).
"""

from __future__ import annotations

import argparse

from rich.console import Console

from cnnlab.cli import add_threads_option, positive

MODEL = "lenet5_modern"
DATA = "mnist-sample"
EPOCHS = 6


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the README demo: train LeNet-5 on the bundled MNIST sample")
    p.add_argument("--out", help="output folder (default runs/demo, or runs/demo-2, ... when "
                   "that holds an earlier demo)")
    p.add_argument("--epochs", type=positive, default=EPOCHS,
                   help=f"passes over the sample (default {EPOCHS})")
    add_threads_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.analysis import summarize
    from cnnlab.analysis.render import rich_table
    from cnnlab.cli.train import summary_table
    from cnnlab.registry import model_info
    from cnnlab.train.run import RunSpec, train
    from cnnlab.train.runfolder import fresh_default

    console = Console()
    info = model_info(MODEL)
    console.rule(f"[bold]cnnlab demo: {MODEL} on {DATA} (10k train / official 10k test)")
    console.print(rich_table(summarize(MODEL, input_size=info.input_size), compact=True))
    spec = RunSpec(model=MODEL, data=DATA, recipe="fast_cpu", epochs=args.epochs,
                   device="cpu", out=args.out or str(fresh_default("runs/demo")))
    result = train(spec, console)
    console.print(summary_table(result))
    if not result.history or "test_top1" not in result.history[-1]:
        console.print(f"[bold red]the demo did not finish: {result.stopped}")
        return 1
    acc = result.history[-1]["test_top1"]
    console.print(
        f"[bold]test accuracy {acc:.2f}%[/] on the 10,000 official MNIST test digits; "
        f"checkpoint, metrics.jsonl and curves.png are in [bold]{result.out_dir}/[/]"
    )
    return 0
