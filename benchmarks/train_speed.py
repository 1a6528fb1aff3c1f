"""Training speed: cnnlab's engine against a minimal hand-written PyTorch loop, in one run.

Claim (issue 6): on the same model, data and batch the engine trains at >= 0.97x the
images/s of a minimal loop (lenet5 on MNIST; resnet20 on CIFAR-size synthetic data, batch
128); and lenet5_modern reaches 99.0% MNIST test accuracy in about the time a plain loop
(SGD momentum, one-cycle, batch 128, in-memory tensors) needs, data loading included.

Evidence: both loops run alternately in this process (hand, engine, engine, hand, repeated
``--repeats`` times) and the medians are reported. Throughput is the training loop alone
(no evaluation, checkpointing or plotting, for either). The hand loop pre-normalises the
whole dataset once and slices batches out of a permutation; the engine keeps uint8 images
on the device and normalises each batch (cnnlab.data.loader.DeviceLoader), sets the rate
from ``lr_at(step)``, counts top-1/top-5 and checks the loss for NaN every step.

Command (the recorded figures; the machine should be otherwise idle):
    PYTHONPATH=src python benchmarks/train_speed.py --mnist-root ../shared/data/mnist
Smoke run (tiny sizes, writes nothing):
    PYTHONPATH=src python benchmarks/train_speed.py --smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnnlab.data import ImageTensorDataset, load_dataset  # noqa: E402
from cnnlab.data.loader import DeviceLoader  # noqa: E402
from cnnlab.data.transforms import normalize  # noqa: E402
from cnnlab.registry import create_model  # noqa: E402
from cnnlab.train import fit, get_recipe, seed_everything  # noqa: E402
from cnnlab.train.run import RunSpec, check_model_data, train  # noqa: E402
from report import machine, write_section  # noqa: E402

LR = 0.01
ROOT = Path(__file__).resolve().parents[1]


def portable(path: str) -> str:
    """A data path as docs may show it: relative to the project, never this machine's."""
    return os.path.relpath(path, ROOT) if os.path.isabs(path) else path


def _model(model_name: str, ds: ImageTensorDataset):  # type: ignore[no-untyped-def]
    model = create_model(model_name, num_classes=len(ds.classes), in_chans=ds.images.shape[1])
    shape = tuple(ds.images.shape[1:])
    fit_in = check_model_data(model, model_name, data_name="bench", shape=shape,
                              num_classes=len(ds.classes), mean=ds.mean, std=ds.std)
    return model, fit_in


def hand_loop_ips(model_name: str, ds: ImageTensorDataset, batch: int, steps: int) -> float:
    """A minimal loop: normalised tensors in memory, randperm, slice, SGD momentum."""
    seed_everything(0)
    model, fit_in = _model(model_name, ds)
    x_all = fit_in(normalize(ds.images, ds.mean, ds.std))  # pad once (lenet5: 28 -> 32)
    y_all = ds.labels
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    perm = torch.randperm(len(y_all))
    t0 = time.perf_counter()
    for i in range(steps):
        idx = perm[i * batch : (i + 1) * batch]
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def engine_ips(model_name: str, ds: ImageTensorDataset, batch: int, steps: int) -> float:
    """cnnlab's fit for one epoch of exactly ``steps`` batches; its own images/s figure."""
    seed_everything(0)
    model, fit_in = _model(model_name, ds)
    # As `cnnlab train` does: smaller images are padded once in the loader (lenet5: 28 -> 32).
    loader = DeviceLoader(ds, batch, shuffle=True, drop_last=True, pad_to=fit_in.size)
    recipe = dataclasses.replace(get_recipe("fast_cpu"), lr=LR, momentum=0.9, nesterov=False,
                                 weight_decay=0.0, schedule="constant", epochs=1,
                                 batch_size=batch)
    with tempfile.TemporaryDirectory() as out:
        res = fit(model, recipe, loader, out_dir=out, model_name=model_name,
                  progress=False, console=Console(quiet=True))
    return res.history[-1]["images_per_s"]


def throughput(model_name: str, ds: ImageTensorDataset, batch: int, steps: int,
               repeats: int) -> tuple[float, float]:
    ds = ds.subset(torch.arange(steps * batch))
    engine_ips(model_name, ds.subset(torch.arange(2 * batch)), batch, 2)  # warm-up
    hand_loop_ips(model_name, ds, batch, 2)
    hand, engine = [], []
    for _ in range(repeats):  # A B B A, so that drift in machine load affects both alike
        hand.append(hand_loop_ips(model_name, ds, batch, steps))
        engine.append(engine_ips(model_name, ds, batch, steps))
        engine.append(engine_ips(model_name, ds, batch, steps))
        hand.append(hand_loop_ips(model_name, ds, batch, steps))
    return statistics.median(hand), statistics.median(engine)


def synthetic_cifar(n: int) -> ImageTensorDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageTensorDataset(images, labels, [str(i) for i in range(10)], name="synthetic")


# --- time to 99% -----------------------------------------------------------------------


def plain_time_to(target: float, root: str, epochs: int, lr: float) -> tuple[float, int, float]:
    """A plain loop with in-memory tensors: SGD Nesterov momentum 0.9, wd 5e-4, one-cycle,
    batch 128; evaluates after each epoch and stops at ``target``. Data loading included."""
    t0 = time.perf_counter()
    splits = load_dataset("mnist", root)
    tr, te = splits["train"], splits["test"]
    x, y = normalize(tr.images, tr.mean, tr.std), tr.labels
    xt, yt = normalize(te.images, tr.mean, tr.std), te.labels
    seed_everything(0)
    model = create_model("lenet5_modern")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps = len(y) // 128
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.25, anneal_strategy="linear",
        div_factor=25, final_div_factor=1e4, cycle_momentum=False,
    )
    acc = 0.0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(y))
        for i in range(steps):
            idx = perm[i * 128 : (i + 1) * 128]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xt[i : i + 1000]).argmax(1) == yt[i : i + 1000]).sum())
                          for i in range(0, len(yt), 1000))
        acc = 100.0 * correct / len(yt)
        if acc >= target:
            return time.perf_counter() - t0, epoch + 1, acc
    return float("nan"), epochs, acc


def engine_time_to(target: float, root: str, epochs: int, lr: float) -> tuple[float, int, float]:
    """``cnnlab train lenet5_modern --data mnist --recipe fast_cpu`` with the same lr and epochs,
    stopping after the first epoch at ``target``; the whole call, data loading included."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        spec = RunSpec(model="lenet5_modern", data="mnist", root=root, recipe="fast_cpu",
                       epochs=epochs, device="cpu", out=out, overrides=[f"lr={lr}"])
        res = train(spec, Console(quiet=True), progress=False, stop_at_test_top1=target)
    seconds = time.perf_counter() - t0
    last = res.history[-1]
    if last["test_top1"] < target:
        return float("nan"), last["epoch"], last["test_top1"]
    return seconds, last["epoch"], last["test_top1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist-root", help="folder with the four MNIST files (else mnist-sample)")
    ap.add_argument("--steps", type=int, default=100, help="batches per throughput measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4, help="one-cycle length for time-to-99%%")
    ap.add_argument("--lr", type=float, default=0.1, help="one-cycle peak rate")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; print, write nothing")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.repeats = 3, 1

    mnist = load_dataset("mnist" if args.mnist_root else "mnist-sample", args.mnist_root)["train"]
    rows = []
    for label, model_name, ds, steps in (
        # lenet5 steps take ~8 ms, so it gets 4x the steps to time over a few seconds.
        ("lenet5, MNIST (28x28 padded to 32x32)", "lenet5", mnist, 4 * args.steps),
        ("resnet20, synthetic 3x32x32", "resnet20", synthetic_cifar(args.steps * 128),
         args.steps),
    ):
        hand, engine = throughput(model_name, ds, 128, steps, args.repeats)
        rows.append(f"| {label} | 128 | {steps} | {hand:,.0f} | {engine:,.0f} | "
                    f"{engine / hand:.3f} |")
        print(rows[-1], flush=True)

    ttt = []
    if args.mnist_root and not args.smoke:
        for who, fn in (("plain loop", plain_time_to), ("cnnlab engine", engine_time_to)):
            seconds, epochs, acc = fn(99.0, args.mnist_root, args.epochs, args.lr)
            ttt.append(f"| {who} | {epochs} | {acc:.2f} | {seconds:.1f} |")
            print(ttt[-1], flush=True)

    if args.smoke:
        return
    cmd = "PYTHONPATH=src python benchmarks/train_speed.py" + (
        f" --mnist-root {portable(args.mnist_root)}" if args.mnist_root else "")
    body = [
        "## Training speed: engine vs a minimal hand-written loop",
        "",
        f"`{cmd}` (median of {2 * args.repeats} runs each); {machine()}.",
        "",
        "Training loop only (no evaluation, checkpoints or plots in either), SGD momentum 0.9, "
        "constant lr, no augmentation.",
        "",
        "| workload | batch | steps | hand loop img/s | engine img/s | engine / hand |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    if ttt:
        body += [
            "",
            f"Time to 99.0% MNIST test accuracy, lenet5_modern, SGD Nesterov momentum 0.9, "
            f"wd 5e-4, one-cycle to lr {args.lr} over {args.epochs} epochs, batch 128, "
            "evaluated after every epoch; seconds from before reading the IDX files to the "
            "end of the call (the engine's includes its checkpoints, logs and curves).",
            "",
            "| loop | epochs | test top-1 (%) | seconds |",
            "|---|---|---|---|",
            *ttt,
        ]
    write_section("train_speed", "\n".join(body))


if __name__ == "__main__":
    main()
