"""Weight interop: load torchvision, timm, DataParallel/DDP, safetensors and cnnlab files.

:func:`load_weights` reads a file (``torch.load(weights_only=True)`` or safetensors, never
unpickling code), takes the state_dict out of its container (cnnlab's training checkpoints,
timm's ``state_dict``/``state_dict_ema``), strips the ``module.`` prefix DataParallel/DDP
write and the ``_orig_mod.`` one ``torch.compile`` does, then tries the known layouts of the
model's family and keeps the one that matches the model:

- torchvision's own keys (cnnlab keeps them for every torchvision-compatible model); timm's
  ResNet/ResNeXt/WRN and DenseNet use the same names (``conv1``, ``layer1.0.bn1``, ``fc``;
  ``features.denseblock1.denselayer1.norm1``, ``classifier``);
- DenseNet's legacy names ``norm.1``/``relu.1``/``conv.1``, which torchvision's own published
  DenseNet files still hold (torchvision's densenet.py renames them on load, as timm does);
- timm's VGG, whose classifier is a conv "pre_logits" (``pre_logits.fc1`` 7x7,
  ``pre_logits.fc2`` 1x1) and ``head.fc``: reshaped back to torchvision's Linear layers;
- a family module's own ``convert_timm_state_dict(state_dict, model_name)``, if it has one.

A mismatch raises :class:`LoadMismatch` listing every missing key, unexpected key and shape
difference, grouped.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["LoadMismatch", "LoadReport", "load_weights", "read_run", "read_state_dict",
           "to_model_layout"]

StateDict = dict[str, torch.Tensor]


class LoadMismatch(ValueError):
    """The weights do not fit the model; ``missing``, ``unexpected`` and ``shapes`` say how."""

    def __init__(self, model: str, layout: str, missing: list[str], unexpected: list[str],
                 shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> None:
        self.missing, self.unexpected, self.shapes = missing, unexpected, shapes
        counts = ", ".join(f"{n} {what}" for n, what in (
            (len(missing), "missing"), (len(unexpected), "unexpected"),
            (len(shapes), "with another shape")) if n)
        lines = [f"weights do not fit {model} (read as {layout}): {counts} key(s)"]
        if missing:
            lines.append(f"missing ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"unexpected ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            lines.append(f"shape differs ({len(shapes)}): " + ", ".join(
                f"{k} file {list(a)} vs model {list(b)}" for k, a, b in shapes))
        super().__init__("\n".join(lines))


@dataclass
class LoadReport:
    """What :func:`load_weights` did: the layout it read, and what did not fit (strict=False)."""

    layout: str
    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


# --- reading ---------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """The tensors of a weights file, taken out of a training checkpoint if they are in one."""
    return _unwrap(_read(Path(path)), str(path))[0]


def read_run(path: str | os.PathLike) -> tuple[StateDict, dict[str, Any] | None]:
    """The tensors of a weights file and, for a cnnlab training checkpoint, its ``run``
    record (classes, builder options), else None."""
    obj = _read(Path(path))
    run = obj.get("run") if isinstance(obj, Mapping) and str(obj.get("format", "")).startswith(
        "cnnlab-checkpoint") else None
    return _unwrap(obj, str(path))[0], run


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        # timm's train.py saves its argparse.Namespace of options beside the weights: a plain
        # attribute bag, allowed here; anything else that is not tensors and containers is not.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn file, foreign pickle: one line saying which and why
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not a readable weights file ({reason})") from None


# Containers, first match wins: cnnlab's checkpoint (its EMA weights when it kept them, as
# cnnlab eval uses), timm's train.py checkpoints (EMA first, as timm's loader prefers), others.
_CONTAINER_KEYS = ("ema", "model", "state_dict_ema", "model_ema", "state_dict", "module")


def _unwrap(obj: Any, where: str) -> tuple[StateDict, str]:
    source = "state_dict"
    for _ in range(3):  # nested at most a few levels ({"state_dict": {"model": ...}})
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), source
        if str(obj.get("format", "")).startswith("cnnlab-checkpoint"):
            key = "ema" if obj.get("ema") is not None else "model"
            obj, source = obj[key], f"cnnlab checkpoint ({key})"
            continue
        key = next((k for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        obj, source = obj[key], f"checkpoint[{key!r}]"
    raise ValueError(f"{where}: no state_dict of tensors found in it")


# --- layouts ---------------------------------------------------------------------------

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _strip_wrappers(state: StateDict) -> tuple[StateDict, list[str]]:
    """Remove DataParallel/DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes
    (when every key has one), in whatever nesting they were written."""
    stripped = []
    while state:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)),
                      None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
        stripped.append(prefix)
    return state, stripped


_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\."
    r"(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _densenet_legacy(state: StateDict, model_name: str) -> StateDict | None:
    """``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight`` (module names with dots
    were allowed in early PyTorch; torchvision's files keep them)."""
    if not any(_DENSENET_LEGACY.match(k) for k in state):
        return None
    return {_DENSENET_LEGACY.sub(r"\1\2", k): v for k, v in state.items()}


def _timm_vgg(state: StateDict, model_name: str) -> StateDict | None:
    """timm's VGG head -> torchvision's: the 7x7 conv ``pre_logits.fc1`` is the Linear
    ``classifier.0`` on the flattened 512x7x7 map (same weights, reshaped), the 1x1 conv
    ``pre_logits.fc2`` is ``classifier.3``, ``head.fc`` is ``classifier.6``."""
    if "pre_logits.fc1.weight" not in state:
        return None
    renames = {"pre_logits.fc1.": "classifier.0.", "pre_logits.fc2.": "classifier.3.",
               "head.fc.": "classifier.6."}
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
                if key.endswith("weight") and value.dim() == 4:
                    value = value.reshape(value.shape[0], -1)
                break
        out[key] = value
    return out


def _family_converter(model: nn.Module) -> Callable[[StateDict, str], StateDict | None] | None:
    module = importlib.import_module(type(model).__module__)
    return getattr(module, "convert_timm_state_dict", None)


def _problems(model_state: Mapping[str, torch.Tensor], state: StateDict
              ) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    # A file without BN's num_batches_tracked counters loads (PyTorch fills them in).
    missing = [k for k in model_state if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in model_state]
    shapes = [(k, tuple(v.shape), tuple(model_state[k].shape)) for k, v in state.items()
              if k in model_state and tuple(v.shape) != tuple(model_state[k].shape)]
    return missing, unexpected, shapes


def to_model_layout(model: nn.Module, state: StateDict) -> tuple[StateDict, str, tuple]:
    """``state`` in the layout that fits ``model`` best, the layout's name, and the problems
    (missing, unexpected, shapes) left."""
    name = getattr(model, "model_name", type(model).__name__)
    state, stripped = _strip_wrappers(dict(state))
    wrapped = f" with {'+'.join(p.rstrip('.') for p in stripped)} prefix" if stripped else ""
    own = model.state_dict()
    candidates: list[tuple[str, StateDict]] = [("torchvision/cnnlab keys", state)]
    converters: list[tuple[str, Callable[[StateDict, str], StateDict | None] | None]] = [
        ("DenseNet legacy keys (norm.1, conv.1)", _densenet_legacy),
        ("timm VGG (conv pre_logits)", _timm_vgg),
        ("timm layout (family converter)", _family_converter(model)),
    ]
    for label, convert in converters:
        try:
            converted = convert(dict(state), name) if convert is not None else None
        except (KeyError, ValueError, RuntimeError):  # a converter for another layout
            converted = None
        if converted is not None:
            candidates.append((label, converted))
    best = None
    for label, candidate in candidates:
        problems = _problems(own, candidate)
        score = sum(len(p) for p in problems)
        if best is None or score < best[0]:
            best = (score, label, candidate, problems)
        if score == 0:
            break
    assert best is not None
    _, label, chosen, problems = best
    return chosen, label + wrapped, problems


def load_weights(model: nn.Module, weights: str | os.PathLike | Mapping[str, torch.Tensor],
                 *, strict: bool = True) -> LoadReport:
    """Load a weights file or state_dict into ``model`` in place (see the module docstring).

    ``strict=True`` raises :class:`LoadMismatch` unless every key fits; ``strict=False``
    loads the keys that fit (name and shape) and reports the rest.
    """
    if isinstance(weights, Mapping):
        state, source = _unwrap(weights, "the given state_dict")
    else:
        state, source = _unwrap(_read(Path(weights)), str(weights))
    name = getattr(model, "model_name", type(model).__name__)
    state, layout, (missing, unexpected, shapes) = to_model_layout(model, state)
    if strict and (missing or unexpected or shapes):
        raise LoadMismatch(name, layout, missing, unexpected, shapes)
    bad = {k for k, _, _ in shapes}
    fitting = {k: v for k, v in state.items() if k not in bad and k not in unexpected}
    model.load_state_dict(fitting, strict=False)
    return LoadReport(layout, source, len(fitting), missing, unexpected, shapes)
