"""The interface every cnnlab model shares: stem, stages, head, and a checked input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

__all__ = ["Classifier", "FeatureExtractor", "FeatureInfo", "check_input"]


class FeatureInfo(list):
    """The stages of a model: a list of ``{"channels", "reduction", "module"}`` dicts with
    timm's accessors. ``idx`` is None (every stage), one index, or a list of them."""

    def _get(self, key: str, idx: int | Sequence[int] | None) -> Any:
        if idx is None:
            return [stage[key] for stage in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("channels", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("module", idx)

    def get_dicts(self, keys: Sequence[str] | None = None,
                  idx: int | Sequence[int] | None = None) -> Any:
        stages = self if idx is None else [self[idx]] if isinstance(idx, int) else [
            self[i] for i in idx]
        picked = [dict(s) if keys is None else {k: s[k] for k in keys} for s in stages]
        return picked[0] if isinstance(idx, int) else picked


class Classifier(nn.Module):
    """Base class of every model in the zoo.

    ``forward_features`` maps the input to the last unpooled feature map and ``forward_head``
    maps that to logits; the defaults run ``features`` and ``classifier(flatten(avgpool(x)))``,
    and a family built otherwise overrides them. Subclasses set in ``__init__``:

    - ``in_chans``: channels the stem takes;
    - ``feature_info``: one dict per stage, ``{"channels", "reduction", "module"}``, where
      ``module`` is the qualified name of the submodule whose output is that stage's map;
    - ``min_input_size``: the smallest (H, W) every layer can take;
    - ``fixed_input_size``: set when the head only works at one size (e.g. LeNet-5's C5);
    - ``classifier_path``: the qualified name of the last layer, features -> class scores
      (``aux_classifier_paths``: those of auxiliary classifiers), for ``get_classifier`` and
      ``reset_classifier``.
    """

    in_chans: int = 3
    min_input_size: tuple[int, int] = (1, 1)
    fixed_input_size: tuple[int, int] | None = None
    fixed_size_reason: str = ""  # why, appended to the error for another size
    classifier_path: str = "fc"
    aux_classifier_paths: tuple[str, ...] = ()

    @property
    def feature_info(self) -> FeatureInfo:
        return self._feature_info

    @feature_info.setter
    def feature_info(self, stages: list[dict[str, Any]]) -> None:
        self._feature_info = stages if isinstance(stages, FeatureInfo) else FeatureInfo(stages)

    def get_classifier(self) -> nn.Module:
        """The last layer, which maps the pooled features to class scores."""
        return self.get_submodule(self.classifier_path)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh last layer (and auxiliary heads') for ``num_classes`` classes, with
        PyTorch's default init; 0 puts ``nn.Identity`` there, so that the model returns its
        pooled features (timm's convention)."""
        if num_classes < 0:
            raise ValueError(f"{_model_name(self)}: num_classes must be >= 0, got {num_classes}")
        # What each head was, kept so that a later reset after 0 knows its width again.
        shapes = self.__dict__.setdefault("_head_shapes", {})
        for path in (self.classifier_path, *self.aux_classifier_paths):
            try:
                old = self.get_submodule(path)
            except AttributeError:
                continue  # an auxiliary head this model was built without
            if path not in shapes:
                shapes[path] = _head_shape(old, path)
            kind, width, kernel = shapes[path]
            if num_classes == 0:
                new: nn.Module = nn.Identity()
            elif kind == "conv":
                new = nn.Conv2d(width, num_classes, kernel_size=kernel)
            else:
                new = nn.Linear(width, num_classes)
            ref = next(self.parameters(), None)
            self.set_submodule(path, new if ref is None else new.to(ref.device, ref.dtype))

    def num_pooled_features(self) -> int:
        """The width of what the last layer takes (what ``num_classes=0`` returns)."""
        shapes = self.__dict__.get("_head_shapes", {})
        if self.classifier_path in shapes:
            return shapes[self.classifier_path][1]
        return _head_shape(self.get_classifier(), self.classifier_path)[1]

    # The defaults serve the layout most families share (``features``, then ``avgpool`` and
    # ``classifier``); families built otherwise override them.
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """A stage's output as the (N, C, H, W) map ``features_only`` returns; models whose
        stages are token sequences (ViT) override it."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        return self.forward_head(self.forward_features(x))


def _model_name(model: nn.Module) -> str:
    return getattr(model, "model_name", type(model).__name__)


def _head_shape(layer: nn.Module, path: str) -> tuple[str, int, tuple[int, ...]]:
    if isinstance(layer, nn.Linear):
        return "linear", layer.in_features, ()
    if isinstance(layer, nn.Conv2d):  # NiN's and SqueezeNet's per-class maps
        return "conv", layer.in_channels, tuple(layer.kernel_size)
    raise TypeError(f"cannot reset the classifier {path!r}: a {type(layer).__name__}")


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
                f"{name}: takes exactly {model.in_chans}x{fh}x{fw} inputs"
                f"{getattr(model, 'fixed_size_reason', '')}, got shape {shape}"
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
        self.feature_info = FeatureInfo(stages[i] for i in self.out_indices)
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
        to_map = getattr(self.model, "feature_map", lambda t: t)
        maps = [to_map(self._captured[slot]) for slot in range(len(self.feature_info))]
        self._captured = {}
        return maps
