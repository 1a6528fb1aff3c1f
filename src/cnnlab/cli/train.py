"""`cnnlab train`, `cnnlab eval`, `cnnlab predict`: train with a paper's recipe, evaluate
checkpoints (an ensemble when several), and classify image files."""

from __future__ import annotations

import argparse
import os

from rich.console import Console
from rich.table import Table

from cnnlab.cli import add_threads_option, positive
from cnnlab.train.engine import FitResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model with its paper's recipe")
    p.add_argument("model", nargs="?", help="registered model name (optional with --resume)")
    p.add_argument("--data", required=True, help="dataset name, e.g. mnist-sample, cifar10")
    p.add_argument("--root", help="folder holding the dataset's files")
    p.add_argument("--recipe", help="recipe name (default: the model's own)")
    p.add_argument("--epochs", type=positive, help="passes over the data (default: the recipe's)")
    p.add_argument("--batch-size", type=positive, help="images per step (default: the recipe's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--out", help="output folder (default runs/MODEL-DATA)")
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override recipe fields, e.g. --set lr=0.05 epochs=30")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="image folders: leave out images that do not decode (each is named)")
    add_threads_option(p)
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="top-1/top-5 error of checkpoints (averaged as an ensemble)")
    e.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                   help="checkpoint.pt file(s); several are averaged as an ensemble")
    e.add_argument("--data", required=True, help="dataset name, e.g. mnist, cifar10")
    e.add_argument("--root", help="folder holding the dataset's files")
    e.add_argument("--ten-crop", action="store_true", help="average the 10-crop views")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    add_threads_option(e)
    e.set_defaults(func=run_eval)

    q = sub.add_parser("predict", help="class names and probabilities for image files")
    q.add_argument("checkpoint", help="a checkpoint.pt written by `cnnlab train`")
    q.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files")
    q.add_argument("--topk", type=positive, default=5, help="classes to list per image (default 5)")
    q.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    add_threads_option(q)
    q.set_defaults(func=run_predict)


def summary_table(result: FitResult) -> Table:
    """The final summary: last epoch, best test accuracy, time and where things were written."""
    last = result.history[-1]
    table = Table(title="training summary", show_header=False)
    table.add_row("epochs / steps", f"{last['epoch']} / {last['step']}")
    table.add_row("train loss / top-1", f"{last['train_loss']:.4f} / {last['train_top1']:.2f}%")
    for split in ("val", "test"):
        if f"{split}_top1" in last:
            best = max(r[f"{split}_top1"] for r in result.history if f"{split}_top1" in r)
            table.add_row(
                f"{split} top-1 (error)",
                f"{last[f'{split}_top1']:.2f}% ({100 - last[f'{split}_top1']:.2f}%); "
                f"best {best:.2f}%",
            )
    table.add_row("time", f"{last['elapsed_s']:.1f} s, {last['images_per_s']:,.0f} img/s (last)")
    table.add_row("folder", str(result.out_dir))
    table.add_row("files", "checkpoint.pt, metrics.jsonl, metrics.csv, curves.png"
                  + (", model.safetensors" if result.weights else ""))
    return table


def run_train(args: argparse.Namespace) -> int:
    from cnnlab.train.run import RunSpec, train

    console = Console()
    spec = RunSpec(model=args.model, data=args.data, root=args.root, recipe=args.recipe,
                   epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                   out=args.out, resume=args.resume, overrides=args.overrides,
                   skip_corrupt=args.skip_corrupt)
    result = train(spec, console, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if result.history:
        console.print(summary_table(result))
    elif not result.stopped:
        console.print("nothing to do: the checkpoint has already trained every epoch")
    return 1 if result.diverged else 0


def run_eval(args: argparse.Namespace) -> int:
    from cnnlab.train.inference import evaluate_checkpoints
    from cnnlab.train.run import resolve_device

    r = evaluate_checkpoints(args.checkpoints, args.data, args.root, ten_crop=args.ten_crop,
                             device=resolve_device(args.device))
    view = "10-crop" if r.ten_crop else "1-crop"
    who = f"ensemble of {r.members}" if r.members > 1 else "1 model"
    print(f"{args.data} {r.split} ({r.images} images, {who}, {view}): "
          f"top-1 error {r.top1_error:.2f}%, top-5 error {r.top5_error:.2f}%")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from cnnlab.train.inference import predict_images
    from cnnlab.train.run import resolve_device

    results = predict_images(args.checkpoint, args.images, args.topk,
                             resolve_device(args.device))
    for path, preds in zip(args.images, results, strict=True):
        print(path + ": " + ", ".join(f"{name} {p:.3f}" for name, p in preds))
    return 0
