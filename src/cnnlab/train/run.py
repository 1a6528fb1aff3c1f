"""One training run from names: model + dataset + recipe -> checked set-up -> ``fit``.

Everything that can be wrong with the set-up is checked before the first step: the output
folder must be writable, the model must take the dataset's channels, classes and image
size, and BatchNorm cannot train on batches of one image.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from rich.console import Console

from cnnlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cnnlab.registry import create_model, model_info
from cnnlab.train.checkpoint import load_checkpoint, registered_model
from cnnlab.train.distributed import (
    check_backend,
    check_ranks_agree,
    env_world_size,
    init_from_env,
    shutdown,
)
from cnnlab.train.engine import (
    FitResult,
    InputFit,
    fit,
    prepare_out_dir,
    run_is_complete,
    seed_everything,
)
from cnnlab.train.recipes import (
    Recipe,
    apply_overrides,
    get_recipe,
    parse_overrides,
    scaled_lr,
    scaling_warmup_epochs,
)
from cnnlab.train.runfolder import (
    checkpoint_path,
    claim,
    fresh_default,
    holds_run,
    remove_run_files,
)
from cnnlab.train.syncbn import has_batchnorm

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RunSpec",
    "check_model_data",
    "image_shape",
    "resolve_device",
    "train",
    "train_transform",
]


BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
WORKERS = min(4, os.cpu_count() or 1)  # image-decoding processes for folder datasets


@dataclass
class RunSpec:
    """What ``cnnlab train`` was asked for (None = the recipe's or the checkpoint's)."""

    model: str | None
    data: str | None  # None: the checkpoint's (with resume)
    root: str | None = None
    recipe: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    out: str | None = None
    resume: str | None = None  # a checkpoint or the run folder holding it, or "auto"
    overwrite: bool = False  # replace the run that ``out`` already holds
    overrides: Sequence[str] = field(default_factory=tuple)
    weights: str | None = None  # fine-tune from published weights (cnnlab.train.finetune)
    freeze: str | None = None
    linear_probe: bool = False
    skip_corrupt: bool = False  # image folders: leave out (and name) images that do not decode
    backend: str = "auto"  # torch.distributed backend under torchrun: auto, gloo or nccl
    sync_bn: bool = False  # recipe field sync_bn: SyncBatchNorm under torchrun
    scale_lr: bool = False  # linear lr scaling against the recipe's own batch (Goyal et al.)


def auto_resume(spec: RunSpec) -> RunSpec:
    """``--resume auto``, and every torchrun restart (TORCHELASTIC_RESTART_COUNT > 0) of a run
    with ``--out``: continue from the checkpoint the run folder holds, or start the run there
    if it holds none yet. The checkpoint is found from the folder alone, never from the rank
    or the restart count, so every rank of every restart finds the same one."""
    try:
        restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    except ValueError:
        restarts = 0
    if spec.resume != "auto" and not (restarts > 0 and spec.resume is None and spec.out):
        return spec
    if spec.out is None:
        raise ValueError("--resume auto needs --out RUN: the run folder to continue, or to "
                         "start the run in")
    found = checkpoint_path(spec.out).exists()
    return dataclasses.replace(spec, resume=spec.out if found else None)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def image_shape(dataset: Any) -> tuple[int, int, int]:
    """(C, H, W) of the dataset's images (in-memory: the tensor; folders: the first image)."""
    images = getattr(dataset, "images", None)
    if images is not None:
        return tuple(int(s) for s in images.shape[1:])  # type: ignore[return-value]
    return tuple(int(s) for s in dataset[0][0].shape)  # type: ignore[return-value]


def check_model_data(
    model: nn.Module,
    model_name: str,
    *,
    data_name: str,
    shape: tuple[int, int, int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int | None = None,
) -> InputFit:
    """Raise a one-line ValueError if ``model`` cannot learn from this data; otherwise return
    how its images are brought to the model's input (LeNet-5: 28x28 padded to 32x32)."""
    c, h, w = shape
    in_chans = getattr(model, "in_chans", c)
    if in_chans != c:
        raise ValueError(
            f"{model_name} takes {in_chans}-channel images but {data_name} has {c} channels"
        )
    fixed = getattr(model, "fixed_input_size", None)
    minimum = getattr(model, "min_input_size", (1, 1))
    fit_in = InputFit()
    if fixed is not None and (h, w) != tuple(fixed):
        fh, fw = fixed
        if h > fh or w > fw:
            raise ValueError(
                f"{model_name} takes exactly {fh}x{fw} images but {data_name}'s are {h}x{w}"
            )
        # Centre the smaller images in the model's field on the background (pixel value 0),
        # as LeNet-5 centres MNIST's 28x28 digits in 32x32 (LeCun et al. 1998, Sec. III.A).
        fill = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)])
        fit_in = InputFit((fh, fw), fill)
        h, w = fh, fw
    elif h < minimum[0] or w < minimum[1]:
        raise ValueError(
            f"{model_name} needs images of at least {minimum[0]}x{minimum[1]} but "
            f"{data_name}'s are {h}x{w}; train with --set resize={max(minimum)} (or more) "
            "to enlarge them"
        )
    was = model.training
    model.eval()
    with torch.no_grad():
        probe = torch.zeros(1, c, h, w, device=next(model.parameters()).device)
        out = model(probe)
    model.train(was)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if out.shape[-1] != num_classes:
        raise ValueError(
            f"{model_name} has {out.shape[-1]} output classes but {data_name} has "
            f"{num_classes} classes"
        )
    if batch_size == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                               for m in model.modules()):
        raise ValueError(
            f"batch size 1 cannot train {model_name}: BatchNorm needs more than one value per "
            "channel in training mode; use --batch-size 2 or more"
        )
    return fit_in


def train_transform(recipe: Recipe, shape: tuple[int, int, int], dataset: Any = None
                    ) -> BatchTransform | None:
    """The recipe's augmentation as one batch transform on uint8 images."""
    from cnnlab.data import transforms as T

    _, h, w = shape
    size = (h, w)
    steps: list[BatchTransform] = []
    aug = recipe.augment
    if aug in ("crop_flip", "crop"):
        steps.append(lambda x, g: T.random_crop(x, size, padding=recipe.crop_padding, generator=g))
    if aug == "resized_crop_flip":
        steps.append(lambda x, g: T.random_resized_crop(x, size, generator=g))
    if aug == "scale_jitter_crop_flip":
        # S ~ U[256, 512] for 224 crops (Simonyan & Zisserman Sec. 3.1), scaled to this size.
        lo, hi = round(h * 256 / 224), round(h * 512 / 224)
        steps.append(lambda x, g: T.scale_jitter(x, h, (lo, hi), generator=g))
    if aug in ("crop_flip", "flip", "resized_crop_flip", "scale_jitter_crop_flip"):
        steps.append(lambda x, g: T.random_flip(x, generator=g))
    if recipe.pca_lighting > 0 and shape[0] == 3:
        vals, vecs = T.IMAGENET_PCA if dataset is None else T.rgb_eigen(dataset, 2000)
        steps.append(lambda x, g: T.pca_lighting(x, vals, vecs, recipe.pca_lighting, generator=g))
    if not steps:
        return None

    def transform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for step in steps:
            x = step(x, g)
        return x

    return transform


def micro_batch_size(recipe: Recipe, world_size: int) -> int:
    """Images per rank per forward pass: the recipe's (global) batch split over the ranks and
    the accumulation steps; a one-line error when it does not split evenly."""
    parts = world_size * recipe.accum_steps
    if recipe.batch_size % parts:
        fix = [b for b in (recipe.batch_size // parts * parts, -(-recipe.batch_size // parts) *
                           parts) if b > 0]
        raise ValueError(
            f"the global batch {recipe.batch_size} does not split over {world_size} process"
            f"{'es' * (world_size != 1)} x {recipe.accum_steps} accumulation step"
            f"{'s' * (recipe.accum_steps != 1)}; use --batch-size "
            f"{' or '.join(map(str, fix))} (a multiple of {parts})")
    return recipe.batch_size // parts


def describe(recipe: Recipe) -> str:
    """One line: the recipe, its source and the values that drive it."""
    length = f"{recipe.max_steps:,} steps" if recipe.max_steps else f"{recipe.epochs} epochs"
    opt = recipe.optimizer + (" nesterov" if recipe.nesterov else "")
    lr = f"{recipe.lr:g}"
    if recipe.lr_reference_batch:  # linear scaling (Goyal et al. 2017)
        lr += f" x {recipe.batch_size}/{recipe.lr_reference_batch} = {scaled_lr(recipe):g}"
        if scaling_warmup_epochs(recipe):
            lr += f" after {scaling_warmup_epochs(recipe):g} warm-up epochs"
    return (
        f"recipe {recipe.name} ({recipe.citation}): {opt} lr {lr}, "
        f"{recipe.schedule} schedule, momentum {recipe.momentum:g}, "
        f"weight decay {recipe.weight_decay:g}, batch {recipe.batch_size}, {length}"
    )


def resolve_recipe(spec: RunSpec, checkpoint: dict[str, Any] | None, default: str) -> Recipe:
    if checkpoint is not None:
        recipe = Recipe.from_dict(checkpoint["config"])
        if spec.recipe is not None and spec.recipe != recipe.name:
            raise ValueError(
                f"--recipe {spec.recipe}: the run being resumed uses {recipe.name}; leave "
                "--recipe out (change single values with --set KEY=VALUE)"
            )
    else:
        recipe = get_recipe(spec.recipe or default)
    overrides = parse_overrides(spec.overrides)
    if spec.epochs is not None:
        overrides["epochs"] = spec.epochs
    if spec.scale_lr and "lr_reference_batch" not in overrides:
        # against the batch the recipe's rate was set for, before --batch-size changes it
        overrides["lr_reference_batch"] = recipe.lr_reference_batch or recipe.batch_size
    if spec.batch_size is not None:
        overrides["batch_size"] = spec.batch_size
    if spec.sync_bn:
        overrides["sync_bn"] = True
    return apply_overrides(recipe, overrides)


def _resume_source(spec: RunSpec, checkpoint: dict[str, Any]) -> tuple[str, str | None]:
    """The dataset and root of the run being resumed; a different --data or --root is refused
    (a resumed run on other data would report a half-done run as finished)."""
    run = checkpoint["run"]
    data, root = run.get("data"), run.get("root")
    if not data:
        raise ValueError(f"--resume {spec.resume}: the checkpoint does not say which dataset it "
                         "was trained on (no run.data)")
    if spec.data is not None and spec.data != data:
        raise ValueError(f"--data {spec.data}: the run being resumed was trained on {data}; "
                         "leave --data out to continue it")
    if spec.root is not None and _absolute(spec.root) != _absolute(root):
        raise ValueError(f"--root {spec.root}: the run being resumed read its data from "
                         f"{root or 'the default location'}; leave --root out to continue it")
    return data, root


def _absolute(root: str | None) -> str | None:
    return None if root is None else str(Path(root).resolve())


def _output_folder(spec: RunSpec, model_name: str, data: str) -> tuple[Path, bool]:
    """Where the run writes, and whether the run already there is to be replaced: never into
    a folder that holds another run unless --overwrite says so."""
    if spec.resume is not None:
        own = Path(spec.resume)
        own = own if own.is_dir() else own.parent
        out = Path(spec.out) if spec.out else own
        other = out.resolve() != own.resolve() and holds_run(out)
        if other and not spec.overwrite:
            raise ValueError(f"{out} already holds another run; choose a new folder with "
                             "--out NEW, or replace that run with --overwrite")
        return out, other
    if spec.out is None:
        return fresh_default(Path("runs") / f"{model_name}-{data}"), False
    out = Path(spec.out)
    if holds_run(out) and not spec.overwrite:
        raise ValueError(f"{out} already holds a run; continue it with --resume {out}, choose "
                         "a new folder with --out NEW, or replace it with --overwrite")
    return out, holds_run(out)


def _header(recipe: Recipe, splits: dict[str, Any], device: torch.device, out: Path) -> str:
    """What the run holds out, where it runs and where it writes."""
    if "val" in splits and recipe.val_size:
        val = f"validation: {recipe.val_size:,} training images held out (seed {recipe.seed})"
    elif "val" in splits:
        val = f"validation: the dataset's own val split ({len(splits['val']):,} images)"
    else:
        val = "no validation split held out (--set val_size=N holds N training images out)"
    threads = torch.get_num_threads()
    return (f"{val} · device {device} · {threads} CPU thread{'s' * (threads != 1)} · "
            f"writing {out}")


def _loader(dataset: Any, batch_size: int, **kw: Any) -> Any:
    from cnnlab.data.loader import make_loader

    return make_loader(dataset, batch_size, **kw)


def _folder_sizing(crop: int, short: int | None = None
                   ) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Per image in the workers: shorter side to ``short`` (default the 256/224 ratio of
    the ImageNet papers), then the central ``crop``."""
    from cnnlab.data import transforms as T

    short = short or round(crop * 256 / 224)

    def sample(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return T.center_crop(T.resize(image[None], short), crop)[0]

    return sample


def train(spec: RunSpec, console: Console | None = None, **fit_kw: Any) -> FitResult:
    """Build everything ``spec`` names, check it, and train. Returns ``fit``'s result."""
    console = console or Console()
    spec = auto_resume(spec)
    device = resolve_device(spec.device)
    checkpoint = load_checkpoint(spec.resume, to_resume=True) if spec.resume else None
    if checkpoint is not None:
        registered_model(checkpoint, spec.resume)  # type: ignore[arg-type]
    model_name = spec.model or (checkpoint or {}).get("model_name")
    if not model_name:
        raise ValueError("name a model to train (e.g. `cnnlab train lenet5_modern ...`)")
    if checkpoint is not None and checkpoint.get("model_name") != model_name:
        raise ValueError(
            f"--resume {spec.resume}: the checkpoint holds {checkpoint.get('model_name')!r}, "
            f"not {model_name!r}"
        )
    if checkpoint is not None:
        data, root = _resume_source(spec, checkpoint)
    elif spec.data is None:
        raise ValueError("name the dataset to train on with --data (e.g. --data mnist-sample)")
    else:
        data, root = spec.data, spec.root
    info = model_info(model_name)
    ft = _finetune(spec, checkpoint)
    recipe = resolve_recipe(spec, checkpoint, ft.recipe if ft else info.recipe)
    if checkpoint is not None and run_is_complete(checkpoint, recipe):
        done = Path(spec.resume)  # type: ignore[arg-type]
        return FitResult(list(checkpoint["metrics"]), done if done.is_dir() else done.parent,
                         None, complete=True)
    out, replace_run = _output_folder(spec, model_name, data)
    # The set-up errors a rank can see alone, before it waits for the others.
    check_backend(spec.backend, device)
    micro_batch_size(recipe, env_world_size())
    ctx = init_from_env(device, spec.backend)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    created = _missing_folders(out) if ctx.is_main else []
    try:
        with ExitStack() as hold:
            if ctx.is_main:
                prepare_out_dir(out)
                hold.enter_context(claim(out))
                if replace_run:
                    remove_run_files(out)
            return _train(spec, console, fit_kw, checkpoint=checkpoint, model_name=model_name,
                          data=data, root=root, info=info, recipe=recipe, out=out, ctx=ctx,
                          device=device, ft=ft)
    except BaseException:
        # An error before anything was written leaves no empty output folders behind;
        # rmdir removes only empty ones, so a folder holding earlier results is kept.
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    finally:
        shutdown(ctx)


def _train(spec: RunSpec, console: Console, fit_kw: dict[str, Any], *,
           checkpoint: dict[str, Any] | None, model_name: str, data: str, root: str | None,
           info: Any, recipe: Recipe, out: Path, ctx: Any, device: torch.device,
           ft: Any) -> FitResult:
    from cnnlab.data import ImageTensorDataset, load_dataset

    splits = load_dataset(data, root,
                          **({"val_size": recipe.val_size, "seed": recipe.seed}
                             if recipe.val_size else {}),
                          **({"skip_corrupt": True} if spec.skip_corrupt else {}))
    train_ds = splits["train"]
    for split_name, ds in {id(d): (n, d) for n, d in splits.items()}.values():
        if ctx.is_main and getattr(ds, "skipped", None):
            console.print(f"{split_name}: skipped {len(ds.skipped)} undecodable image(s), "
                          f"e.g. {ds.skipped[0][0]}", markup=False, soft_wrap=True)
    in_memory = isinstance(train_ds, ImageTensorDataset)
    c, h, w = image_shape(train_ds)
    crop = short = None
    if not in_memory:  # folders: bring every image to the model's size in the workers
        crop = recipe.resize or info.input_size[1]
        h = w = crop
    elif recipe.resize:
        h = w = recipe.resize
    mean = list(train_ds.mean) if in_memory else list(IMAGENET_MEAN)
    std = list(train_ds.std) if in_memory else list(IMAGENET_STD)
    classes = list(train_ds.classes)
    if checkpoint is not None:
        mean, std = checkpoint["run"].get("mean", mean), checkpoint["run"].get("std", std)

    seed_everything(recipe.seed)
    num_classes = (checkpoint or {}).get("run", {}).get("num_classes", len(classes))
    in_chans = (checkpoint or {}).get("run", {}).get("in_chans", c)
    if ft is None:
        model = create_model(model_name, num_classes=num_classes, in_chans=in_chans)
    else:  # pretrained: a new head, and the weights' own sizing and normalisation
        model, sizing = _finetune_model(ft, model_name, num_classes, checkpoint)
        mean, std = list(sizing.mean), list(sizing.std)
        if ctx.is_main:
            console.print(f"[dim]{ft.describe()}[/]")
        if not in_memory:
            crop, short = sizing.crop, sizing.resize
            h = w = crop
    if ctx.is_main and (num_classes, in_chans) != (info.num_classes, info.input_size[0]):
        console.print(
            f"[dim]{model_name}: built with num_classes={num_classes}, in_chans={in_chans} "
            f"for {data} (the paper's: {info.num_classes}, {info.input_size[0]})[/]"
        )
    # The same model, recipe and data on every rank, or a one-line error on all of them.
    check_ranks_agree(ctx, {
        "the model": {"name": model_name, "num_classes": num_classes, "in_chans": in_chans,
                      **({"weights": ft.to_run()} if ft is not None else {})},
        **{f"the recipe's {k}": v for k, v in recipe.to_dict().items()},
        "the data": {"name": data, "images": len(train_ds), "classes": classes,
                     "shape": [c, h, w], **{n: len(d) for n, d in splits.items()}},
    })
    if ctx.is_main:
        console.print(f"[bold]{model_name}[/] on {data} · {describe(recipe)}")
        console.print(f"[dim]{_header(recipe, splits, device, out)}[/]")
    if recipe.sync_bn and not has_batchnorm(model) and ctx.is_main:
        print(f"cnnlab: warning: --sync-bn: {model_name} has no BatchNorm layer, so there "
              "are no statistics to synchronise; training goes on as without it",
              file=sys.stderr)
    model.to(device)
    fit_in = check_model_data(
        model, model_name, data_name=data, shape=(c, h, w),
        num_classes=len(classes), mean=mean, std=std,
        batch_size=micro_batch_size(recipe, ctx.world_size),
    )
    common = dict(mean=mean, std=std, device=device, seed=recipe.seed,
                  rank=ctx.rank, world_size=ctx.world_size)
    model_hw = (h, w)
    if crop is not None:
        common |= dict(sample_transform=_folder_sizing(crop, short), num_workers=WORKERS)
    elif recipe.resize:
        common |= dict(resize=(h, w))
    if crop is None and fit_in.size is not None and not recipe.resize:
        # In memory, pad the uint8 images once (0 = background, which is what fit_in's
        # fill normalises to) rather than every batch.
        common |= dict(pad_to=fit_in.size)
        model_hw, fit_in = fit_in.size, InputFit()
    train_loader = _loader(
        train_ds, micro_batch_size(recipe, ctx.world_size), shuffle=True,
        drop_last=recipe.drop_last,
        train_transform=train_transform(recipe, (c, *model_hw),
                                        train_ds if in_memory else None),
        **common,
    )
    _check_last_batch(train_loader, model, model_name, recipe)
    # Every rank evaluates the whole split, so every rank sees the same metrics.
    eval_common = dict(common, rank=0, world_size=1)
    val_loader = (_loader(splits["val"], 256, shuffle=False, **eval_common)
                  if "val" in splits else None)
    # ImageNet-style folders alias "test" to "val" (no public test labels): measure once.
    has_test = "test" in splits and splits.get("test") is not splits.get("val")
    test_loader = (_loader(splits["test"], 256, shuffle=False, **eval_common)
                   if has_test else None)
    run_info = {
        "model": model_name, "data": data, "root": _absolute(root), "classes": classes,
        "num_classes": num_classes, "in_chans": in_chans, "image_size": [c, h, w],
        "mean": mean, "std": std, "world_size": ctx.world_size, "resize": recipe.resize,
    }
    if ft is not None:
        run_info |= {"finetune": ft.to_run(), "model_kwargs": ft.model_kwargs}
    return fit(
        model, recipe, train_loader, out_dir=out, model_name=model_name,
        val_loader=val_loader, test_loader=test_loader, device=device, input_fit=fit_in,
        run_info=run_info, resume=checkpoint, dist_ctx=ctx, console=console, **fit_kw,
    )


def _check_last_batch(loader: Any, model: nn.Module, model_name: str, recipe: Recipe) -> None:
    """Without drop_last the epoch ends with the remainder: refuse at start-up, rather than
    at the first epoch's end, a remainder that would leave a process a BatchNorm batch of
    one image."""
    if loader.drop_last or not has_batchnorm(model):
        return
    if recipe.sync_bn and loader.world_size > 1:
        return  # SyncBatchNorm's statistics span the ranks: the last batch holds >= 2 images
    last = loader.global_batch_images(len(loader) - 1)
    if last // loader.world_size == 1:  # the smallest share (shares differ by at most one)
        who = "the process" if loader.world_size == 1 else "one of the processes"
        step = loader.batch_size * loader.world_size
        raise ValueError(
            f"the last batch of each epoch ({loader.n:,} images mod {step}) would give {who} "
            f"a single image, on which {model_name}'s BatchNorm fails wherever a layer sees one "
            "value per channel; use --set drop_last=true, or another --batch-size")


def _finetune(spec: RunSpec, checkpoint: dict[str, Any] | None) -> Any:
    """The run's fine-tuning set-up (cnnlab.train.finetune.Finetune), or None."""
    from cnnlab.train.finetune import Finetune

    saved = (checkpoint or {}).get("run", {}).get("finetune")
    if saved is not None:
        return Finetune.from_run(saved)
    if spec.weights is None:
        if spec.freeze not in (None, "none") or spec.linear_probe:
            raise ValueError("--freeze and --linear-probe need pretrained --weights")
        return None
    return Finetune(spec.weights, spec.freeze, spec.linear_probe)


def _finetune_model(ft: Any, model_name: str, num_classes: int,
                    checkpoint: dict[str, Any] | None) -> tuple[nn.Module, Any]:
    """The model with its new head (rebuilt without downloading when resuming)."""
    model = ft.rebuild(model_name, num_classes) if checkpoint else ft.build(
        model_name, num_classes)
    if ft.transforms is None:
        raise ValueError(f"--weights {ft.weights}: no evaluation transforms are known for "
                         f"{model_name}'s weights")
    return model, ft.transforms


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing

