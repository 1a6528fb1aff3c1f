"""Learning-rate schedules as functions of the optimiser step: ``lr_at(step) -> float``.

Every schedule is a small frozen dataclass whose ``lr_at`` is a pure function of the step
(counted from 0, one per optimiser update). The two schedules that react to training, the
papers' "divide by 10 when the error plateaus" and ResNet-110's "warm up at 0.01 until the
training error is below 80%", keep the *events* they observed (the steps at which the rate
dropped, the step at which warm-up ended) in a small state object; given those events,
``lr_at`` is still pure, and the state is saved in checkpoints so a resumed run continues
exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Constant",
    "Cosine",
    "Exponential",
    "MultiStep",
    "OneCycle",
    "Plateau",
    "Poly",
    "Schedule",
    "Warmup",
    "WarmupUntil",
]


class Schedule(Protocol):
    def lr_at(self, step: int) -> float: ...


@dataclass(frozen=True)
class Constant:
    lr: float

    def lr_at(self, step: int) -> float:
        return self.lr


@dataclass(frozen=True)
class MultiStep:
    """``lr`` times ``gamma`` per milestone passed (milestones in steps, sorted).

    With ``factors`` the rate after passing k milestones is ``lr * factors[k]`` instead,
    for piecewise schedules such as LeCun et al. 1998's (len(factors) == len(milestones) + 1).
    """

    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1
    factors: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")
        if self.factors is not None and len(self.factors) != len(self.milestones) + 1:
            raise ValueError(
                f"factors needs one value per phase: {len(self.milestones) + 1} for "
                f"{len(self.milestones)} milestones, got {len(self.factors)}"
            )

    def lr_at(self, step: int) -> float:
        passed = sum(step >= m for m in self.milestones)
        if self.factors is not None:
            return self.lr * self.factors[passed]
        return self.lr * self.gamma**passed


@dataclass(frozen=True)
class Exponential:
    """``lr * gamma ** floor(step / every)``: e.g. Inception-v3's 0.94 every two epochs."""

    lr: float
    gamma: float
    every: float  # steps; may be fractional (EfficientNet: every 2.4 epochs)

    def lr_at(self, step: int) -> float:
        return self.lr * self.gamma ** math.floor(step / self.every)


@dataclass(frozen=True)
class Cosine:
    """Half a cosine from ``lr`` at step 0 to ``final_lr`` at ``total`` (and after)."""

    lr: float
    total: int
    final_lr: float = 0.0

    def lr_at(self, step: int) -> float:
        t = min(step, self.total) / self.total
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Poly:
    """``lr * (1 - step/total) ** power``; power 1 is SqueezeNet's linear decay to 0."""

    lr: float
    total: int
    power: float = 1.0

    def lr_at(self, step: int) -> float:
        return self.lr * max(0.0, 1.0 - step / self.total) ** self.power


@dataclass(frozen=True)
class OneCycle:
    """Smith's one-cycle, piecewise linear: ``lr/div`` up to ``lr`` at ``pct * total``,
    then down to ``lr/final_div`` at ``total`` (Smith & Topin 2018)."""

    lr: float
    total: int
    pct: float = 0.25
    div: float = 25.0
    final_div: float = 1e4

    def lr_at(self, step: int) -> float:
        peak = self.pct * self.total
        start, end = self.lr / self.div, self.lr / self.final_div
        if step <= peak:
            return start + (self.lr - start) * (step / peak if peak > 0 else 1.0)
        t = min(step, self.total) - peak
        return self.lr + (end - self.lr) * t / (self.total - peak)


@dataclass(frozen=True)
class Warmup:
    """Linear warm-up from ``start_lr`` to the inner schedule's value over ``steps`` steps."""

    inner: Schedule
    steps: int
    start_lr: float = 0.0

    def lr_at(self, step: int) -> float:
        target = self.inner.lr_at(step)
        if step >= self.steps:
            return target
        return self.start_lr + (target - self.start_lr) * step / self.steps


@dataclass
class PlateauState:
    """What a plateau schedule has observed: the steps at which it divided the rate."""

    drops: list[int] = field(default_factory=list)
    best: float = math.inf
    bad_epochs: int = 0


@dataclass
class Plateau:
    """Divide the rate by ``1/gamma`` when the monitored error stops improving.

    Krizhevsky et al. 2012 (§5): "divide the learning rate by 10 when the validation error
    rate stopped improving with the current learning rate", three times in all. ``observe``
    is called once per epoch with the monitored error; after ``patience`` epochs without an
    improvement larger than ``threshold`` (percentage points) the rate drops from the next
    step on. ``lr_at`` is pure given the recorded drops.
    """

    lr: float
    gamma: float = 0.1
    patience: int = 5
    threshold: float = 0.01
    max_drops: int = 3
    state: PlateauState = field(default_factory=PlateauState)

    def lr_at(self, step: int) -> float:
        return self.lr * self.gamma ** sum(step >= d for d in self.state.drops)

    def observe(self, step: int, error: float) -> None:
        s = self.state
        if error < s.best - self.threshold:
            s.best, s.bad_epochs = error, 0
            return
        s.bad_epochs += 1
        if s.bad_epochs >= self.patience and len(s.drops) < self.max_drops:
            s.drops.append(step)
            s.bad_epochs = 0
            s.best = error

    def state_dict(self) -> dict[str, Any]:
        s = self.state
        return {"drops": list(s.drops), "best": s.best, "bad_epochs": s.bad_epochs}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.state = PlateauState(list(d["drops"]), float(d["best"]), int(d["bad_epochs"]))


@dataclass
class WarmupUntil:
    """A constant warm-up rate until the training error falls below a threshold.

    He et al. 2016 (§4.2), ResNet-110 on CIFAR-10: "we use 0.01 to warm up the training
    until the training error is below 80% (about 400 iterations), and then go back to 0.1".
    ``observe_step`` gets the running training error (percent) after each step; the first
    step at which it is below ``below`` ends the warm-up. ``max_steps`` bounds it in case
    the error never gets there.
    """

    inner: Schedule
    lr: float
    below: float = 80.0
    max_steps: int | None = None
    ended_at: int | None = None

    def lr_at(self, step: int) -> float:
        end = self.ended_at if self.ended_at is not None else self.max_steps
        if end is not None and step >= end:
            return self.inner.lr_at(step)
        return self.lr

    def observe_step(self, step: int, train_error: float) -> None:
        if self.ended_at is None and train_error < self.below:
            self.ended_at = step + 1

    def state_dict(self) -> dict[str, Any]:
        return {"ended_at": self.ended_at}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.ended_at = d["ended_at"]
