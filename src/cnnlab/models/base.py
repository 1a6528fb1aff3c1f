"""The interface every cnnlab model shares: stem, stages, head, and a checked input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

__all__ = ["Classifier", "FeatureExtractor", "check_input"]


class Classifier(nn.Module):
    """Base class of every model in the zoo.

    ``forward_features`` maps the input to the last unpooled feature map and ``forward_head``
    maps that to logits; the defaults run ``features`` and ``classifier(flatten(avgpool(x)))``,
    and a family built otherwise overrides them. Subclasses set in ``__init__``:

    - ``in_chans``: channels the stem takes;
    - ``feature_info``: one dict per stage, ``{"channels", "reduction", "module"}``, where
      ``module`` is the qualified name of the submodule whose output is that stage's map;
    - ``min_input_size``: the smallest (H, W) every layer can take;
    - ``fixed_input_size``: set when the head only works at one size (e.g. LeNet-5's C5).
    """

    in_chans: int = 3
    min_input_size: tuple[int, int] = (1, 1)
    fixed_input_size: tuple[int, int] | None = None
    feature_info: list[dict[str, Any]]

    # The defaults serve the layout most families share (``features``, then ``avgpool`` and
    # ``classifier``); families built otherwise override them.
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        return self.forward_head(self.forward_features(x))


def _model_name(model: nn.Module) -> str:
    return getattr(model, "model_name", type(model).__name__)


def check_input(model: Classifier, x: torch.Tensor) -> None:
    """Raise a ValueError naming the model, the shape received and the shape it needs."""
    shape = tuple(x.shape)
    name = _model_name(model)
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D batch (N, C, H, W), got shape {shape}")
    if shape[1] != model.in_chans:
        raise ValueError(f"{name}: expected {model.in_chans} input channels, got shape {shape}")
    h, w = int(shape[2]), int(shape[3])
    if model.fixed_input_size is not None:
        fh, fw = model.fixed_input_size
        if (h, w) != (fh, fw):
            raise ValueError(
                f"{name}: takes exactly {model.in_chans}x{fh}x{fw} inputs, got shape {shape}"
            )
        return
    mh, mw = model.min_input_size
    if h < mh or w < mw:
        raise ValueError(
            f"{name}: input {h}x{w} is too small; needs at least {model.in_chans}x{mh}x{mw}, "
            f"got shape {shape}"
        )


class FeatureExtractor(nn.Module):
    """A backbone view of a Classifier: forward returns the selected stage feature maps.

    The stage outputs are captured with forward hooks on the modules that ``feature_info``
    names, so it works unchanged through branches and for every family.
    """

    def __init__(self, model: Classifier, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        stages = model.feature_info
        if out_indices is None:
            out_indices = tuple(range(len(stages)))
        bad = [i for i in out_indices if not -len(stages) <= i < len(stages)]
        if bad:
            raise ValueError(
                f"{_model_name(model)}: out_indices {tuple(bad)} out of range; "
                f"it has {len(stages)} stages (0..{len(stages) - 1})"
            )
        self.model = model
        self.out_indices = tuple(i % len(stages) for i in out_indices)
        self.feature_info = [stages[i] for i in self.out_indices]
        self._captured: dict[int, torch.Tensor] = {}
        modules = dict(model.named_modules())
        for slot, info in enumerate(self.feature_info):
            modules[info["module"]].register_forward_hook(self._capture(slot))

    def _capture(self, slot: int):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            self._captured[slot] = output

        return hook

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(self.model, x)
        self._captured = {}
        self.model.forward_features(x)
        maps = [self._captured[slot] for slot in range(len(self.feature_info))]
        self._captured = {}
        return maps
