"""Published weights: torchvision's weight sets by name, a checked cache, pretrained models.

Every torchvision-compatible model names the weight sets torchvision publishes for it
(``data/torchvision_weights.json``, written by scripts/make_weights_table.py from torchvision's
own metadata): URL, SHA-256 prefix, file size, the evaluation transforms, params, GFLOPs and
ImageNet acc@1/acc@5. Files go where torchvision puts them, ``$TORCH_HOME/hub/checkpoints``
(``torch.hub.get_dir()``), under the URL's file name, so the two share one cache. They are
fetched with :func:`cnnlab.data.download.fetch` (retries, HTTP Range resume, checksum before
the rename), so a name in the cache is always a whole, verified file; a dropped connection
leaves only ``NAME.part`` to resume from, a wrong checksum deletes it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn as nn

from cnnlab.data.download import DownloadError, fetch

__all__ = [
    "EvalTransforms",
    "WeightSet",
    "WeightsError",
    "cache_dir",
    "create_pretrained",
    "download_weights",
    "get_weights",
    "imagenet_classes",
    "list_weights",
    "load_published",
    "replace_head",
]

DATA = Path(__file__).parent / "data"


class WeightsError(ValueError):
    """Weights that cannot be named, fetched or loaded (one line, for the CLI)."""


@dataclass(frozen=True)
class EvalTransforms:
    """torchvision's ``ImageClassification`` preset: shorter side to ``resize`` with
    ``interpolation``, central ``crop`` x ``crop``, scale to [0, 1], ``(x - mean) / std``."""

    resize: int
    crop: int
    interpolation: str  # "bilinear" | "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class WeightSet:
    """One published weight file of one model, and what torchvision says about it."""

    model: str
    name: str  # "IMAGENET1K_V2"
    url: str
    sha256_prefix: str
    file_size_mb: float  # MiB, as torchvision rounds it
    num_params: int
    gflops: float
    acc1: float | None  # ImageNet-1k val, percent; None for a features-only set
    acc5: float | None
    transforms: EvalTransforms
    recipe: str = ""
    min_size: tuple[int, int] = (1, 1)
    num_classes: int = 1000
    default: bool = False
    build: Mapping[str, Any] = field(default_factory=dict)  # constructor arguments it needs

    @property
    def tag(self) -> str:
        return f"{self.model}.{self.name}"

    @property
    def filename(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    @property
    def path(self) -> Path:
        """Where the file is (or will be) cached."""
        return cache_dir() / self.filename

    @property
    def cached(self) -> bool:
        return self.path.is_file()


def _set_from_json(model: str, name: str, d: dict, default: bool, build: dict) -> WeightSet:
    t = d["transforms"]
    return WeightSet(
        model=model, name=name, url=d["url"], sha256_prefix=d["sha256_prefix"],
        file_size_mb=d["file_size_mb"], num_params=d["num_params"], gflops=d["gflops"],
        acc1=d["acc1"], acc5=d["acc5"], recipe=d.get("recipe", ""),
        min_size=tuple(d.get("min_size", (1, 1))),  # type: ignore[arg-type]
        transforms=EvalTransforms(t["resize"], t["crop"], t["interpolation"],
                                  tuple(t["mean"]), tuple(t["std"])),  # type: ignore[arg-type]
        default=default, build=dict(build),
    )


def _load_table() -> tuple[dict[str, dict[str, WeightSet]], dict[str, str], dict[str, str]]:
    doc = json.loads((DATA / "torchvision_weights.json").read_text())
    table, defaults, enums = {}, {}, {}
    for model, entry in doc["models"].items():
        table[model] = {
            name: _set_from_json(model, name, d, name == entry["default"], entry["build"])
            for name, d in entry["sets"].items()
        }
        defaults[model] = entry["default"]
        enums[entry["enum"].lower()] = model
    return table, defaults, enums


# model -> set name -> WeightSet; tests point entries at a local server.
_TABLE, _DEFAULTS, _ENUMS = _load_table()


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in torchvision's index order."""
    names = json.loads((DATA / "imagenet_classes.json").read_text())["categories"]
    return tuple(names)


def list_weights(pattern: str = "*") -> list[WeightSet]:
    """Every published weight set of the models matching ``pattern``, by model then name."""
    from cnnlab.registry import list_models

    models = [m for m in list_models(pattern) if m in _TABLE]
    if not models and pattern != "*" and not list_models(pattern):
        raise WeightsError(f"no model matches {pattern!r}; see `cnnlab models`")
    return [ws for m in models for ws in _TABLE[m].values()]


def get_weights(model: str, weights: str = "DEFAULT") -> WeightSet:
    """The weight set ``weights`` ("DEFAULT", "IMAGENET1K_V2", "resnet50.IMAGENET1K_V2" or
    torchvision's "ResNet50_Weights.IMAGENET1K_V2") of ``model``."""
    from cnnlab.registry import model_info

    model = model_info(model).name
    prefix, dot, name = weights.rpartition(".")
    if dot:
        owner = _ENUMS.get(prefix.lower(), prefix)
        if owner != model:
            raise WeightsError(f"weights {weights!r} belong to {owner!r}, not to {model!r}")
    sets = _TABLE.get(model)
    if not sets:
        raise WeightsError(f"{model} has no published weights; models that have them: "
                           "`cnnlab weights list`")
    if name.upper() == "DEFAULT":
        name = _DEFAULTS[model]
    if name not in sets:
        raise WeightsError(f"{model} has no weights {name!r}; it has: "
                           f"{', '.join(sets)} (and DEFAULT = {_DEFAULTS[model]})")
    return sets[name]


def resolve(spec: str) -> WeightSet:
    """A weight set from one name: "resnet50" (its default), "resnet50.IMAGENET1K_V1",
    "resnet50.DEFAULT" or "ResNet50_Weights.IMAGENET1K_V1"."""
    head, dot, tail = spec.rpartition(".")
    if not dot:
        return get_weights(spec)
    return get_weights(_ENUMS.get(head.lower(), head), tail)


def cache_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, torchvision's weight cache."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder, so that two processes fetching the same
    file do not append to one ``.part`` (POSIX flock on the folder: nothing is left behind)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the checksum still guards the cache
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def download_weights(
    ws: WeightSet, *, retries: int = 3, backoff: float = 1.0, timeout: float = 60.0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The cached file of ``ws``, downloaded (once) and SHA-256-checked first if needed."""
    dest = ws.path
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache {dest.parent} "
                           f"({exc.strerror or exc}); set TORCH_HOME to a writable folder"
                           ) from None
    try:
        with _locked(dest.parent):
            return fetch(ws.url, dest, sha256=ws.sha256_prefix, retries=retries,
                         backoff=backoff, timeout=timeout, log=log)
    except DownloadError as exc:
        # The downloader's message names the URL and the file; say each once.
        reason = str(exc).removeprefix(f"could not fetch {dest.name}: ").replace(f"{ws.url}: ", "")
        raise WeightsError(f"cannot download {ws.tag} from {ws.url} to {dest}: {reason}") from None


def load_published(ws: WeightSet, **download_kw: Any) -> dict[str, torch.Tensor]:
    """The state_dict of a published set, downloaded when not cached."""
    from cnnlab.deploy.interop import read_state_dict

    return read_state_dict(download_weights(ws, **download_kw))


# --- pretrained models ---------------------------------------------------------------------


def _looks_like_path(weights: str | os.PathLike) -> bool:
    """A file rather than a set name: a Path, a name with a folder or a weights suffix
    ("./DEFAULT" is a file, "DEFAULT" the default set)."""
    text = os.fspath(weights)
    return (isinstance(weights, os.PathLike) or os.sep in text or "/" in text
            or text.endswith((".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")))


def head_layers(model: nn.Module, num_classes: int) -> list[str]:
    """Names of the layers that produce the ``num_classes`` logits: the auxiliary heads'
    (GoogLeNet, Inception, when built) and the classifier's last layer, as the model names
    them (``classifier_path``), else the Linear (or SqueezeNet-style 1x1 conv) layers with
    ``num_classes`` outputs."""
    path = getattr(model, "classifier_path", None)
    if path is not None:
        paths = (*getattr(model, "aux_classifier_paths", ()), path)
        own = dict(model.named_modules())
        return [p for p in paths if p in own]
    heads = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == num_classes:
            heads.append(name)
        elif isinstance(m, nn.Conv2d) and m.out_channels == num_classes and \
                m.kernel_size == (1, 1) and name.startswith("classifier"):
            heads.append(name)
    if not heads:
        raise WeightsError(f"{getattr(model, 'model_name', type(model).__name__)}: no layer "
                           f"with {num_classes} outputs to replace")
    return heads


def replace_head(model: nn.Module, num_classes: int, old_classes: int = 1000) -> list[str]:
    """Give ``model`` fresh layers for ``num_classes`` classes in place of those producing
    its ``old_classes`` logits (every other weight kept); returns their names."""
    names = head_layers(model, old_classes)
    for name in names:
        old = model.get_submodule(name)
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
            nn.init.normal_(new.weight, 0.0, 0.01)
        else:
            assert isinstance(old, nn.Conv2d)
            new = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None)
            nn.init.normal_(new.weight, 0.0, 0.01)
        if getattr(new, "bias", None) is not None:
            nn.init.zeros_(new.bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    return names


# torchvision's own defaults when it drops the heads after loading: GoogLeNet keeps them only
# on request, Inception v3 unless aux_logits=False (they serve training only).
_KEEP_AUX_BY_DEFAULT = {"googlenet": False, "inception_v3": True}


def _drop_aux_heads(model: nn.Module) -> None:
    model.aux_logits = False
    for attr in ("aux1", "aux2", "AuxLogits"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    if "min_train_input_size" in vars(model):
        del model.min_train_input_size


def create_pretrained(
    name: str, weights: str | os.PathLike, *, num_classes: int | None = None,
    in_chans: int | None = None, **kwargs: Any,
) -> nn.Module:
    """``name`` with published weights (a set name, "DEFAULT") or a local file's, built as
    torchvision builds it; ``num_classes`` other than the weights' replaces the head.

    A local file is read as torchvision's (or timm's, see :mod:`cnnlab.deploy.interop`) form
    of the model. The result carries ``pretrained`` (the WeightSet, None for a local file),
    ``eval_transforms`` (the set's preset; for a local file the model's default set's, when it
    has one) and, when the head was replaced, ``head_names``.
    """
    from cnnlab.deploy.interop import load_weights, read_run, to_model_layout
    from cnnlab.registry import create_model, model_info

    info = model_info(name)
    name = info.name
    if in_chans is not None and in_chans != info.input_size[0]:
        raise WeightsError(f"{name}'s weights take {info.input_size[0]}-channel images, "
                           f"not in_chans={in_chans}")
    local = _looks_like_path(weights)
    ws = None if local else get_weights(name, os.fspath(weights))
    default = ws or (get_weights(name) if name in _TABLE else None)
    build = {**(default.build if default is not None else {}), **kwargs}
    if ws is not None and info.family == "vit" and ws.min_size != info.input_size[1:]:
        # torchvision builds a ViT at its weights' size (the position embedding's length)
        build.setdefault("image_size", ws.min_size[0])
    wanted_aux = kwargs.get("aux_logits")
    if local:
        state, run = read_run(weights)
        if run is not None:  # a cnnlab training checkpoint says how its model was built
            build = {**run.get("model_kwargs", {}), **kwargs}
        elif "aux_logits" in build and wanted_aux is None:
            build["aux_logits"] = any("aux" in k.lower() for k in state)
        # The file's classes: its main head's rows, found on a shapes-only (meta) copy.
        with torch.device("meta"):
            probe = create_model(name, num_classes=info.num_classes, **build)
        state, _, _ = to_model_layout(probe, state)
        main_head = [h for h in head_layers(probe, info.num_classes) if "aux" not in h.lower()]
        key = f"{main_head[-1]}.weight" if main_head else ""
        classes = int(state[key].shape[0]) if key in state else info.num_classes
    else:
        assert ws is not None
        state, classes = load_published(ws), ws.num_classes
    model = create_model(name, num_classes=classes, **build)
    load_weights(model, state, strict=True)
    if name in _KEEP_AUX_BY_DEFAULT and getattr(model, "aux_logits", False):
        keep = _KEEP_AUX_BY_DEFAULT[name] if wanted_aux is None else wanted_aux
        if not keep:
            _drop_aux_heads(model)
    model.pretrained = ws
    model.eval_transforms = default.transforms if default is not None else None
    # what rebuilds this architecture without the weights (a fine-tuned run's checkpoint)
    model.build_kwargs = {k: v for k, v in build.items() if k != "init_weights"}
    if "aux_logits" in build:
        model.build_kwargs["aux_logits"] = bool(getattr(model, "aux_logits", False))
    if num_classes is not None and num_classes != classes:
        model.head_names = replace_head(model, num_classes, classes)
    return model
