"""The training loop: one function, ``fit``, that trains, evaluates, logs and checkpoints.

The loop draws batches that are already on the device (``cnnlab.data.loader``), sets the
rate from the recipe's pure ``lr_at(step)``, steps the optimiser, and at each epoch's end
evaluates, appends one row to the history, rewrites metrics.jsonl/csv and the curves, and
writes an atomic checkpoint. A non-finite loss stops the run inside that step, before the
bad update, and the last good checkpoint is left as it was.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cnnlab.train import schedules as S
from cnnlab.train import syncbn
from cnnlab.train.checkpoint import (
    CHECKPOINT,
    capture_rng,
    export_safetensors,
    restore_rng,
    save_atomic,
    unwrap,
)
from cnnlab.train.distributed import DistContext, all_reduce_sum, broadcast_buffers
from cnnlab.train.metrics import correct_topk, plot_curves, write_logs
from cnnlab.train.optim import build_optimizer, set_lr
from cnnlab.train.recipes import Recipe, build_schedule, recipe_for_model, total_steps
from cnnlab.train.runfolder import checkpoint_path

__all__ = [
    "CHECKPOINT",
    "EMA",
    "CheckpointWriteError",
    "FitResult",
    "NonFiniteLoss",
    "RunInterrupted",
    "evaluate",
    "fit",
    "prepare_out_dir",
    "run_is_complete",
    "seed_everything",
]

FORMAT = "cnnlab-checkpoint-1"
CHECKPOINT_SECONDS = 300.0  # the default checkpoint interval within an epoch (5 minutes)
# curves.png is redrawn with a checkpoint once this much training time has passed since it was
# last drawn (a drawing costs about a second), and always when the run ends.
CURVES_SECONDS = 60.0


class Loader(Protocol):
    """What the engine needs from a loader (cnnlab.data.loader.DeviceLoader provides it)."""

    def __iter__(self): ...  # yields (x float NCHW, y int64) on the device

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the step that produced it was not applied."""


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and prove it writable now, before any training time is spent."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(
            f"output directory {str(out)!r} cannot be written ({reason}); choose another with --out"
        ) from None
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- pieces ----------------------------------------------------------------------------


class EMA:
    """Exponential moving average of the weights (Polyak averaging; opt-in by ema_decay)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(unwrap(model)).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = unwrap(model)
        ema_p: list[torch.Tensor] = list(self.model.parameters())
        src_p: list[torch.Tensor] = [p.detach() for p in src.parameters()]
        torch._foreach_lerp_(ema_p, src_p, 1.0 - self.decay)
        for b_ema, b in zip(self.model.buffers(), src.buffers(), strict=True):
            b_ema.copy_(b)


def pad_to(x: torch.Tensor, size: tuple[int, int], fill: torch.Tensor) -> torch.Tensor:
    """Centre ``x`` in a (H, W) = ``size`` field of per-channel value ``fill`` (LeNet-5's 28x28
    digits in a 32x32 field, LeCun et al. 1998, Sec. III.A)."""
    n, c, h, w = x.shape
    th, tw = size
    if (h, w) == (th, tw):
        return x
    out = fill.to(x.device, x.dtype).view(1, c, 1, 1).expand(n, c, th, tw).clone()
    top, left = (th - h) // 2, (tw - w) // 2
    out[:, :, top : top + h, left : left + w] = x
    return out


@dataclass
class InputFit:
    """How the dataset's images are brought to the model: identity, or padding to a size."""

    size: tuple[int, int] | None = None
    fill: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is None or self.fill is None:
            return x
        return pad_to(x, self.size, self.fill)


def _main_and_aux(out: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Models with auxiliary classifiers (GoogLeNet, Inception-v3) return several logits in
    training; the first is the main one."""
    if isinstance(out, torch.Tensor):
        return out, []
    items = list(out)
    return items[0], [a for a in items[1:] if isinstance(a, torch.Tensor)]


def _autocast(device: torch.device, amp: str):  # type: ignore[no-untyped-def]
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _state_of(sched: Any) -> dict[str, Any] | None:
    """The observed events of a schedule and of the schedules it wraps."""
    states = {}
    depth = 0
    while sched is not None:
        if hasattr(sched, "state_dict"):
            states[str(depth)] = sched.state_dict()
        sched, depth = getattr(sched, "inner", None), depth + 1
    return states or None


def _load_state_of(sched: Any, states: dict[str, Any] | None) -> None:
    depth = 0
    while sched is not None and states:
        if str(depth) in states:
            sched.load_state_dict(states[str(depth)])
        sched, depth = getattr(sched, "inner", None), depth + 1


def _find(sched: Any, kind: type) -> Any:
    while sched is not None:
        if isinstance(sched, kind):
            return sched
        sched = getattr(sched, "inner", None)
    return None


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = task.fields.get("ips")
        return Text(f"{rate:,.0f} img/s" if rate else "", style="progress.data.speed")


# --- evaluation ------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    input_fit: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    amp: str = "none",
    channels_last: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Loss and top-1/top-5 accuracy (percent) of ``model`` over ``loader``."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    hits = torch.zeros(2, dtype=torch.int64, device=device)
    n = 0
    for x, y in loader:
        x = input_fit(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = _main_and_aux(model(x))[0].float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        hits += torch.stack(correct_topk(logits, y))
        n += y.shape[0]
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluation loader yielded no batches")
    h = hits.tolist()
    return {"loss": loss_sum.item() / n, "top1": 100.0 * h[0] / n, "top5": 100.0 * h[1] / n}


# --- training --------------------------------------------------------------------------


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    out_dir: Path
    checkpoint: Path | None
    weights: Path | None = None
    stopped: str | None = None  # why training stopped early, in one sentence
    diverged: bool = False  # stopped by a NaN/Inf loss (the weights are the last good ones)
    best: Path | None = None  # best.safetensors: the weights of the best epoch so far
    complete: bool = False  # resumed a run that had already done all its training


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; says where the last checkpoint is and how to continue."""

    def __init__(self, out_dir: Path, checkpoint: Path | None, epoch: int, step: int) -> None:
        self.out_dir, self.checkpoint, self.epoch, self.step = out_dir, checkpoint, epoch, step
        if checkpoint is None:
            text = "interrupted before the first checkpoint; nothing of this run was saved"
        else:
            text = (f"interrupted; the last checkpoint is {checkpoint} (epoch {epoch}, step "
                    f"{step:,}); continue with: cnnlab train --resume {out_dir}")
        super().__init__(text)


class CheckpointWriteError(OSError):
    """A checkpoint (or a file written with it) could not be written, e.g. the disk is full."""


def run_is_complete(checkpoint: dict[str, Any], recipe: Recipe) -> bool:
    """Whether ``checkpoint`` has already trained every epoch (or step) ``recipe`` asks for."""
    if checkpoint.get("position"):
        return False
    return int(checkpoint["epoch"]) >= recipe.epochs or bool(
        recipe.max_steps and int(checkpoint["step"]) >= recipe.max_steps)


def _best_split(recipe: Recipe, row: dict[str, Any]) -> str | None:
    split = recipe.best_split
    if split == "auto":
        split = "val" if "val_top1" in row else "test"
    return split if f"{split}_top1" in row else None


def fit(
    model: nn.Module,
    recipe: Recipe,
    train_loader: Loader,
    *,
    out_dir: str | Path,
    model_name: str = "",
    val_loader: Iterable | None = None,
    test_loader: Iterable | None = None,
    device: torch.device | str = "cpu",
    input_fit: Callable[[torch.Tensor], torch.Tensor] | None = None,
    run_info: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    dist_ctx: DistContext | None = None,
    console: Console | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    stop_at_test_top1: float | None = None,
    log_every_s: float = 30.0,
) -> FitResult:
    """Train ``model`` under ``recipe``; everything it writes goes to ``out_dir``.

    ``resume`` is a loaded checkpoint: weights, optimiser, schedule events, RNG states,
    history and the position within the epoch are restored and training continues where
    it stopped, so that on CPU the result is tensor-equal to an uninterrupted run.
    Checkpoints are written at every epoch's end and, within epochs, every
    ``recipe.checkpoint_every`` steps (0: every ``CHECKPOINT_SECONDS``); each one also
    rewrites the logs, model.safetensors, after a better epoch best.safetensors, and
    curves.png (at most every ``CURVES_SECONDS``, and at the end). ``on_step`` (tests) is
    called after every step.
    ``stop_at_test_top1`` ends the run after the first epoch whose test accuracy reaches it
    (time-to-accuracy benchmarks). When the console is not a terminal, a progress line is
    printed every ``log_every_s`` seconds instead of a live bar.
    """
    device = torch.device(device)
    ctx = dist_ctx or DistContext()
    console = console or Console()
    input_fit = input_fit or (lambda x: x)
    recipe = recipe_for_model(model_name, recipe)
    if recipe.amp == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs a CUDA device; on CPU use amp=bf16 or amp=none")
    if resume is not None and run_is_complete(resume, recipe):
        path = checkpoint_path(out_dir)
        return FitResult(list(resume["metrics"]), Path(out_dir),
                         path if path.exists() else None, complete=True)

    model.to(device)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = build_optimizer(model, recipe)
    accum = recipe.accum_steps
    # The loader serves micro-batches; without drop_last a last, shorter group of them is a
    # step of its own.
    keep_partial = not getattr(train_loader, "drop_last", True)
    steps_per_epoch = -(-len(train_loader) // accum) if keep_partial else len(train_loader) // accum
    if steps_per_epoch == 0:
        raise ValueError("the training loader yields no batches (dataset smaller than a batch?)")
    out = prepare_out_dir(out_dir) if ctx.is_main else Path(out_dir)  # after the checks
    schedule = build_schedule(recipe, steps_per_epoch)
    last_step = total_steps(recipe, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.amp == "fp16")
    ema = EMA(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    resumable = hasattr(train_loader, "state_dict") and hasattr(train_loader, "load_state_dict")

    start_epoch, step, history = 0, 0, []
    position: dict[str, Any] | None = None  # where in its epoch the resumed checkpoint was
    best: dict[str, Any] | None = None  # {"split", "epoch", "top1"} of best.safetensors
    if resume is not None:
        unwrap(model).load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        _load_state_of(schedule, resume.get("schedule"))
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        if ema is not None and resume.get("ema") is not None:
            ema.model.load_state_dict(resume["ema"])
        start_epoch, step = int(resume["epoch"]), int(resume["step"])
        history = list(resume["metrics"])
        position = resume.get("position") if resumable else None
        best = resume.get("best")
        restore_rng(resume["rng"])

    plain_bn: dict[str, type[nn.Module]] = {}
    if recipe.sync_bn and ctx.enabled:  # before DDP wraps it
        model, plain_bn = syncbn.convert(model, device)
    train_model: nn.Module = model
    if ctx.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if recipe.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]

    warmup = _find(schedule, S.WarmupUntil)
    plateau = _find(schedule, S.Plateau)
    # Only this run's checkpoints count as "the last good one" (or the one it resumes in out).
    ckpt_file = checkpoint_path(out)
    ckpt_path = ckpt_file if resume is not None and ckpt_file.exists() else None
    saved_at = (start_epoch, step)  # (epoch, step) of the last checkpoint written or resumed
    if resume is not None and ctx.is_main:
        write_logs(history, out)  # drop rows a crashed run logged after its checkpoint
    stopped: str | None = None
    diverged = False
    elapsed0 = position["elapsed_s"] if position else (history[-1]["elapsed_s"] if history
                                                         else 0.0)
    t_start = time.perf_counter() - elapsed0
    t_session, step_session = time.perf_counter(), step
    show = progress and ctx.is_main
    live = show and console.is_terminal
    every_steps = recipe.checkpoint_every
    micro_images = getattr(train_loader, "batch_size", 0) * ctx.world_size  # on all ranks
    step_images = micro_images * accum  # in a full optimiser step
    batch_images = getattr(train_loader, "global_batch_images", None)
    if resume is not None and ctx.is_main:
        _say_if_resharded(console, resume, ctx.world_size, position, micro_images)
    last_ckpt_time = time.perf_counter()
    last_log_time = time.perf_counter()
    curves = {"rows": len(history), "at": time.perf_counter()}  # what curves.png shows, when

    def draw_curves(force: bool) -> None:
        now = time.perf_counter()
        if len(history) > curves["rows"] and (force or now - curves["at"] >= CURVES_SECONDS):
            plot_curves(history, out / "curves.png", title=f"{model_name} · {recipe.name}")
            curves.update(rows=len(history), at=now)

    def state(epoch_done: int, at: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model_name": model_name,
            "model": unwrap(model).state_dict(),
            "ema": ema.model.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "schedule": _state_of(schedule),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": capture_rng(),
            "epoch": epoch_done,
            "step": step,
            "position": at,  # None at an epoch's end
            "best": best,
            "config": recipe.to_dict(),
            "run": dict(run_info or {}),
            "metrics": history,
        }

    def save(epoch_done: int, at: dict[str, Any] | None, new_best: bool) -> None:
        """The checkpoint, then the files derived from it; one line if the disk says no."""
        nonlocal ckpt_path, saved_at
        try:
            save_atomic(state(epoch_done, at), ckpt_file)
        except OSError as exc:
            kept = (f"the previous checkpoint {ckpt_file} (epoch {saved_at[0]}, step "
                    f"{saved_at[1]:,}) is intact" if ckpt_path is not None
                    else "no checkpoint had been written yet")
            raise CheckpointWriteError(
                f"could not write the checkpoint in {out} ({exc.strerror or exc}); {kept}"
            ) from None
        ckpt_path, saved_at = ckpt_file, (epoch_done, step)
        try:
            write_logs(history, out)
            _export(out / "model.safetensors", history[-1]["epoch"] if history else 0)
            if new_best and best is not None:
                _export(out / "best.safetensors", best["epoch"])
            draw_curves(force=False)
        except OSError as exc:
            raise CheckpointWriteError(
                f"could not write the run's files in {out} ({exc.strerror or exc}); the "
                f"checkpoint {ckpt_file} (epoch {epoch_done}, step {step:,}) is intact"
            ) from None

    def _export(path: Path, epoch_done: int) -> Path:
        weights = (ema.model if ema is not None else unwrap(model)).state_dict()
        return export_safetensors(weights, path, metadata={
            "model": model_name, "recipe": recipe.name, "epoch": str(epoch_done),
            "step": str(step)})

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not live,
        transient=False,
    )
    try:
        with bar:
            for epoch in range(start_epoch, recipe.epochs):
                if step >= last_step:
                    break
                train_loader.set_epoch(epoch)
                train_model.train()
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                hits = torch.zeros(2, dtype=torch.int64, device=device)
                seen, first, epoch_s0 = 0, 0, 0.0
                if position is not None:  # continue the epoch the checkpoint was written in
                    at = _resume_batch(position, steps_per_epoch, step_images, micro_images)
                    train_loader.load_state_dict(  # type: ignore[attr-defined]
                        dict(position["loader"], batch=at))
                    first = at // accum
                    if ctx.is_main:  # the checkpoint holds the sums over all ranks
                        loss_sum += position["loss_sum"]
                        hits += position["hits"].to(device)
                        seen = int(position["seen"])
                    epoch_s0 = float(position["epoch_s"])
                    position = None
                # The bar's total is what this epoch will really run (max_steps may end it).
                this_epoch = min(steps_per_epoch, first + last_step - step)
                task = bar.add_task(f"epoch {epoch + 1}/{recipe.epochs}", total=this_epoch,
                                    completed=first, loss="-", ips=None)
                t0 = time.perf_counter() - epoch_s0
                t_epoch_run, seen_run = time.perf_counter(), 0
                lr = schedule.lr_at(step)
                try:
                    for i, micro in enumerate(_steps(train_loader, accum, keep_partial),
                                              start=first):
                        lr = schedule.lr_at(step)
                        set_lr(optimizer, lr)
                        optimizer.zero_grad(set_to_none=True)
                        # A shorter last step: each micro-batch's mean loss is weighted by its
                        # images, so that the DDP average is the mean over the step's images,
                        # as in one process (the ranks' shares may differ by one image).
                        images = step_images if batch_images is None else sum(
                            batch_images(i * accum + j) for j in range(len(micro)))
                        for j, (x, y) in enumerate(micro):
                            x = input_fit(x)
                            if recipe.channels_last:
                                x = x.contiguous(memory_format=torch.channels_last)
                            # DDP all-reduces the gradients in the last micro-batch's backward
                            # only; it decides in the forward pass, which no_sync must cover
                            last = j + 1 == len(micro) or not hasattr(train_model, "no_sync")
                            with nullcontext() if last else train_model.no_sync():
                                with _autocast(device, recipe.amp):
                                    logits, aux = _main_and_aux(train_model(x))
                                    loss = criterion(logits, y)
                                    for a in aux:
                                        loss = loss + recipe.aux_loss_weight * criterion(a, y)
                                if not torch.isfinite(loss):
                                    raise NonFiniteLoss(
                                        f"loss became {loss.item()} at epoch {epoch + 1}, step "
                                        f"{step + 1} (lr {lr:.4g})"
                                    )
                                bs = y.shape[0]
                                part = (loss / accum if images == step_images
                                        else loss * (bs * ctx.world_size / images))
                                scaler.scale(part).backward()
                            loss_sum += loss.detach().double() * bs
                            hits += torch.stack(correct_topk(logits.detach(), y))
                            seen += bs
                            seen_run += bs
                        if recipe.grad_clip > 0:
                            scaler.unscale_(optimizer)
                            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                        scaler.step(optimizer)
                        scaler.update()
                        if ema is not None:
                            ema.update(model)
                        step += 1
                        if warmup is not None and warmup.ended_at is None:
                            # The running training error of this epoch decides when warm-up
                            # ends.
                            warmup.observe_step(step - 1, 100.0 - 100.0 * hits[0].item() / seen)
                        if on_step is not None:
                            on_step(step)
                        now = time.perf_counter()
                        if live:
                            fields: dict[str, Any] = {}
                            if i % 20 == 0 or i + 1 == steps_per_epoch:
                                dt = now - t_epoch_run
                                fields = {"loss": f"{loss.item():.4f}",
                                          "ips": seen_run * ctx.world_size / dt if dt > 0
                                          else None}
                            bar.update(task, advance=1, **fields)
                        elif show and now - last_log_time >= log_every_s:
                            last_log_time = now
                            console.print(_progress_line(
                                epoch + 1, recipe.epochs, step, last_step, loss.item(),
                                seen_run * ctx.world_size / max(now - t_epoch_run, 1e-9),
                                (now - t_session) / max(step - step_session, 1)
                                * (last_step - step)))
                        if step >= last_step:
                            break
                        if i + 1 < steps_per_epoch and resumable and _due(
                                every_steps, step, now - last_ckpt_time, ctx, device):
                            loader_at = train_loader.state_dict()  # type: ignore[attr-defined]
                            save_position = {
                                "loader": loader_at,
                                "steps_per_epoch": steps_per_epoch,
                                "epoch_s": now - t0,
                                "elapsed_s": now - t_start,
                            }
                            if micro_images:  # the position as images of the epoch's
                                # permutation, which any number of ranks can continue from
                                save_position |= {
                                    "samples": int(loader_at["batch"]) * micro_images,
                                    "step_images": step_images}
                            sums = all_reduce_sum(torch.stack([
                                loss_sum, hits[0].double(), hits[1].double(),
                                torch.tensor(float(seen), dtype=torch.float64, device=device)]),
                                ctx).tolist()
                            save_position |= {
                                "loss_sum": torch.tensor(sums[0], dtype=torch.float64),
                                "hits": torch.tensor([int(sums[1]), int(sums[2])]),
                                "seen": int(sums[3]),
                            }
                            if ctx.is_main:
                                save(epoch, save_position, new_best=False)
                            last_ckpt_time = time.perf_counter()
                except NonFiniteLoss as exc:
                    where = (
                        f"the last good checkpoint {ckpt_path} (epoch {saved_at[0]}, step "
                        f"{saved_at[1]:,}) was kept" if ckpt_path is not None
                        else "no checkpoint had been written yet"
                    )
                    stopped = f"{exc}; training stopped before applying that step; {where}"
                    diverged = True
                    if ctx.is_main:
                        console.print(f"[bold red]stopped:[/] {stopped}")
                    break
                epoch_s = time.perf_counter() - t0
                bar.remove_task(task)  # one live bar; each finished epoch leaves a summary line
                if ctx.enabled:
                    # DDP syncs buffers at the start of each forward, so after the last step the
                    # ranks' BN statistics differ; take rank 0's, which the checkpoint holds.
                    broadcast_buffers(unwrap(model), ctx)

                totals = all_reduce_sum(
                    torch.stack([loss_sum, hits[0].double(), hits[1].double(),
                                 torch.tensor(float(seen), dtype=torch.float64, device=device)]),
                    ctx,
                ).tolist()
                n_all = totals[3]
                row: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "step": step,
                    "lr": lr,
                    "train_loss": totals[0] / n_all,
                    "train_top1": 100.0 * totals[1] / n_all,
                    "train_top5": 100.0 * totals[2] / n_all,
                    "train_images": round(n_all),
                }
                eval_model = ema.model if ema is not None else unwrap(model)
                kw: dict[str, Any] = dict(input_fit=input_fit, amp=recipe.amp,
                                          channels_last=recipe.channels_last, device=device)
                final = epoch + 1 == recipe.epochs or step >= last_step
                if val_loader is not None:
                    m = evaluate(eval_model, val_loader, **kw)
                    row.update(val_loss=m["loss"], val_top1=m["top1"], val_top5=m["top5"])
                if test_loader is not None and (recipe.eval_test_every_epoch or final):
                    m = evaluate(eval_model, test_loader, **kw)
                    row.update(test_loss=m["loss"], test_top1=m["top1"], test_top5=m["top5"])
                row["images_per_s"] = seen_run * ctx.world_size / max(
                    time.perf_counter() - t_epoch_run, 1e-9) if first else (
                    n_all / epoch_s if epoch_s > 0 else 0.0)
                row["epoch_s"] = epoch_s
                row["elapsed_s"] = time.perf_counter() - t_start
                history.append(row)
                if plateau is not None:
                    monitor = "val_top1" if recipe.plateau_monitor == "val" and "val_top1" in row \
                        else "train_top1"
                    plateau.observe(step, 100.0 - row[monitor])
                split = _best_split(recipe, row)
                new_best = split is not None and (
                    best is None or best["split"] != split
                    or row[f"{split}_top1"] > best["top1"])
                if new_best:
                    best = {"split": split, "epoch": epoch + 1, "top1": row[f"{split}_top1"]}

                if ctx.is_main:
                    save(epoch + 1, None, new_best)
                    console.print(_epoch_line(row))
                last_ckpt_time = time.perf_counter()
                if stop_at_test_top1 is not None and row.get("test_top1", 0.0) >= \
                        stop_at_test_top1:
                    stopped = (f"reached test top-1 accuracy {row['test_top1']:.2f}% >= "
                               f"{stop_at_test_top1}%")
                    break
    except KeyboardInterrupt:
        raise RunInterrupted(out, ckpt_path, *saved_at) from None
    finally:
        # The DDP wrapper goes now, before the process group (an exception's traceback would
        # keep it alive beyond shutdown(), and freeing it then deadlocks gloo).
        train_model = model
        if plain_bn:
            model = syncbn.revert(model, plain_bn)
    if ctx.is_main and ckpt_path is not None:
        try:
            draw_curves(force=True)
        except OSError as exc:
            raise CheckpointWriteError(
                f"could not draw curves.png in {out} ({exc.strerror or exc}); the checkpoint "
                f"{ckpt_file} (epoch {saved_at[0]}, step {saved_at[1]:,}) is intact") from None

    weights = out / "model.safetensors"
    has_weights = ctx.is_main and ckpt_path is not None and weights.exists()
    best_file = out / "best.safetensors"
    return FitResult(history, out, ckpt_path, weights if has_weights else None, stopped,
                     diverged, best_file if ctx.is_main and best_file.exists() else None)


def _steps(loader: Iterable, accum: int, keep_partial: bool) -> Iterable[list[Any]]:
    """The loader's micro-batches in groups of ``accum``, one group per optimiser step; a
    last group of fewer is a step too with ``keep_partial``, else it is left out (as a
    partial batch is with drop_last)."""
    group: list[Any] = []
    for batch in loader:
        group.append(batch)
        if len(group) == accum:
            yield group
            group = []
    if group and keep_partial:
        yield group


def _resume_batch(position: dict[str, Any], steps_per_epoch: int, step_images: int,
                  micro_images: int) -> int:
    """The loader batch at which to continue the epoch a checkpoint was written in. The
    position is a count of the epoch's images seen by all ranks together, so a run can
    continue on another number of ranks (every rank strides the same permutation) as long
    as its steps hold as many images."""
    if "samples" not in position:  # written before positions were counted in images
        if position["steps_per_epoch"] != steps_per_epoch:
            raise ValueError(
                f"the checkpoint was written in the middle of an epoch of "
                f"{position['steps_per_epoch']} steps, but this run has {steps_per_epoch} "
                "steps an epoch; resume it with the batch size and number of processes it "
                "was written with")
        return int(position["loader"]["batch"])
    if position["step_images"] != step_images:
        raise ValueError(
            f"the checkpoint was written in the middle of an epoch, with steps of "
            f"{position['step_images']} images; this run's steps have {step_images}; resume "
            f"it with --batch-size {position['step_images']} (any number of processes)")
    return int(position["samples"]) // micro_images


def _say_if_resharded(console: Console, resume: dict[str, Any], world_size: int,
                      position: dict[str, Any] | None, micro_images: int) -> None:
    """One log line when a run continues on another number of ranks than it was saved by."""
    before = int(resume.get("run", {}).get("world_size", 1))
    if before == world_size:
        return
    epoch = int(resume["epoch"])
    steps = int(resume["config"].get("accum_steps", 1))
    accum = f": {micro_images * steps} in {steps} accumulation steps" if steps > 1 else ""
    where = (f"continuing epoch {epoch + 1} after {int(position['samples']):,} of its images"
             if position and "samples" in position else f"starting epoch {epoch + 1}")
    console.print(f"world size {before} -> {world_size}: the data is re-sharded over "
                  f"{world_size} process{'es' * (world_size != 1)} "
                  f"({micro_images // world_size} images each per batch{accum}); {where}",
                  markup=False, soft_wrap=True)


def _due(every_steps: int, step: int, since_s: float, ctx: DistContext,
         device: torch.device) -> bool:
    """Whether a checkpoint is due inside the epoch: every ``every_steps`` steps, or (0) once
    CHECKPOINT_SECONDS have passed. Ranks agree: rank 0's clock decides, checked every 50
    steps, so that all ranks take part in the checkpoint's reduction."""
    if every_steps:
        return step % every_steps == 0
    if not ctx.enabled:
        return since_s >= CHECKPOINT_SECONDS
    if step % 50:
        return False
    flag = torch.tensor([float(ctx.is_main and since_s >= CHECKPOINT_SECONDS)], device=device)
    return bool(all_reduce_sum(flag, ctx).item())


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _progress_line(epoch: int, epochs: int, step: int, last_step: int, loss: float,
                   images_per_s: float, eta_s: float) -> str:
    """The plain progress line for logs (stdout not a terminal)."""
    return (f"epoch {epoch}/{epochs} · step {step:,}/{last_step:,} · loss {loss:.4f} · "
            f"{images_per_s:,.0f} img/s · ETA {_clock(eta_s)}")


def _epoch_line(row: dict[str, Any]) -> str:
    """One line per epoch, in the words eval uses: accuracy, with the error in brackets."""
    parts = [f"epoch {row['epoch']}", f"lr {row['lr']:.4g}", f"loss {row['train_loss']:.4f}",
             f"train accuracy {row['train_top1']:.2f}%"]
    for split in ("val", "test"):
        if f"{split}_top1" in row:
            acc = row[f"{split}_top1"]
            parts.append(f"{split} accuracy {acc:.2f}% (error {100 - acc:.2f}%)")
    parts.append(f"{row['images_per_s']:,.0f} img/s")
    return " · ".join(parts)
