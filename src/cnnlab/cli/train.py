"""`cnnlab train`, `cnnlab eval`, `cnnlab predict`: train with a paper's recipe, evaluate
checkpoints (an ensemble when several), and classify image files."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from cnnlab.cli import add_threads_option, positive
from cnnlab.train.engine import FitResult

if TYPE_CHECKING:
    from cnnlab.train.inference import EvalResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model with its paper's recipe")
    p.add_argument("model", nargs="?", help="registered model name (optional with --resume)")
    p.add_argument("--data", help="dataset name, e.g. mnist-sample, cifar10 (with --resume: "
                   "the checkpoint's)")
    p.add_argument("--root", help="folder holding the dataset's files (with --resume: the "
                   "checkpoint's)")
    p.add_argument("--recipe", help="recipe name (default: the model's own)")
    p.add_argument("--epochs", type=positive, help="passes over the data (default: the recipe's)")
    p.add_argument("--batch-size", type=positive, help="images per step (default: the recipe's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--out", help="output folder (default runs/MODEL-DATA, or runs/MODEL-DATA-2, "
                   "... when that holds a run)")
    p.add_argument("--resume", metavar="RUN", help="run folder (or its checkpoint.pt) to "
                   "continue; model, data and recipe come from its checkpoint; auto: continue "
                   "--out's checkpoint if it has one, else start there (torchrun restarts do "
                   "this by themselves)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out already holds")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override recipe fields, e.g. --set lr=0.05 epochs=30")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="torch.distributed backend under torchrun (default auto: NCCL on "
                   "CUDA, gloo on CPU; see docs/distributed.md)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: BatchNorm statistics over the global batch "
                   "(SyncBatchNorm); the weight files hold plain BatchNorm (recipe field sync_bn)")
    p.add_argument("--scale-lr", action="store_true",
                   help="linear learning-rate scaling (Goyal et al. 2017): lr x batch / the "
                   "recipe's own batch, warmed up linearly from lr over 5 epochs (recipe fields "
                   "lr_reference_batch, lr_scaling_warmup_epochs)")
    p.add_argument("--weights", help="fine-tune from published weights (DEFAULT, IMAGENET1K_V1, "
                   "...) or a weights file: new head, the weights' transforms, recipe finetune")
    p.add_argument("--freeze", choices=("none", "backbone"),
                   help="with --weights: train the new head alone (BN stays in eval mode)")
    p.add_argument("--linear-probe", action="store_true",
                   help="with --weights: a linear classifier on frozen features")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="image folders: leave out images that do not decode (each is named)")
    add_threads_option(p)
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="top-1/top-5 error of checkpoints (averaged as an ensemble)")
    e.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                   help="checkpoint files or run folders; several are averaged as an ensemble")
    e.add_argument("--data", required=True, help="dataset name, e.g. mnist, cifar10")
    e.add_argument("--root", help="folder holding the dataset's files")
    e.add_argument("--ten-crop", action="store_true", help="average the 10-crop views")
    e.add_argument("--confusion", metavar="PNG", help="also draw the confusion matrix to PNG")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    add_threads_option(e)
    e.set_defaults(func=run_eval)

    q = sub.add_parser("predict", help="class names and probabilities for image files")
    q.add_argument("checkpoint", help="checkpoint file or run folder (a model name with "
                   "--weights)")
    q.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, or folders of them (unreadable images are skipped)")
    q.add_argument("--topk", type=positive, default=5, help="classes to list per image (default 5)")
    q.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    q.add_argument("--weights", help="published weights (DEFAULT, IMAGENET1K_V1, ...; see "
                   "`cnnlab weights list`) or a weights file; CHECKPOINT is then a model name")
    add_threads_option(q)
    q.set_defaults(func=run_predict)


def summary_table(result: FitResult) -> Table:
    """The final summary: last epoch, best accuracy, time and where things were written."""
    last = result.history[-1]
    table = Table(title="training summary", show_header=False)
    table.add_row("epochs / steps", f"{last['epoch']} / {last['step']}")
    table.add_row("train loss / top-1 accuracy",
                  f"{last['train_loss']:.4f} / {last['train_top1']:.2f}%")
    for split in ("val", "test"):
        if f"{split}_top1" in last:
            best = max(r[f"{split}_top1"] for r in result.history if f"{split}_top1" in r)
            table.add_row(
                f"{split} top-1 accuracy (error)",
                f"{last[f'{split}_top1']:.2f}% ({100 - last[f'{split}_top1']:.2f}%); "
                f"best {best:.2f}%",
            )
    table.add_row("time", f"{last['elapsed_s']:.1f} s, {last['images_per_s']:,.0f} img/s (last)")
    table.add_row("folder", str(result.out_dir))
    table.add_row("files", "checkpoint.pt, metrics.jsonl, metrics.csv, curves.png"
                  + (", model.safetensors" if result.weights else "")
                  + (", best.safetensors" if result.best else ""))
    return table


def run_train(args: argparse.Namespace) -> int:
    from cnnlab.train.run import RunSpec, train

    console = Console()
    spec = RunSpec(model=args.model, data=args.data, root=args.root, recipe=args.recipe,
                   epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                   out=args.out, resume=args.resume, overwrite=args.overwrite,
                   overrides=args.overrides, weights=args.weights, freeze=args.freeze,
                   linear_probe=args.linear_probe,
                   skip_corrupt=args.skip_corrupt, backend=args.backend,
                   sync_bn=args.sync_bn, scale_lr=args.scale_lr)
    result = train(spec, console, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if result.complete:
        last = result.history[-1] if result.history else {"epoch": 0, "step": 0}
        console.print(f"nothing to do: the run in {result.out_dir} is already complete "
                      f"({last['epoch']} epochs, {last['step']:,} steps); nothing was changed. "
                      "To train further, resume with more --epochs (or --set max_steps=N)")
        return 0
    if result.history:
        console.print(summary_table(result))
    return 1 if result.diverged else 0


def _accuracy(top1: float, top5: float) -> str:
    """The words train and eval share: accuracy, with the error in brackets."""
    return (f"top-1 accuracy {top1:.2f}% (error {100 - top1:.2f}%), "
            f"top-5 accuracy {top5:.2f}% (error {100 - top5:.2f}%)")


def run_eval(args: argparse.Namespace) -> int:
    from cnnlab.train.inference import evaluate_checkpoints
    from cnnlab.train.run import resolve_device

    r = evaluate_checkpoints(args.checkpoints, args.data, args.root, ten_crop=args.ten_crop,
                             device=resolve_device(args.device))
    view = "10-crop" if r.ten_crop else "1-crop"
    who = f"ensemble of {r.members}" if r.members > 1 else "1 model"
    print(f"{args.data} {r.split} ({r.images} images, {who}, {view}): "
          + _accuracy(r.top1, r.top5))
    print(_per_class_text(r))
    if args.confusion:
        from cnnlab.train.metrics import plot_confusion

        plot_confusion(r.confusion, r.classes, args.confusion,
                       title=f"{args.data} {r.split}: top-1 accuracy {r.top1:.2f}%")
        print(f"confusion matrix drawn to {args.confusion}")
    return 0


def _per_class_text(r: EvalResult) -> str:
    """Per-class top-1 accuracy and, for up to 20 classes, the confusion matrix."""
    width = max(len("class"), *(len(c) for c in r.classes))
    lines = [f"{'class':<{width}}  images  top-1 accuracy"]
    lines += [f"{name:<{width}}  {n:>6}  {acc:6.2f}%" for name, n, acc in r.per_class()]
    if len(r.classes) <= 20:
        cell = max(5, *(len(str(v)) + 1 for row in r.confusion for v in row))
        lines.append("confusion matrix (rows: true class, columns: predicted)")
        lines.append(" " * width + "".join(f"{c[:cell - 1]:>{cell}}" for c in r.classes))
        lines += [f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row)
                  for name, row in zip(r.classes, r.confusion, strict=True)]
    else:
        lines.append(f"({len(r.classes)} classes: the confusion matrix is drawn by --confusion)")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    import sys

    from cnnlab.train.inference import predict_images
    from cnnlab.train.run import resolve_device

    def skipped(path: str, reason: str) -> None:
        print(f"cnnlab: warning: {reason}; skipped", file=sys.stderr)

    if args.weights:  # a model with published (ImageNet) weights, not a training checkpoint
        from cnnlab.deploy.classify import predict_pretrained

        results = list(zip(args.images, predict_pretrained(
            args.checkpoint, args.weights, args.images, args.topk,
            resolve_device(args.device)), strict=True))
    else:
        results = predict_images(args.checkpoint, args.images, args.topk,
                                 resolve_device(args.device), on_skip=skipped)
    for path, preds in results:
        print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in preds))
    return 0
