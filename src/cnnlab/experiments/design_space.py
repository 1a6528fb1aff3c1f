"""design-space: compare design spaces by the error distribution of models sampled from them
(Radosavovic et al. 2020, "Designing Network Design Spaces", Sec. 3.1-3.2).

Claim: a design space is judged by the empirical distribution function (EDF) of the errors of
models sampled from it under one compute budget, F(e) = fraction of models with error < e;
constraining AnyNetX_A (every stage free) to shared bottleneck ratios and group widths
(AnyNetX_B, AnyNetX_C) and to widths that never shrink from stage to stage (AnyNetX_D) makes
the space far smaller and its EDF no worse (the paper finds D better).

The two spaces sampled here are AnyNetX_A and AnyNetX_D (shared b and g, w_1 <= w_2 <= w_3
<= w_4; depths stay free, which AnyNetX_E would constrain next). Both are built by
``cnnlab.models.anynet``: a stride-2 3x3 stem, four stages of X blocks (1x1, grouped 3x3,
1x1, residual; each stage's first block strided), global pooling and a linear layer.

Ranges: the paper's (4 stages, d_i <= 16, w_i <= 1024 in multiples of 8, b_i in {1, 2, 4},
g_i in {1, 2, 4, ..., 32}, stem 32, 360-400M flops at 224x224) scaled down to 28x28 digits:
d_i in 1..4, w_i in {8, 16, ..., 64}, b_i in {1, 2, 4}, g_i in {1, 2, 4, 8}, stem 8, and a
MACs band of 350k-450k per 28x28 image (around the median, about 420k, of AnyNetX_A's valid
draws; the paper's band, too, is narrow). Sampling is uniform over each space's valid
configurations in the band: one seeded stream of
draws per space (seed 0 for A, 1 for D), a draw the builder refuses (w/b not a multiple of g)
or that falls outside the band is skipped, so the first N models of a larger N are the same.
MACs are the analyser's, counted on meta tensors.

Budgets: tiny: 2 models per space, stages of depth 1 and width 8 or 16, 64 images, 1 epoch
(tests).
quick: 32 models per space, 5,000 images, 1 epoch of batch 64 (78 SGD steps), 1,000 test images
(27 minutes on one thread of a 2-core machine at load 10-14; docs/experiments.md has the run).
paper: the paper's n = 500 models per space, the whole training set, the paper's 10 epochs.
``--samples N`` changes the number of models per space; finished models are reused.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from cnnlab.experiments.base import Context, Experiment, Outcome, short_recipe

SPEC = Experiment(
    name="design-space",
    claim="AnyNetX_D (shared bottleneck ratio and group width, non-decreasing widths) is no "
          "worse than the unconstrained AnyNetX_A: compare their error EDFs",
    paper="Radosavovic et al. 2020, Sec. 3.1-3.2 (error EDFs of AnyNetX_A...E, n = 500, "
          "10 epochs, 360-400MF)",
    budgets={"tiny": {"samples": 2, "train": 64, "test": 64, "epochs": 1, "batch": 32,
                      "max_depth": 1, "max_width": 16, "macs": [40_000, 70_000]},
             "quick": {"samples": 32, "train": 5000, "test": 1000, "epochs": 1, "batch": 64,
                       "max_depth": 4, "max_width": 64, "macs": [350_000, 450_000]},
             "paper": {"samples": 500, "train": None, "test": None, "epochs": 10, "batch": 128,
                       "max_depth": 4, "max_width": 64, "macs": [350_000, 450_000]}},
)

SPACES = ("AnyNetX_A", "AnyNetX_D")
SEEDS = {"AnyNetX_A": 0, "AnyNetX_D": 1}
STEM_WIDTH = 8
WIDTH_STEP = 8  # widths are multiples of 8, as in the paper
BOTTLENECK_RATIOS = (1, 2, 4)
GROUP_WIDTHS = (1, 2, 4, 8)
STAGES = 4
DRAWS_PER_MODEL = 50  # a band that keeps fewer than 1 draw in 50 is refused, not looped on


@dataclass(frozen=True)
class Ranges:
    """The per-stage choices of AnyNetX scaled to digits (the module docstring says how)."""

    max_depth: int = 4
    max_width: int = 64

    @property
    def depths(self) -> range:
        return range(1, self.max_depth + 1)

    @property
    def widths(self) -> range:
        return range(WIDTH_STEP, self.max_width + 1, WIDTH_STEP)


@dataclass(frozen=True)
class Sampled:
    """One model of a space: its stages (depth, width, group width, bottleneck ratio) and the
    analyser's MACs and parameters at the dataset's input size."""

    stages: tuple[tuple[int, int, int, int], ...]
    macs: int
    params: int

    @property
    def key(self) -> str:
        """A short name for its run folder, stable across processes."""
        return hashlib.sha1(repr(self.stages).encode()).hexdigest()[:8]


def draw(space: str, rng: random.Random, ranges: Ranges) -> tuple[tuple[int, int, int, int],
                                                                    ...]:
    """One draw of ``space``'s four stages. AnyNetX_A: every stage's d, w, g, b free.
    AnyNetX_D: one b and one g for all stages and widths that never shrink; drawn like A
    (same choices) and redrawn until the widths are in order, so each ordered configuration
    is as likely as any other."""
    if space == "AnyNetX_A":
        return tuple((rng.choice(ranges.depths), rng.choice(ranges.widths),
                      rng.choice(GROUP_WIDTHS), rng.choice(BOTTLENECK_RATIOS))
                     for _ in range(STAGES))
    if space == "AnyNetX_D":
        b, g = rng.choice(BOTTLENECK_RATIOS), rng.choice(GROUP_WIDTHS)
        while True:
            widths = [rng.choice(ranges.widths) for _ in range(STAGES)]
            if widths == sorted(widths):
                return tuple((rng.choice(ranges.depths), w, g, b) for w in widths)
    raise ValueError(f"unknown design space {space!r}; choose one of {', '.join(SPACES)}")


def space_size(space: str, ranges: Ranges) -> int:
    """Configurations in ``space`` before the builder's divisibility rule and the MACs band:
    AnyNetX_A (d w g b)^4 per stage choices; AnyNetX_D one b and g, d^4, and the
    non-decreasing width sequences, C(w + 3, 4). (The paper's AnyNetX_A: (16 128 3 6)^4, about
    10^18.)"""
    d, w, g, b = (len(ranges.depths), len(ranges.widths), len(GROUP_WIDTHS),
                  len(BOTTLENECK_RATIOS))
    if space == "AnyNetX_A":
        return (d * w * g * b) ** STAGES
    if space == "AnyNetX_D":
        return b * g * d**STAGES * math.comb(w + STAGES - 1, STAGES)
    raise ValueError(f"unknown design space {space!r}; choose one of {', '.join(SPACES)}")


def build(stages: Sequence[Sequence[int]], in_chans: int = 1, num_classes: int = 10
          ) -> torch.nn.Module:
    from cnnlab.models import anynet

    return anynet(list(stages), stem_width=STEM_WIDTH, num_classes=num_classes,
                  in_chans=in_chans)


def count(stages: Sequence[Sequence[int]], image: tuple[int, int, int], num_classes: int = 10
          ) -> tuple[int, int]:
    """(MACs, params) of the model with these stages, by the analyser on meta tensors;
    ValueError when the builder refuses the combination."""
    from cnnlab.analysis.summary import summarize

    with torch.device("meta"):
        model = build(stages, image[0], num_classes)
    s = summarize(model, image)
    return int(s.total_macs), int(s.total_params)


def sample_space(space: str, n: int, *, seed: int, ranges: Ranges, macs: Sequence[int],
                 image: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
                 max_draws: int | None = None) -> tuple[list[Sampled], dict[str, int]]:
    """The first ``n`` models of ``space`` whose MACs lie in [macs[0], macs[1]], from the
    seeded stream of draws; also how many draws were made, refused and out of the band.
    ValueError after ``max_draws`` draws (default 50 n + 500) without n models."""
    max_draws = max_draws or DRAWS_PER_MODEL * n + 500
    rng = random.Random(seed)
    lo, hi = macs
    stats = {"draws": 0, "invalid": 0, "outside_budget": 0}
    found: list[Sampled] = []
    while len(found) < n:
        if stats["draws"] >= max_draws:
            raise ValueError(f"{space}: only {len(found)} of {n} models in {max_draws:,} draws "
                             f"have {lo:,}-{hi:,} MACs; widen the band")
        stats["draws"] += 1
        stages = draw(space, rng, ranges)
        try:
            m, p = count(stages, image, num_classes)
        except ValueError:  # the width after the bottleneck is not a multiple of g
            stats["invalid"] += 1
            continue
        if not lo <= m <= hi:
            stats["outside_budget"] += 1
            continue
        found.append(Sampled(stages, m, p))
    return found, stats


def edf(errors: Sequence[float], at: Sequence[float]) -> list[float]:
    """F(e) = fraction of ``errors`` below e, at each e of ``at`` (Radosavovic et al. 2020,
    Sec. 3.1)."""
    return [sum(x < e for x in errors) / len(errors) for e in at]


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest vertical gap between the two EDFs (Kolmogorov-Smirnov statistic). Both are
    constant between the pooled values, so the pooled values and +inf are every piece."""
    at = sorted({*a, *b}) + [math.inf]
    return max(abs(fa - fb) for fa, fb in zip(edf(a, at), edf(b, at), strict=True))


def ks_critical(n: int, m: int, alpha: float = 0.05) -> float:
    """The gap two samples of sizes n and m exceed with probability ``alpha`` when drawn from
    one distribution (the asymptotic two-sample bound, c(alpha) sqrt((n + m) / (n m)))."""
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


def verdict(errors_a: Sequence[float], errors_d: Sequence[float]) -> str:
    """"better"/"worse" (D against A) when the EDFs differ by more than the 5% critical gap,
    else "indistinguishable" (this N cannot tell them apart)."""
    if ks_distance(errors_a, errors_d) <= ks_critical(len(errors_a), len(errors_d)):
        return "indistinguishable"
    return "better" if _mean(errors_d) < _mean(errors_a) else "worse"


def run(ctx: Context) -> Outcome:
    st = ctx.settings
    train_ds, test_ds = ctx.datasets(st["train"], st["test"])
    image = tuple(int(v) for v in train_ds.images.shape[1:])
    classes = len(train_ds.classes)
    ranges = Ranges(st["max_depth"], st["max_width"])
    recipe = short_recipe("design-space", epochs=st["epochs"], batch_size=st["batch"])
    spaces: dict[str, dict[str, Any]] = {}
    for space in SPACES:
        models, stats = sample_space(space, st["samples"], seed=SEEDS[space], ranges=ranges,
                                     macs=st["macs"], image=image, num_classes=classes)
        ctx.log(f"{space}: {len(models)} models in {stats['draws']} draws")
        rows = []
        for i, m in enumerate(models):
            key = f"{ctx.budget}-{space}-{i:03d}-{m.key}"
            run = ctx.train(key, lambda m=m: build(m.stages, image[0], classes), recipe,
                            train_ds, test_ds, model_name="anynet")
            last = run.history[-1]
            rows.append({**asdict(m), "run": key, "steps": last["step"],
                         "test_error": 100 - last["test_top1"],
                         "train_error": 100 - last["train_top1"]})
        errors = [r["test_error"] for r in rows]
        spaces[space] = {"n": len(rows), "mean_error": _mean(errors), "min_error": min(errors),
                         "median_error": _median(errors), "size": space_size(space, ranges),
                         "models": rows, **stats}
    ea, ed = ([r["test_error"] for r in spaces[s]["models"]] for s in SPACES)
    ks, crit, found = ks_distance(ea, ed), ks_critical(len(ea), len(ed)), verdict(ea, ed)
    ctx.figure(_figure(spaces, st["macs"], ctx.data), "design_space")
    steps = spaces["AnyNetX_A"]["models"][0]["steps"]
    numbers = {"spaces": spaces, "ks_distance": ks, "ks_critical_5pct": crit,
               "mean_error_d_minus_a": _mean(ed) - _mean(ea), "verdict": found,
               "ranges": {"depth": [1, ranges.max_depth],
                          "width": [WIDTH_STEP, ranges.max_width, WIDTH_STEP],
                          "bottleneck_ratio": list(BOTTLENECK_RATIOS),
                          "group_width": list(GROUP_WIDTHS), "stem_width": STEM_WIDTH,
                          "stages": STAGES},
               "macs_budget": list(st["macs"]), "seeds": SEEDS, "train_images": len(train_ds),
               "test_images": len(test_ds), "steps_per_model": steps,
               "recipe": recipe.to_dict()}
    a, d = spaces["AnyNetX_A"], spaces["AnyNetX_D"]
    table = "\n".join(f"| {s} | {v['n']} | {v['mean_error']:.2f} | {v['median_error']:.2f} | "
                      f"{v['min_error']:.2f} | {v['draws']:,} |" for s, v in spaces.items())
    diff = d["mean_error"] - a["mean_error"]
    reading = {
        "indistinguishable": "this budget is **too small to tell** the two spaces apart: the "
        f"largest gap between their EDFs, {ks:.2f}, is below the {crit:.2f} that two samples "
        f"of one distribution exceed 5% of the time, and AnyNetX_D's mean error is "
        f"{abs(diff):.2f} points {'lower' if diff < 0 else 'higher'} than AnyNetX_A's, "
        "within that noise",
        "better": f"AnyNetX_D's EDF lies **above** AnyNetX_A's by more than chance (largest "
        f"gap {ks:.2f} > {crit:.2f}, the 5% critical gap): the constrained space is no worse, "
        "it is better",
        "worse": f"AnyNetX_D's EDF lies **below** AnyNetX_A's by more than chance (largest gap "
        f"{ks:.2f} > {crit:.2f}): at this budget the constrained space is worse",
    }[found]
    shows = (
        f"{a['n']} models per space, each with {st['macs'][0]:,}-{st['macs'][1]:,} MACs per "
        f"image, trained {steps} SGD steps on {len(train_ds):,} {ctx.data} images and tested "
        f"on {len(test_ds):,}:\n\n| space | N | mean error (%) | median | min | draws |\n"
        f"|---|---|---|---|---|---|\n{table}\n\nAnyNetX_A holds {a['size']:,} configurations, "
        f"AnyNetX_D {d['size']:,}. Mean error AnyNetX_D minus AnyNetX_A: {diff:+.2f} points; "
        f"{reading}.")
    versus = (
        "Radosavovic et al. sample n = 500 models per space at 360-400M flops and train each "
        "10 epochs on ImageNet. They find that sharing the bottleneck ratio (AnyNetX_B) and "
        "the group width (AnyNetX_C) leaves the EDF unchanged while shrinking the space, and "
        "that non-decreasing widths (AnyNetX_D) improve it substantially; this run compares "
        "A with D directly (B and C are the steps between them) on digits.")
    limits = (
        f"{a['n']} models per space, {steps} steps each, one seed per model: on digits the "
        "errors after so short a training mostly measure how fast a net starts to learn, and "
        "the KS test at this N only detects large differences between the EDFs. The paper's "
        "n = 500 and 10 epochs on the whole training set is the paper budget (a GPU "
        "machine's work).")
    return Outcome(numbers, shows, versus, limits)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _figure(spaces: dict[str, dict[str, Any]], macs: Sequence[int], data: str):  # -> Figure
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (space, v) in enumerate(spaces.items()):
        errors = sorted(r["test_error"] for r in v["models"])
        n = len(errors)
        # F(e) = fraction with error < e steps up by 1/n just after each model's error
        xs = [0.0, *errors, 100.0]
        ys = [0.0, *((k + 1) / n for k in range(n)), 1.0]
        left.step(xs, ys, where="post", color=f"C{i}", lw=2,
                  label=f"{space} [{v['min_error']:.1f} | {v['mean_error']:.1f}] n={v['n']}")
        right.scatter([r["macs"] / 1e3 for r in v["models"]],
                      [r["test_error"] for r in v["models"]], color=f"C{i}", s=14, label=space)
    every = [r["test_error"] for v in spaces.values() for r in v["models"]]
    left.set_xlim(max(0.0, min(every) - 2), min(100.0, max(every) + 2))
    left.set_xlabel("test error (%)")
    left.set_ylabel("cumulative prob.  F(e)")
    left.set_title(f"error EDF on {data}; legend: [min | mean] error", fontsize=9)
    left.legend(fontsize=8, loc="lower right")
    left.grid(alpha=0.3)
    right.set_xlabel("MACs per image (thousands)")
    right.set_ylabel("test error (%)")
    right.set_title(f"every sampled model, {macs[0] / 1e3:g}k-{macs[1] / 1e3:g}k MACs",
                    fontsize=9)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle("Radosavovic et al. 2020: AnyNetX_A (free stages) vs AnyNetX_D (shared b "
                 "and g, widths non-decreasing)", fontsize=9)
    fig.tight_layout()
    return fig
