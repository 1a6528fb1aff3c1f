"""The papers' training recipes as frozen dataclasses, and ``--set key=value`` overrides.

One ``Recipe`` per paper, citing the section it comes from. Where a paper leaves a value
unstated, ``unstated`` names the fields filled from elsewhere and ``source`` says from where,
so nothing reads as more faithful than it is. Every ``ModelInfo.recipe`` names one of these.

Lengths: ``epochs`` always; ``max_steps`` when the paper counts iterations (ResNet's 64k).
Milestones are in ``milestone_unit`` ("epoch" or "step"); :func:`build_schedule` turns the
recipe into a pure ``lr_at(step)``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from cnnlab.train import schedules as S

__all__ = [
    "RECIPES",
    "RULES",
    "Recipe",
    "Rule",
    "apply_overrides",
    "build_schedule",
    "field_problem",
    "get_recipe",
    "list_recipes",
    "parse_overrides",
    "recipe_for_model",
]

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("constant", "multistep", "exponential", "plateau", "cosine", "poly", "onecycle")
AUGMENTS = ("none", "crop_flip", "flip", "crop", "resized_crop_flip", "scale_jitter_crop_flip")


# --- valid values ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A recipe field's valid values: its type and an interval (``low``/``high``, open where
    marked), or a set of choices; ``optional`` allows None, ``length`` fixes a tuple's size."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    many: bool = False  # a tuple of such values
    length: int | None = None

    def describe(self) -> str:
        if self.choices:
            text = f"one of {', '.join(self.choices)}"
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = "text"
        else:
            what = "an integer" if self.kind is int else "a finite number"
            text = what + self._interval()
        if self.many:
            count = f"{self.length} values" if self.length else "a comma-separated list"
            text = f"{count}, each {text}"
        return text + (" (or none)" if self.optional else "")

    def _interval(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return (f" in {'(' if self.low_open else '['}{_num(lo)}, {_num(hi)}"
                    f"{')' if self.high_open else ']'}")
        if lo is not None:
            return f" {'>' if self.low_open else '>='} {_num(lo)}"
        if hi is not None:
            return f" {'<' if self.high_open else '<='} {_num(hi)}"
        return ""

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.many:
            return (isinstance(value, tuple) and all(self._allows_one(v) for v in value)
                    and (self.length is None or len(value) == self.length))
        return self._allows_one(value)

    def _allows_one(self, value: Any) -> bool:
        if self.kind is bool or self.kind is str:
            return isinstance(value, self.kind) and (not self.choices or value in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float
                                                     else int):
            return False
        if not math.isfinite(value):
            return False
        lo, hi = self.low, self.high
        if lo is not None and (value <= lo if self.low_open else value < lo):
            return False
        return hi is None or (value < hi if self.high_open else value <= hi)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False, many: bool = False, length: int | None = None) -> Rule:
    return Rule(float, low, high, low_open, high_open, many=many, length=length)


def _integer(low: int, high: int | None = None, *, optional: bool = False) -> Rule:
    return Rule(int, low, high, optional=optional)


_FRACTION = _number(0, 1, high_open=True)  # [0, 1): decays, momenta, smoothing
_POSITIVE = _number(0, low_open=True)
_NON_NEGATIVE = _number(0)
_BOOL, _TEXT = Rule(bool), Rule(str)

# Every field of Recipe, checked by Recipe.__post_init__ (recipes, --set and checkpoints alike).
RULES: Mapping[str, Rule] = types.MappingProxyType({
    "name": _TEXT, "citation": _TEXT,
    "optimizer": Rule(str, choices=OPTIMIZERS), "lr": _POSITIVE, "momentum": _FRACTION,
    "nesterov": _BOOL, "weight_decay": _NON_NEGATIVE, "no_decay_1d": _BOOL,
    "betas": _number(0, 1, high_open=True, many=True, length=2), "alpha": _FRACTION,
    "eps": _POSITIVE,
    "batch_size": _integer(1), "epochs": _integer(1), "max_steps": _integer(1, optional=True),
    "schedule": Rule(str, choices=SCHEDULES), "milestones": _number(0, many=True),
    "milestone_unit": Rule(str, choices=("epoch", "step")),
    "gamma": _number(0, 1, low_open=True), "factors": _number(0, low_open=True, many=True),
    "decay_every": _POSITIVE, "plateau_patience": _integer(0),
    "plateau_monitor": Rule(str, choices=("val", "train")), "plateau_max_drops": _integer(0),
    "final_lr": _NON_NEGATIVE, "onecycle_pct": _number(0, 1, low_open=True, high_open=True),
    "warmup_epochs": _NON_NEGATIVE, "warmup_lr": _NON_NEGATIVE,
    "warmup_until_error": _number(0, 100), "warmup_max_steps": _integer(1, optional=True),
    "warmup_models": Rule(str, many=True),
    "label_smoothing": _FRACTION, "grad_clip": _NON_NEGATIVE, "aux_loss_weight": _NON_NEGATIVE,
    "ema_decay": _FRACTION,
    "val_size": _integer(0), "augment": Rule(str, choices=AUGMENTS), "crop_padding": _integer(0),
    "pca_lighting": _NON_NEGATIVE, "eval_test_every_epoch": _BOOL,
    "seed": _integer(0, 2**63 - 1), "amp": Rule(str, choices=("none", "bf16", "fp16")),
    "channels_last": _BOOL, "compile": _BOOL,
    "checkpoint_every": _integer(0), "resize": _integer(0, 4096),
    "accum_steps": _integer(1), "drop_last": _BOOL, "sync_bn": _BOOL,
    "lr_reference_batch": _integer(0), "lr_scaling_warmup_epochs": _NON_NEGATIVE,
    "best_split": Rule(str, choices=("auto", "val", "test")),
    "backbone_lr_scale": _NON_NEGATIVE,
    "unstated": Rule(str, many=True), "source": _TEXT,
})


def field_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not valid for recipe field ``name`` (None when it is)."""
    rule = RULES.get(name)
    if rule is None or rule.allows(value):  # a field without a rule: the tests flag it
        return None
    shown = list(value) if isinstance(value, tuple) else value
    return f"{name} must be {rule.describe()}, got {shown!r}"


@dataclass(frozen=True)
class Recipe:
    name: str
    citation: str  # paper and section the values come from
    # optimiser
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    no_decay_1d: bool = False  # skip weight decay on 1-d tensors (BN, biases)
    betas: tuple[float, ...] = (0.9, 0.999)  # AdamW
    alpha: float = 0.99  # RMSprop's smoothing ("decay" in TensorFlow)
    eps: float = 1e-8
    # length and batch
    batch_size: int = 128
    epochs: int = 10
    max_steps: int | None = None
    # schedule
    schedule: str = "constant"
    milestones: tuple[float, ...] = ()
    milestone_unit: str = "epoch"
    gamma: float = 0.1
    factors: tuple[float, ...] = ()  # piecewise multipliers, one per phase (multistep)
    decay_every: float = 1.0  # epochs, for "exponential"
    plateau_patience: int = 5
    plateau_monitor: str = "val"  # "val" or "train" error
    plateau_max_drops: int = 3
    final_lr: float = 0.0  # cosine
    onecycle_pct: float = 0.25
    warmup_epochs: float = 0.0  # linear warm-up
    warmup_lr: float = 0.0  # constant warm-up rate (ResNet-110); 0 = none
    warmup_until_error: float = 80.0
    warmup_max_steps: int | None = None
    warmup_models: tuple[str, ...] = ()  # warmup_lr applies only to these models
    backbone_lr_scale: float = 1.0  # fine-tuning: the backbone's rate relative to the new head's
    # regularisation and loss
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global L2 norm; 0 = off
    aux_loss_weight: float = 0.3  # for models that return auxiliary logits in training
    ema_decay: float = 0.0  # 0 = off
    # data
    val_size: int = 0  # images held out of train as a validation split
    augment: str = "none"
    crop_padding: int = 4
    pca_lighting: float = 0.0
    eval_test_every_epoch: bool = True
    resize: int = 0  # bring the images to resize x resize first (AlexNet on 28x28 digits); 0 = off
    # engine options
    seed: int = 0
    amp: str = "none"  # "none" | "bf16" | "fp16"
    channels_last: bool = False
    compile: bool = False
    # a checkpoint every N optimiser steps as well as at every epoch's end; 0 = every
    # CHECKPOINT_SECONDS (5 minutes) of training, so that no more than that is ever lost
    checkpoint_every: int = 0
    # gradient accumulation: each optimiser step sums the gradients of accum_steps micro-batches
    # of batch_size / accum_steps images, the same update as one batch of batch_size
    accum_steps: int = 1
    # leave out each epoch's last partial (global) batch, so every step has batch_size images;
    # false (the default): the remainder is a last, smaller step, so that every image is seen
    # once per epoch (cnnlab.data.loader says how it is sharded over ranks)
    drop_last: bool = False
    # under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm), not each
    # rank's share of it
    sync_bn: bool = False
    # linear learning-rate scaling (Goyal et al. 2017, Sec. 2.1-2.2): lr x batch_size /
    # lr_reference_batch, reached by a linear warm-up from lr over lr_scaling_warmup_epochs
    # epochs (their 5); 0 = off
    lr_reference_batch: int = 0
    lr_scaling_warmup_epochs: float = 5.0
    best_split: str = "auto"  # best.safetensors by "val" or "test" top-1; auto: val if held out
    # honesty about provenance
    unstated: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = field_problem(f.name, getattr(self, f.name))
            if problem:
                raise ValueError(f"recipe {self.name}: {problem}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"recipe {self.name}: milestones must be increasing, "
                             f"got {list(self.milestones)}")
        if self.factors and len(self.factors) != len(self.milestones) + 1:
            raise ValueError(
                f"recipe {self.name}: factors needs one value per phase, "
                f"{len(self.milestones) + 1} for {len(self.milestones)} milestones, "
                f"got {len(self.factors)}"
            )
        if self.batch_size % self.accum_steps:
            raise ValueError(f"recipe {self.name}: batch_size {self.batch_size} is not divisible "
                             f"by accum_steps {self.accum_steps}; each micro-batch must hold "
                             "the same number of images")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = dict(_BEFORE_THE_FIELD)
        values |= {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**values)


# What a checkpoint written before a field existed did, where that differs from the field's
# default now: those runs always left out the last partial batch, and resume so.
_BEFORE_THE_FIELD: Mapping[str, Any] = types.MappingProxyType({"drop_last": True})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_R: dict[str, Recipe] = {}


def _add(recipe: Recipe) -> None:
    _R[recipe.name] = recipe


_add(Recipe(
    name="lecun1998",
    citation="LeCun, Bottou, Bengio, Haffner 1998, Sec. III.A-C and Appendix C",
    # 20 passes; global rate 0.0005 for 2 passes, 0.0002 for 3, 0.0001 for 3, 0.00005 for 4,
    # 0.00001 after (Sec. III.C): kept here as the relative factors of the schedule.
    # Deviations: the paper updates after every pattern with stochastic diagonal
    # Levenberg-Marquardt (per-weight steps eta / (mu + h_kk), App. C). Plain SGD on single
    # patterns runs at ~200 img/s on a CPU core (1.2M steps: ~2 hours) and at the largest
    # SDLM step (eta/mu = 0.025) it diverged on mnist-sample; mini-batches of 16 at lr 0.01
    # (the largest of 0.002/0.01/0.05 that trained on mnist-sample) are used instead.
    optimizer="sgd", lr=0.01, momentum=0.0, batch_size=16, epochs=20,
    schedule="multistep", milestones=(2, 5, 8, 12), factors=(1.0, 0.4, 0.2, 0.1, 0.02),
    unstated=("optimizer", "lr", "batch_size"),
    source="SGD on mini-batches of 16 in place of per-pattern SDLM; lr chosen on mnist-sample",
))
_add(Recipe(
    name="krizhevsky2012",
    citation="Krizhevsky, Sutskever, Hinton 2012, Sec. 4.1 and 5",
    optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=90,
    schedule="plateau", plateau_max_drops=3, augment="resized_crop_flip", pca_lighting=0.1,
    unstated=("plateau_patience", "augment"),
    source="patience not stated; 224 crops of the 256 image approximated by resized crops",
))
_add(Recipe(
    name="zeiler2014",
    citation="Zeiler & Fergus 2014, Sec. 3",
    optimizer="sgd", lr=0.01, momentum=0.9, batch_size=128, epochs=70,
    schedule="plateau", augment="crop_flip",
    unstated=("weight_decay", "plateau_patience"),
    source="the paper anneals the rate 'manually' on a plateau and states no weight decay",
))
_add(Recipe(
    name="simonyan2014",
    citation="Simonyan & Zisserman 2015, Sec. 3.1",
    optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256, epochs=74,
    schedule="plateau", plateau_max_drops=3, augment="scale_jitter_crop_flip",
    unstated=("plateau_patience",),
))
_add(Recipe(
    name="lin2014_cifar",
    citation="Lin, Chen, Yan 2014, Sec. 4.1 (training as Krizhevsky et al. 2012)",
    # "lowered by a scale of 10 ... repeated once such that the final learning rate is 1% of
    # the initial value": two drops, on the training accuracy.
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, epochs=150,
    schedule="plateau", plateau_monitor="train", plateau_max_drops=2, augment="crop_flip",
    unstated=("lr", "weight_decay", "epochs"),
    source="the paper lowers the rate by 10 when training accuracy stops improving; "
    "the numeric values are not stated",
))
_add(Recipe(
    name="szegedy2014",
    citation="Szegedy et al. 2015 (GoogLeNet), Sec. 6",
    # "asynchronous SGD with 0.9 momentum, fixed learning rate schedule (decreasing the
    # learning rate by 4% every 8 epochs)"; auxiliary losses weighted by 0.3 (Sec. 5).
    optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=2e-4, batch_size=128, epochs=250,
    schedule="exponential", gamma=0.96, decay_every=8, aux_loss_weight=0.3,
    augment="resized_crop_flip", ema_decay=0.9999,
    unstated=("lr", "weight_decay", "batch_size", "epochs", "ema_decay"),
    source="Polyak averaging is named but not its rate; the numeric values are not stated",
))
_add(Recipe(
    name="ioffe2015",
    citation="Ioffe & Szegedy 2015, Sec. 4.2.1-4.2.2 (BN-x5)",
    # BN-Inception: learning rate x5 of Inception's 0.0015, decay 6x faster, dropout removed,
    # L2 reduced 5x, photometric distortions reduced.
    optimizer="sgd", lr=0.0075, momentum=0.9, weight_decay=4e-5, batch_size=32, epochs=100,
    schedule="exponential", gamma=0.96, decay_every=8 / 6, augment="resized_crop_flip",
    unstated=("weight_decay", "batch_size", "epochs"),
    source="Inception's L2 is not stated, so 'reduced by a factor of 5' has no base value",
))
_add(Recipe(
    name="szegedy2016",
    citation="Szegedy et al. 2016 (Inception-v3), Sec. 7-8",
    optimizer="rmsprop", lr=0.045, alpha=0.9, eps=1.0, momentum=0.0, weight_decay=4e-5,
    batch_size=32, epochs=100, schedule="exponential", gamma=0.94, decay_every=2,
    grad_clip=2.0, label_smoothing=0.1, augment="resized_crop_flip", ema_decay=0.9999,
    unstated=("weight_decay", "ema_decay"),
    source="'a running average of the parameters' without its rate",
))
_add(Recipe(
    name="szegedy2017",
    citation="Szegedy et al. 2017 (Inception-v4), Sec. 4",
    optimizer="rmsprop", lr=0.045, alpha=0.9, eps=1.0, momentum=0.0, weight_decay=4e-5,
    batch_size=32, epochs=100, schedule="exponential", gamma=0.94, decay_every=2,
    label_smoothing=0.1, augment="resized_crop_flip", ema_decay=0.9999,
    unstated=("weight_decay", "batch_size", "epochs", "label_smoothing", "ema_decay"),
    source="values not stated follow Inception-v3 (szegedy2016)",
))
_add(Recipe(
    name="he2016_imagenet",
    citation="He, Zhang, Ren, Sun 2016, Sec. 3.4",
    # lr 0.1 divided by 10 when the error plateaus, up to 60e4 iterations of batch 256.
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=256, epochs=120,
    max_steps=600_000, schedule="plateau", augment="scale_jitter_crop_flip",
    unstated=("plateau_patience",),
))
_add(Recipe(
    name="he2016_cifar",
    citation="He, Zhang, Ren, Sun 2016, Sec. 4.2",
    # lr 0.1, /10 at 32k and 48k iterations, stop at 64k; wd 1e-4, momentum 0.9, batch 128;
    # 45k/5k train/val split; 4-pixel padding, 32x32 crop, horizontal flip. ResNet-110 (and
    # 1202, "trained as described above") warm up at 0.01 until training error < 80%
    # (about 400 iterations), then go back to 0.1.
    # 64k steps of 352 batches of 45k images (351 full ones and one of 72) is 181.8 epochs:
    # max_steps ends the run.
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, epochs=183,
    max_steps=64_000, schedule="multistep", milestones=(32_000, 48_000),
    milestone_unit="step", val_size=5000, augment="crop_flip", crop_padding=4,
    warmup_lr=0.01, warmup_until_error=80.0, warmup_models=("resnet110", "resnet1202"),
))
_add(Recipe(
    name="huang2016_cifar",
    citation="Huang, Sun, Liu, Sedra, Weinberger 2016 (stochastic depth), Sec. 4",
    optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, batch_size=128,
    epochs=500, schedule="multistep", milestones=(250, 375), augment="crop_flip",
))
_add(Recipe(
    name="huang2017_cifar",
    citation="Huang, Liu, van der Maaten, Weinberger 2017 (DenseNet), Sec. 4.2",
    # batch 64 for 300 epochs; lr 0.1 divided by 10 at 50% and 75% of training; wd 1e-4;
    # Nesterov momentum 0.9 without dampening.
    optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, batch_size=64,
    epochs=300, schedule="multistep", milestones=(150, 225), augment="crop_flip",
))
_add(Recipe(
    name="zagoruyko2016_cifar",
    citation="Zagoruyko & Komodakis 2016 (WRN), Sec. 3",
    # Nesterov momentum, dampening 0, wd 5e-4, batch 128; lr 0.1 x0.2 at 60, 120, 160; 200 ep.
    optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=128,
    epochs=200, schedule="multistep", milestones=(60, 120, 160), gamma=0.2,
    augment="crop_flip",
))
_add(Recipe(
    name="xie2017_cifar",
    citation="Xie, Girshick, Dollar, Tu, He 2017 (ResNeXt), Sec. 5.3",
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=300,
    schedule="multistep", milestones=(150, 225), augment="crop_flip",
))
_add(Recipe(
    name="hu2018",
    citation="Hu, Shen, Sun 2018 (SENet), Sec. 6.1",
    # batch 1024, lr 0.6 divided by 10 every 30 epochs, 100 epochs.
    optimizer="sgd", lr=0.6, momentum=0.9, weight_decay=1e-4, batch_size=1024, epochs=100,
    schedule="multistep", milestones=(30, 60, 90), augment="resized_crop_flip",
    unstated=("weight_decay",),
    source="weight decay as in he2016_imagenet",
))
_add(Recipe(
    name="iandola2016",
    citation="Iandola et al. 2016 (SqueezeNet), Sec. 4 and the released Caffe solver",
    # solver.prototxt: base_lr 0.04, poly power 1 over 170k iterations of batch 512,
    # momentum 0.9, weight decay 2e-4.
    optimizer="sgd", lr=0.04, momentum=0.9, weight_decay=2e-4, batch_size=512, epochs=68,
    max_steps=170_000, schedule="poly", augment="resized_crop_flip",
    unstated=("lr", "weight_decay", "batch_size", "max_steps"),
    source="the authors' released solver.prototxt (SqueezeNet v1.0)",
))
_add(Recipe(
    name="howard2017",
    citation="Howard et al. 2017 (MobileNets), Sec. 3.2",
    # RMSprop with asynchronous gradient descent "similar to Inception V3", less
    # regularisation and augmentation, little or no weight decay on depthwise filters.
    optimizer="rmsprop", lr=0.045, alpha=0.9, eps=1.0, momentum=0.0, weight_decay=4e-5,
    no_decay_1d=True, batch_size=96, epochs=100, schedule="exponential", gamma=0.94,
    decay_every=2, augment="resized_crop_flip",
    unstated=("lr", "weight_decay", "batch_size", "epochs", "gamma", "decay_every"),
    source="numeric values follow Inception-v3 (szegedy2016), as Sec. 3.2 says",
))
_add(Recipe(
    name="sandler2018",
    citation="Sandler et al. 2018 (MobileNetV2), Sec. 6.1",
    # RMSProp, decay and momentum 0.9; wd 4e-5; lr 0.045 decayed 0.98 per epoch; batch 96.
    optimizer="rmsprop", lr=0.045, alpha=0.9, momentum=0.9, eps=1.0, weight_decay=4e-5,
    batch_size=96, epochs=300, schedule="exponential", gamma=0.98, decay_every=1,
    augment="resized_crop_flip",
    unstated=("epochs", "eps"),
))
_add(Recipe(
    name="howard2019",
    citation="Howard et al. 2019 (MobileNetV3), Sec. 6.1",
    # RMSProp momentum 0.9, lr 0.1, batch 4096, "learning rate decay rate of 0.01 every 3
    # epochs" (read here as x0.99 every 3 epochs), L2 1e-5, EMA 0.9998.
    optimizer="rmsprop", lr=0.1, alpha=0.9, momentum=0.9, eps=1e-3, weight_decay=1e-5,
    batch_size=4096, epochs=300, schedule="exponential", gamma=0.99, decay_every=3,
    ema_decay=0.9998, augment="resized_crop_flip",
    unstated=("epochs", "eps", "alpha"),
))
_add(Recipe(
    name="tan2019",
    citation="Tan & Le 2019 (EfficientNet), Sec. 5.2",
    # RMSProp decay 0.9 momentum 0.9; wd 1e-5; lr 0.256 decaying 0.97 every 2.4 epochs.
    optimizer="rmsprop", lr=0.256, alpha=0.9, momentum=0.9, eps=1e-3, weight_decay=1e-5,
    batch_size=4096, epochs=350, schedule="exponential", gamma=0.97, decay_every=2.4,
    ema_decay=0.9999, augment="resized_crop_flip",
    unstated=("batch_size", "epochs", "eps", "ema_decay"),
    source="the authors' released TPU training code",
))
_add(Recipe(
    name="liu2022",
    citation="Liu et al. 2022 (ConvNeXt), Appendix A.1, Table 5",
    # AdamW (0.9, 0.999), lr 4e-3, weight decay 0.05, batch 4096, 300 epochs, cosine decay
    # after 20 epochs of linear warm-up, label smoothing 0.1, EMA 0.9999.
    optimizer="adamw", lr=4e-3, betas=(0.9, 0.999), weight_decay=0.05, batch_size=4096,
    epochs=300, schedule="cosine", warmup_epochs=20, label_smoothing=0.1, ema_decay=0.9999,
    augment="resized_crop_flip",
    source="Table 5's RandAugment (9, 0.5), Mixup 0.8, CutMix 1.0 and random erasing 0.25 "
    "are not available here; stochastic depth and layer scale are the models' own options",
))
_add(Recipe(
    name="chen2017",
    citation="Chen et al. 2017 (Dual Path Networks), Sec. 5.1",
    optimizer="sgd", lr=0.4, momentum=0.9, weight_decay=1e-4, batch_size=1280, epochs=120,
    schedule="plateau", plateau_monitor="train", augment="resized_crop_flip",
    unstated=("lr", "weight_decay", "batch_size", "epochs"),
    source="the rate is divided by 10 when training accuracy plateaus; other values are "
    "not verified against the paper",
))
_add(Recipe(
    name="liu2021",
    citation="Liu et al. 2021 (Swin Transformer), Sec. 4.1 and Appendix A2.1",
    # AdamW, 300 epochs, cosine decay after 20 epochs of linear warm-up, batch 1024, lr 0.001,
    # weight decay 0.05; gradient clipping at max norm 5.0 (A2.1); DeiT's regularisation,
    # of which label smoothing 0.1 is expressible here.
    optimizer="adamw", lr=0.001, weight_decay=0.05, no_decay_1d=True, batch_size=1024,
    epochs=300, schedule="cosine", warmup_epochs=20, grad_clip=5.0, label_smoothing=0.1,
    augment="resized_crop_flip",
    unstated=("no_decay_1d", "label_smoothing", "augment"),
    source="DeiT's recipe (Touvron et al. 2021), which Sec. 4.1 adopts: label smoothing 0.1; "
    "its RandAugment, Mixup, CutMix and random erasing are not available here; the authors' "
    "code skips weight decay on norms, biases (and the position bias tables)",
))
_add(Recipe(
    name="radosavovic2020",
    citation="Radosavovic et al. 2020 (RegNet), Sec. 5 and the authors' pycls configs",
    # SGD momentum 0.9, half-period cosine, weight decay 5e-5, 100 epochs (Sec. 5's full
    # regime); lr 0.4 for batch 1024 (0.05 per 128) with 5 linear warm-up epochs, Nesterov.
    optimizer="sgd", lr=0.4, momentum=0.9, nesterov=True, weight_decay=5e-5, batch_size=1024,
    epochs=100, schedule="cosine", warmup_epochs=5, augment="resized_crop_flip",
    unstated=("lr", "batch_size", "nesterov", "warmup_epochs", "augment"),
    source="the released pycls configs (RegNet*_dds_8gpu.yaml); not checked against the "
    "paper's text",
))
_add(Recipe(
    name="fast_cpu",
    citation="cnnlab: a short one-cycle schedule for CPU demos (Smith & Topin 2018)",
    optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
    no_decay_1d=True, batch_size=128, epochs=4, schedule="onecycle", onecycle_pct=0.25,
))
_add(Recipe(
    name="finetune",
    citation="Girshick et al. 2014 (R-CNN), Sec. 2.3; Yosinski et al. 2014; the lectures' "
    "'repurpose pre-trained models'",
    # Fine-tune every layer from pretrained weights: R-CNN starts SGD at 1/10 of the
    # pre-training rate, "which allows fine-tuning to make progress while not clobbering the
    # initialization"; the new head learns 10x faster (Caffe's fine-tuning example's lr_mult
    # 10). Yosinski et al. 2014 (Sec. 4.1) find that fine-tuned transferred features beat
    # training from scratch even on a large target set. Lengths and decay are cnnlab's.
    optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, no_decay_1d=True,
    backbone_lr_scale=0.1, batch_size=32, epochs=10, schedule="cosine", augment="flip",
    unstated=("lr", "weight_decay", "batch_size", "epochs", "schedule", "augment"),
    source="rates relative to ImageNet's 0.1 as R-CNN's are to its pre-training; the rest "
    "a common short fine-tuning schedule",
))
_add(Recipe(
    name="linear_probe",
    citation="Kornblith, Shlens, Le 2019 (Do Better ImageNet Models Transfer Better?), Sec. 3",
    # A linear classifier on the frozen penultimate features of central crops, no
    # augmentation. The paper fits L2-regularised logistic regression with L-BFGS; SGD on
    # the head alone reaches the same kind of optimum here, with a small weight decay.
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=64, epochs=10,
    schedule="cosine", augment="none",
    unstated=("optimizer", "lr", "weight_decay", "batch_size", "epochs", "schedule"),
    source="SGD in place of the paper's L-BFGS",
))

RECIPES: Mapping[str, Recipe] = types.MappingProxyType(_R)


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid: {', '.join(list_recipes())}")
    return RECIPES[name]


def recipe_for_model(model_name: str, recipe: Recipe) -> Recipe:
    """The recipe as it applies to one model: drops warm-up for models it does not name."""
    if recipe.warmup_lr and recipe.warmup_models and model_name not in recipe.warmup_models:
        return replace(recipe, warmup_lr=0.0)
    return recipe


# --- overrides -------------------------------------------------------------------------


def _parse_scalar(tp: Any, text: str, key: str) -> Any:
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(key)
    if tp is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ValueError(key) from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(key) from None
    return text


def _parse_value(hint: Any, text: str, key: str) -> Any:
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if text.lower() in ("none", "null", ""):
            return None
        inner = next(a for a in args if a is not type(None))
        return _parse_value(inner, text, key)
    if origin is tuple:
        parts = [p for p in text.replace(" ", "").split(",") if p]
        return tuple(_parse_scalar(args[0], p, key) for p in parts)
    return _parse_scalar(hint, text, key)


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.05", "milestones=10,20"]`` -> typed values; unknown keys list the valid ones,
    and a value outside the field's range (:data:`RULES`) names the range."""
    hints = typing.get_type_hints(Recipe)
    valid = [f.name for f in fields(Recipe) if f.name not in ("name", "citation")]
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        if key not in valid:
            raise ValueError(f"unknown recipe key {key!r}; valid keys: {', '.join(valid)}")
        try:
            value = _parse_value(hints[key], text.strip(), key)
        except ValueError:
            wanted = RULES[key].describe() if key in RULES else f"a {hints[key]}"
            raise ValueError(f"--set {pair}: {key} must be {wanted}") from None
        if problem := field_problem(key, value):
            raise ValueError(f"--set {pair}: {problem}")
        out[key] = value
    return out


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any]) -> Recipe:
    return dataclasses.replace(recipe, **overrides) if overrides else recipe


# --- schedule --------------------------------------------------------------------------


def build_schedule(recipe: Recipe, steps_per_epoch: int) -> S.Schedule:
    """The recipe's ``lr_at(step)`` for a run with ``steps_per_epoch`` optimiser steps."""
    total = total_steps(recipe, steps_per_epoch)
    unit = steps_per_epoch if recipe.milestone_unit == "epoch" else 1
    lr = scaled_lr(recipe)
    sched: S.Schedule
    if recipe.schedule == "constant":
        sched = S.Constant(lr)
    elif recipe.schedule == "multistep":
        sched = S.MultiStep(
            lr,
            tuple(round(m * unit) for m in recipe.milestones),
            recipe.gamma,
            recipe.factors or None,
        )
    elif recipe.schedule == "exponential":
        sched = S.Exponential(lr, recipe.gamma, recipe.decay_every * steps_per_epoch)
    elif recipe.schedule == "plateau":
        sched = S.Plateau(
            lr, recipe.gamma, recipe.plateau_patience, max_drops=recipe.plateau_max_drops
        )
    elif recipe.schedule == "cosine":
        sched = S.Cosine(lr, total, recipe.final_lr)
    elif recipe.schedule == "poly":
        sched = S.Poly(lr, total)
    else:
        sched = S.OneCycle(lr, total, recipe.onecycle_pct)
    if recipe.warmup_epochs > 0:
        sched = S.Warmup(sched, math.ceil(recipe.warmup_epochs * steps_per_epoch))
    if scaling_warmup_epochs(recipe):
        # Goyal et al. 2017, Sec. 2.2: "gradual warmup", from the base rate up by a constant
        # amount each step to the scaled rate after 5 epochs
        sched = S.Warmup(sched, math.ceil(scaling_warmup_epochs(recipe) * steps_per_epoch),
                         start_lr=recipe.lr)
    if recipe.warmup_lr > 0:
        sched = S.WarmupUntil(
            sched, recipe.warmup_lr, recipe.warmup_until_error, recipe.warmup_max_steps
        )
    return sched


def scaled_lr(recipe: Recipe) -> float:
    """The recipe's rate after linear scaling (Goyal et al. 2017, Sec. 2.1: "when the
    minibatch size is multiplied by k, multiply the learning rate by k"): ``lr x batch_size /
    lr_reference_batch``; ``lr`` itself when scaling is off (``lr_reference_batch`` 0)."""
    if not recipe.lr_reference_batch:
        return recipe.lr
    return recipe.lr * recipe.batch_size / recipe.lr_reference_batch


def scaling_warmup_epochs(recipe: Recipe) -> float:
    """Epochs of Goyal's gradual warm-up: only when scaling raises the rate, and only for a
    recipe without a warm-up of its own (that one already climbs to the scaled rate). A rate
    scaled down, for a smaller batch, is used from the first step."""
    if scaled_lr(recipe) > recipe.lr and not recipe.warmup_epochs:
        return recipe.lr_scaling_warmup_epochs
    return 0.0


def total_steps(recipe: Recipe, steps_per_epoch: int) -> int:
    by_epochs = recipe.epochs * steps_per_epoch
    return min(by_epochs, recipe.max_steps) if recipe.max_steps else by_epochs
