"""One training run from names: model + dataset + recipe -> checked set-up -> ``fit``.

Everything that can be wrong with the set-up is checked before the first step: the output
folder must be writable, the model must take the dataset's channels, classes and image
size, and BatchNorm cannot train on batches of one image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from rich.console import Console

from cnnlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cnnlab.registry import create_model, model_info
from cnnlab.train.checkpoint import load_checkpoint
from cnnlab.train.distributed import init_from_env, shutdown
from cnnlab.train.engine import FitResult, InputFit, fit, prepare_out_dir, seed_everything
from cnnlab.train.recipes import Recipe, apply_overrides, get_recipe, parse_overrides

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
    data: str
    root: str | None = None
    recipe: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    out: str | None = None
    resume: str | None = None
    overrides: Sequence[str] = field(default_factory=tuple)
    skip_corrupt: bool = False  # image folders: leave out (and name) images that do not decode


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
            f"{data_name}'s are {h}x{w}"
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


def describe(recipe: Recipe) -> str:
    """One line: the recipe, its source and the values that drive it."""
    length = f"{recipe.max_steps:,} steps" if recipe.max_steps else f"{recipe.epochs} epochs"
    opt = recipe.optimizer + (" nesterov" if recipe.nesterov else "")
    return (
        f"recipe {recipe.name} ({recipe.citation}): {opt} lr {recipe.lr:g}, "
        f"{recipe.schedule} schedule, momentum {recipe.momentum:g}, "
        f"weight decay {recipe.weight_decay:g}, batch {recipe.batch_size}, {length}"
    )


def resolve_recipe(spec: RunSpec, checkpoint: dict[str, Any] | None, default: str) -> Recipe:
    if checkpoint is not None and spec.recipe is None:
        recipe = Recipe.from_dict(checkpoint["config"])
    else:
        recipe = get_recipe(spec.recipe or default)
    overrides = parse_overrides(spec.overrides)
    if spec.epochs is not None:
        overrides["epochs"] = spec.epochs
    if spec.batch_size is not None:
        overrides["batch_size"] = spec.batch_size
    return apply_overrides(recipe, overrides)


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
    from cnnlab.data import ImageTensorDataset, load_dataset

    console = console or Console()
    device = resolve_device(spec.device)
    checkpoint = load_checkpoint(spec.resume) if spec.resume else None
    model_name = spec.model or (checkpoint or {}).get("model_name")
    if not model_name:
        raise ValueError("name a model to train (e.g. `cnnlab train lenet5_modern ...`)")
    if checkpoint is not None and checkpoint.get("model_name") != model_name:
        raise ValueError(
            f"--resume {spec.resume}: the checkpoint holds {checkpoint.get('model_name')!r}, "
            f"not {model_name!r}"
        )
    info = model_info(model_name)
    recipe = resolve_recipe(spec, checkpoint, info.recipe)
    out = Path(spec.out) if spec.out else (
        Path(spec.resume).parent if spec.resume else Path("runs") / f"{model_name}-{spec.data}"
    )
    ctx = init_from_env(device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    created = _missing_folders(out) if ctx.is_main else []
    try:
        if ctx.is_main:
            prepare_out_dir(out)
        splits = load_dataset(spec.data, spec.root,
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
        crop = None
        if not in_memory:  # folders: bring every image to the model's size in the workers
            crop = info.input_size[1]
            h = w = crop
        mean = list(train_ds.mean) if in_memory else list(IMAGENET_MEAN)
        std = list(train_ds.std) if in_memory else list(IMAGENET_STD)
        classes = list(train_ds.classes)
        if checkpoint is not None:
            mean, std = checkpoint["run"].get("mean", mean), checkpoint["run"].get("std", std)

        seed_everything(recipe.seed)
        num_classes = (checkpoint or {}).get("run", {}).get("num_classes", len(classes))
        in_chans = (checkpoint or {}).get("run", {}).get("in_chans", c)
        model = create_model(model_name, num_classes=num_classes, in_chans=in_chans)
        if ctx.is_main and (num_classes, in_chans) != (info.num_classes, info.input_size[0]):
            console.print(
                f"[dim]{model_name}: built with num_classes={num_classes}, in_chans={in_chans} "
                f"for {spec.data} (the paper's: {info.num_classes}, {info.input_size[0]})[/]"
            )
        if ctx.is_main:
            console.print(f"[bold]{model_name}[/] on {spec.data} · {describe(recipe)}")
        model.to(device)
        fit_in = check_model_data(
            model, model_name, data_name=spec.data, shape=(c, h, w),
            num_classes=len(classes), mean=mean, std=std,
            batch_size=recipe.batch_size,
        )
        common = dict(mean=mean, std=std, device=device, seed=recipe.seed,
                      rank=ctx.rank, world_size=ctx.world_size)
        model_hw = (h, w)
        if crop is not None:
            common |= dict(sample_transform=_folder_sizing(crop), num_workers=WORKERS)
        elif fit_in.size is not None:
            # In memory, pad the uint8 images once (0 = background, which is what fit_in's
            # fill normalises to) rather than every batch.
            common |= dict(pad_to=fit_in.size)
            model_hw, fit_in = fit_in.size, InputFit()
        train_loader = _loader(
            train_ds, recipe.batch_size, shuffle=True, drop_last=True,
            train_transform=train_transform(recipe, (c, *model_hw),
                                            train_ds if in_memory else None),
            **common,
        )
        # Every rank evaluates the whole split, so every rank sees the same metrics.
        eval_common = dict(common, rank=0, world_size=1)
        val_loader = (_loader(splits["val"], 256, shuffle=False, **eval_common)
                      if "val" in splits else None)
        # ImageNet-style folders alias "test" to "val" (no public test labels): measure once.
        has_test = "test" in splits and splits.get("test") is not splits.get("val")
        test_loader = (_loader(splits["test"], 256, shuffle=False, **eval_common)
                       if has_test else None)
        run_info = {
            "model": model_name, "data": spec.data, "root": spec.root, "classes": classes,
            "num_classes": num_classes, "in_chans": in_chans, "image_size": [c, h, w],
            "mean": mean, "std": std, "world_size": ctx.world_size,
        }
        return fit(
            model, recipe, train_loader, out_dir=out, model_name=model_name,
            val_loader=val_loader, test_loader=test_loader, device=device, input_fit=fit_in,
            run_info=run_info, resume=checkpoint, dist_ctx=ctx, console=console, **fit_kw,
        )
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


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing

