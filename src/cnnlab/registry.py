"""The single door to the zoo: register, list, describe and build models by name."""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

__all__ = [
    "ModelInfo",
    "Paper",
    "create_model",
    "list_models",
    "model_info",
    "natural_key",
    "register_model",
]


@dataclass(frozen=True)
class Paper:
    """The publication a model comes from."""

    title: str
    authors: str
    year: int
    url: str


@dataclass(frozen=True)
class ModelInfo:
    """What the paper (or torchvision, for its forms) declares about one registered model.

    ``params`` and ``macs`` are declared from the paper or the published reference, never
    measured from the code, so that tests can compare declared with measured.
    """

    name: str
    family: str
    paper: Paper
    input_size: tuple[int, int, int]
    dataset: str  # "imagenet" | "cifar10" | "cifar100" | "mnist"
    num_classes: int
    params: int
    macs: int | None = None  # multiply-accumulates of conv and linear layers at input_size
    top1_error: float | None = None  # percent
    top5_error: float | None = None  # percent
    error_source: str = ""
    recipe: str = ""
    torchvision: bool = False
    deviations: tuple[str, ...] = field(default_factory=tuple)

    @property
    def title(self) -> str:
        return self.paper.title

    @property
    def authors(self) -> str:
        return self.paper.authors

    @property
    def year(self) -> int:
        return self.paper.year

    @property
    def url(self) -> str:
        return self.paper.url

    @property
    def top1(self) -> float | None:
        """Published top-1 accuracy in percent."""
        return None if self.top1_error is None else round(100.0 - self.top1_error, 3)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INFOS: dict[str, ModelInfo] = {}

_DATASETS = ("imagenet", "cifar10", "cifar100", "mnist")


def register_model(**info: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name with the given ModelInfo fields.

    >>> @register_model(family="lenet", paper=LECUN_1998, input_size=(1, 32, 32), ...)
    ... def lenet5(**kwargs): ...
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        model_info_ = ModelInfo(name=name, **info)
        if model_info_.dataset not in _DATASETS:
            raise ValueError(
                f"{name}: dataset must be one of {_DATASETS}, got {model_info_.dataset!r}"
            )
        _BUILDERS[name] = builder
        _INFOS[name] = model_info_
        return builder

    return decorate


def _ensure_loaded() -> None:
    # Importing the models package runs every family module's register_model calls.
    import cnnlab.models  # noqa: F401


def natural_key(name: str) -> list[str | int]:
    """Sort key that compares digit runs as numbers: resnet18 < resnet34 < resnet101."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern (any case), in natural order."""
    _ensure_loaded()
    pattern = pattern.lower()
    return sorted((n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern)), key=natural_key)


def _lookup(name: str) -> str:
    _ensure_loaded()
    if name in _BUILDERS:
        return name
    if name.lower() in _BUILDERS:  # names are snake_case; `VGG16` works as in torchvision
        return name.lower()
    close = difflib.get_close_matches(name.lower(), _BUILDERS, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else "; see `cnnlab models`"
    raise ValueError(f"unknown model {name!r}{hint}")


def model_info(name: str) -> ModelInfo:
    """The declared facts about a registered model."""
    return _INFOS[_lookup(name)]


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    weights: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``num_classes``/``in_chans`` override the paper's defaults (``num_classes=0``: no
    classifier, the model returns its pooled features, as in timm); other keywords go to the
    builder. Names are matched in any case (``VGG16``). With ``features_only=True`` the
    result returns the list of stage feature maps selected by ``out_indices`` (default: every
    stage in ``feature_info``). ``weights`` loads published weights ("DEFAULT",
    "IMAGENET1K_V2", see ``cnnlab weights list``) or a local file (cnnlab.deploy.weights);
    with ``num_classes`` the head is then replaced.
    """
    name = _lookup(name)
    builder = _BUILDERS[name]
    if out_indices is not None and not features_only:
        raise ValueError("out_indices only applies with features_only=True")
    if num_classes is not None and num_classes < 0:
        raise ValueError(f"{name}: num_classes must be >= 0, got {num_classes}")
    if weights is not None:
        from cnnlab.deploy.weights import create_pretrained

        model = create_pretrained(name, weights, num_classes=num_classes or None,
                                  in_chans=in_chans, **kwargs)
    else:
        if num_classes:  # 0 (timm's convention): built as published, then the head is dropped
            kwargs["num_classes"] = num_classes
        if in_chans is not None:
            kwargs["in_chans"] = in_chans
        model = builder(**kwargs)
        model.model_name = name
    if num_classes == 0:
        model.reset_classifier(0)
    if features_only:
        from cnnlab.models.base import FeatureExtractor

        return FeatureExtractor(model, out_indices)
    return model
