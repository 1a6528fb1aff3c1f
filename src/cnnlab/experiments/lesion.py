"""lesion: residual networks behave like ensembles of shallow paths (Veit, Wilber & Belongie
2016, Fig. 3 and Fig. 6a).

Claim: deleting any single residual block from a trained ResNet at test time costs little
accuracy, while deleting a single layer of a plain network of the same depth destroys it; a
ResNet of n blocks is a collection of 2^n paths whose lengths follow the binomial
distribution B(n, 1/2), so most paths are much shorter than the network.

Deleting a block keeps only its shortcut: a post-activation block's output becomes
ReLU(shortcut(x)), which for an identity shortcut is x itself (x is already a ReLU output);
a downsampling block keeps its strided, zero-padded shortcut. A plain block has no path
around it, so only its shape-preserving blocks can be deleted, each replaced by the identity.
The path-length distribution is counted exactly by walking the model's blocks (each block
with a shortcut doubles the paths: through the branch, +1 length, or around it).

Budgets: tiny: resnet20/plain20 on 32 images, 1 epoch (tests). quick: 1,500 images, 3
epochs, 500 test images (a few minutes on one CPU thread). paper: resnet110/plain110 (Veit et
al.'s 54-block net) on the whole training set with he2016_cifar.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.experiments.base import Context, Experiment, Outcome, cifar_padding

SPEC = Experiment(
    name="lesion",
    claim="deleting one residual block at test time barely hurts a ResNet but deleting one "
          "layer of a plain net destroys it; path lengths follow B(n, 1/2)",
    paper="Veit, Wilber & Belongie 2016, Fig. 3 (lesion) and Fig. 6a (path lengths)",
    budgets={"tiny": {"depth": 20, "train": 32, "test": 32, "epochs": 1, "batch": 16,
                      "max_steps": None},
             "quick": {"depth": 20, "train": 1500, "test": 500, "epochs": 3, "batch": 32,
                       "max_steps": None},
             "paper": {"depth": 110, "train": None, "test": None, "epochs": 183, "batch": 128,
                       "max_steps": 64000}},
)


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks of a CIFAR ResNet/plain net in order (``layerK.i``)."""
    return [(f"{stage}.{i}", block) for stage in ("layer1", "layer2", "layer3")
            for i, block in enumerate(getattr(model, stage))]


def path_length_counts(model: nn.Module) -> list[int]:
    """Number of input-to-output paths of each length (in residual branches passed through),
    counted over the model's own blocks: a block with a shortcut lets each path go through
    its branch or around it; a block without one (a plain block) must be passed."""
    counts = [1]
    for _, block in residual_blocks(model):
        through = [0, *counts]
        around = [*counts, 0] if getattr(block, "residual", False) else [0] * (len(counts) + 1)
        counts = [a + b for a, b in zip(through, around, strict=True)]
    return counts


def binomial_counts(n: int) -> list[int]:
    return [math.comb(n, k) for k in range(n + 1)]


def _delete(block: nn.Module) -> torch.utils.hooks.RemovableHandle:
    def skip(module: nn.Module, inputs: tuple, _out: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        if not module.residual:
            return x
        return F.relu(x if module.downsample is None else module.downsample(x))

    return block.register_forward_hook(skip)


def deletable(block: nn.Module) -> bool:
    """A residual block always (its shortcut stays); a plain block only if it keeps shapes."""
    if getattr(block, "residual", False):
        return True
    conv = block.conv1
    return conv.stride == (1, 1) and conv.in_channels == block.conv2.out_channels


@torch.no_grad()
def lesion_errors(model: nn.Module, loader) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Test error (%) with each deletable block removed in turn ("none": intact)."""
    from cnnlab.train import evaluate

    out = {"none": 100 - evaluate(model, loader)["top1"]}
    for name, block in residual_blocks(model):
        if not deletable(block):
            continue
        handle = _delete(block)
        try:
            out[name] = 100 - evaluate(model, loader)["top1"]
        finally:
            handle.remove()
    return out


def run(ctx: Context) -> Outcome:
    from cnnlab.data.loader import make_loader
    from cnnlab.experiments.degradation import recipe_for
    from cnnlab.registry import create_model

    st = ctx.settings
    train_ds, test_ds = ctx.datasets(st["train"], st["test"])
    c = train_ds.images.shape[1]
    pad = cifar_padding(train_ds)
    recipe = replace(recipe_for(ctx), warmup_lr=0.0)  # no warm-up for these short runs
    if ctx.budget == "paper":
        recipe = recipe_for(ctx)  # resnet110's warm-up at 0.01, as the paper
    classes = len(train_ds.classes)
    loader = make_loader(test_ds, 500, shuffle=False, mean=train_ds.mean, std=train_ds.std,
                         device=ctx.device, pad_to=pad)
    errors, counts = {}, {}
    for kind in ("resnet", "plain"):
        name = f"{kind}{st['depth']}"
        run = ctx.train(f"{ctx.budget}-{name}", lambda n=name: create_model(
            n, num_classes=classes, in_chans=c), recipe, train_ds, test_ds, pad_to=pad,
            model_name=name)
        errors[name] = lesion_errors(run.model, loader)
        counts[name] = path_length_counts(run.model)
    res, plain = f"resnet{st['depth']}", f"plain{st['depth']}"
    n = len(counts[res]) - 1
    binom = binomial_counts(n)
    ref = create_model("resnet110")
    counts_110 = path_length_counts(ref)
    ctx.figure(_figure(errors, res, plain, counts_110), "lesion")

    def worst(name: str) -> float:
        return max(v for k, v in errors[name].items() if k != "none")

    def mean_del(name: str) -> float:
        vals = [v for k, v in errors[name].items() if k != "none"]
        return sum(vals) / len(vals)

    numbers = {"test_error_after_deleting": errors, "path_length_counts": counts,
               "binomial_counts": binom, "resnet110_path_length_counts": counts_110,
               "paths_equal_binomial": counts[res] == binom,
               "mean_path_length": sum(k * v for k, v in enumerate(counts[res])) / 2**n,
               "resnet110_mean_path_length": sum(k * v for k, v in enumerate(counts_110))
               / 2 ** (len(counts_110) - 1),
               "train_images": len(train_ds), "test_images": len(test_ds),
               "recipe": recipe.to_dict()}
    shows = (
        f"Intact test errors: {res} {errors[res]['none']:.2f}%, {plain} "
        f"{errors[plain]['none']:.2f}%. Deleting one block of {res} ({len(errors[res]) - 1} "
        f"blocks, each in turn) gives a mean error of {mean_del(res):.2f}% (worst "
        f"{worst(res):.2f}%); deleting one of the {len(errors[plain]) - 1} shape-preserving "
        f"blocks of {plain} gives {mean_del(plain):.2f}% (worst {worst(plain):.2f}%). "
        f"{res} has {n} residual blocks, so 2^{n} = {2**n:,} paths; their lengths counted over "
        f"the model's blocks equal C({n}, k) exactly (mean length {n / 2:g}); ResNet-110's 54 "
        f"blocks give 2^54 paths, mean length 27, while the net is 54 blocks deep.")
    versus = (
        "Veit et al. (Fig. 3, CIFAR-10, ResNet-110 and a 15-layer VGG) find that removing a "
        "single residual block leaves the error close to the intact net's, except for the "
        "downsampling blocks, while removing any layer of VGG drops it to chance. Compare the "
        f"two mean errors above: {mean_del(res):.2f}% vs {mean_del(plain):.2f}%. The binomial "
        "path-length distribution is their Fig. 6a, reproduced exactly for ResNet-110.")
    limits = (
        "A short training of a 20-layer net on digits: the paper's net has 54 blocks, so each "
        "deletion removes a smaller share of the paths than here; one seed, no confidence "
        "intervals. The paper's gradient analysis (Fig. 6b-c, effective paths of 5-17 blocks) "
        "is not reproduced.")
    return Outcome(numbers, shows, versus, limits)


def _figure(errors: dict, res: str, plain: str, counts_110: list[int]):  # -> Figure
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, colour in ((res, "C0"), (plain, "C3")):
        blocks = [k for k in errors[name] if k != "none"]
        a.plot(blocks, [errors[name][k] for k in blocks], marker="o", color=colour,
               label=f"{name}, one block deleted")
        a.axhline(errors[name]["none"], color=colour, ls=":", lw=1,
                  label=f"{name} intact {errors[name]['none']:.1f}%")
    a.set_ylabel("test error (%)")
    a.set_xlabel("deleted block")
    a.tick_params(axis="x", rotation=60, labelsize=7)
    a.set_title("Veit et al. Fig. 3: deleting single blocks at test time", fontsize=9)
    a.legend(fontsize=7)
    n = len(counts_110) - 1
    b.bar(range(n + 1), [v / 2**n for v in counts_110], color="C0")
    b.set_xlabel("path length (residual branches passed)")
    b.set_ylabel("fraction of paths")
    b.set_title(f"Fig. 6a: ResNet-110, {n} blocks, B({n}, 1/2)", fontsize=9)
    fig.tight_layout()
    return fig
