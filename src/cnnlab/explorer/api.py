"""What the explorer's JSON API returns, as plain data: the server only routes and encodes.

Every function here either returns JSON-ready dicts and lists or raises :class:`ApiError`
with the HTTP status and a one-line message naming what is wrong and what would be right.
"""

from __future__ import annotations

import re
from typing import Any

from cnnlab.analysis.receptive_field import ReceptiveField
from cnnlab.analysis.summary import Row, Summary, summarize
from cnnlab.registry import ModelInfo, list_models, model_info

__all__ = [
    "MAX_ACTIVATION_VALUES", "MAX_SIDE", "ApiError", "analyse", "check_model_request",
    "detail_payload", "lecture_sections", "model_row", "models_table", "parse_input",
]

MAX_SIDE = 4096  # pixels per side of a typed input size
# The largest forward a typed input may need: 10^9 activation values per image (4 GB in
# float32). The analyser itself allocates nothing, but a size this large is a typing slip.
MAX_ACTIVATION_VALUES = 1_000_000_000
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")  # any case, as the registry takes
_SIZE = re.compile(r"(?:(\d{1,5})x)?(\d{1,5})(?:x(\d{1,5}))?")


class ApiError(Exception):
    """An answer that is not a 200: ``status`` and a message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _info(name: str) -> ModelInfo:
    if not _NAME.fullmatch(name):
        raise ApiError(404, f"unknown model {name[:80]!r}: names are letters, digits and "
                            "underscores; see /api/models")
    try:
        return model_info(name)
    except ValueError as exc:  # the registry's message names the closest models
        raise ApiError(404, str(exc)) from None


def model_row(info: ModelInfo) -> dict[str, Any]:
    """One line of the models table: ModelInfo's fields, with the paper flattened."""
    return {
        "name": info.name, "family": info.family, "year": info.year, "title": info.title,
        "authors": info.authors, "url": info.url, "dataset": info.dataset,
        "num_classes": info.num_classes, "input_size": list(info.input_size),
        "params": info.params, "macs": info.macs,
        "gmacs": None if info.macs is None else info.macs / 1e9,
        "top1": info.top1, "top1_error": info.top1_error, "top5_error": info.top5_error,
        "error_source": info.error_source, "recipe": info.recipe,
        "torchvision": info.torchvision, "deviations": list(info.deviations),
    }


def models_table(measured: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every model's row; ``macs_measured``: the analyser's MACs at the model's input, from
    :mod:`cnnlab.analysis.zoo`'s cache (what ``cnnlab models`` shows where a paper states no
    MACs), else from ``measured`` (models this server has analysed), else None."""
    from cnnlab.analysis.zoo import cached_macs

    known = {**(measured or {}), **cached_macs()}
    rows = []
    for name in list_models():
        row = model_row(model_info(name))
        row["macs_measured"] = known.get(name)
        rows.append(row)
    return rows


def parse_input(text: str | None, info: ModelInfo) -> tuple[int, int, int]:
    """``CxHxW``, ``HxW`` or ``S`` (square) -> (C, H, W); channels default to the model's."""
    c0, h0, w0 = info.input_size
    if text is None or text == "":
        return c0, h0, w0
    m = _SIZE.fullmatch(text.strip().lower().replace("×", "x"))
    if m is None:
        raise ApiError(400, f"input {text[:40]!r} is not a size: write CxHxW (e.g. "
                            f"{c0}x{h0}x{w0}), HxW or one side")
    a, b, c = m.groups()
    if a is not None and c is not None:
        size = (int(a), int(b), int(c))
    elif a is not None:  # "HxW"
        size = (c0, int(a), int(b))
    elif c is not None:
        size = (c0, int(b), int(c))
    else:
        size = (c0, int(b), int(b))
    ch, h, w = size
    if ch != c0:
        raise ApiError(400, f"{info.name} takes {c0}-channel images, not {ch}: write "
                            f"{c0}x{h}x{w}")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ApiError(400, f"input {ch}x{h}x{w}: each side must be between 1 and {MAX_SIDE}")
    return size


def analyse(name: str, size: tuple[int, int, int]) -> Summary:
    """The analyser at ``size``, refused (400) where the forward needs more than
    MAX_ACTIVATION_VALUES activation values or cannot run at that size."""
    try:
        summary = summarize(name, size)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if summary.activation_values > MAX_ACTIVATION_VALUES:
        raise ApiError(400, f"{name} at {'x'.join(map(str, size))} needs "
                            f"{summary.activation_values:,} activation values per image, more "
                            f"than the explorer's limit of {MAX_ACTIVATION_VALUES:,}: type a "
                            "smaller size")
    return summary


def _rf(rf: ReceptiveField | None) -> dict[str, Any] | None:
    if rf is None:
        return None
    return {"size": _num(rf.size), "jump": _num(rf.jump), "start": _num(rf.start),
            "global": rf.covers_input}


def _num(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_num(x) for x in v]
    return int(v) if float(v).is_integer() else round(float(v), 4)


def _module_of(row: Row) -> str:
    """The module path a row belongs to: a layer's own path, an op's parent module."""
    path = row.name.split(" ")[0].split("#")[0]
    if row.kind == "op":
        path = path.rpartition(".")[0]
    return path


def _row(row: Row) -> dict[str, Any]:
    return {
        "name": row.name, "type": row.type, "kind": row.kind, "module": _module_of(row),
        "output_shape": list(row.output_shape) if row.output_shape else None,
        "params": row.params, "params_trainable": row.params_trainable,
        "macs": row.macs, "flops": row.flops, "other_ops": row.other_ops,
        "activation_values": row.activation_values, "activation_bytes": row.activation_bytes,
        "receptive_field": _rf(row.receptive_field), "notes": list(row.notes),
        "inputs": list(row.inputs),
    }


def _stages(summary: Summary) -> list[dict[str, Any]]:
    """Params, MACs, activation memory and the receptive field per stage of feature_info.

    A row outside every stage module (a ResNet's maxpool between its stem and layer1) is
    counted with the stage that follows it; rows after the last stage are the "head"."""
    modules = [s["module"] for s in summary.stages]
    keys: list[str | None] = []
    rows = [r for r in summary.layers if r.kind != "input"]
    for row in rows:
        path = row.name.split(" ")[0]
        keys.append(next((m for m in modules if path == m or path.startswith(m + ".")), None))
    following = "head"
    filled: list[str] = []
    for key in reversed(keys):  # fill each gap with the next stage
        following = key or following
        filled.append(following)
    groups: dict[str, dict[str, Any]] = {}
    for row, key in zip(rows, reversed(filled), strict=True):
        g = groups.setdefault(key, {"name": key, "params": 0, "macs": 0, "activation_values": 0})
        g["params"] += row.params
        g["macs"] += row.macs
        g["activation_values"] += row.activation_values
    by_module = {s["module"]: s for s in summary.stages}
    for key, g in groups.items():
        info = by_module.get(key, {})
        shape, rf = summary.module_outputs.get(key, (None, None))
        g.update(channels=info.get("channels"), reduction=info.get("reduction"),
                 output_shape=list(shape) if shape else None, receptive_field=_rf(rf))
    return list(groups.values())


def check_model_request(name: str, size_text: str | None) -> tuple[str, tuple[int, int, int]]:
    """Validate a model request: (registered name, input size). Raises ApiError."""
    info = _info(name)
    return info.name, parse_input(size_text, info)


def detail_payload(name: str, size: tuple[int, int, int], summary: Summary) -> dict[str, Any]:
    """ModelInfo + the analyser's per-layer rows, totals and per-stage figures."""
    info = model_info(name)
    c, h, w = size
    containers = _containers(name)
    modules: dict[str, str] = {}  # the modules holding rows, in order of first use
    for row in summary.layers:
        parts = row.name.split(" ")[0].split(".")
        for i in range(1, len(parts) + 1):
            path = ".".join(parts[:i])
            if path in containers:
                modules.setdefault(path, containers[path])
    return {
        "info": model_row(info),
        "input": [c, h, w],
        "conventions": summary.conventions,
        "totals": {
            "params": summary.total_params, "trainable_params": summary.trainable_params,
            "macs": summary.total_macs, "flops": summary.total_flops,
            "other_ops": summary.total_other_ops,
            "activation_values": summary.activation_values,
            "activation_bytes": summary.activation_bytes, "param_bytes": summary.param_bytes,
            "training_bytes_sgd_batch1": summary.training_bytes(1, "sgd"),
            "receptive_field": _rf(summary.receptive_field),
        },
        "rows": [_row(r) for r in summary.layers],
        "modules": [{"name": m, "type": t} for m, t in modules.items()],
        "stages": _stages(summary),
        "unaccounted": list(summary.unaccounted),
        "limits": {"max_side": MAX_SIDE, "max_activation_values": MAX_ACTIVATION_VALUES},
    }


_CONTAINERS: dict[str, dict[str, str]] = {}


def _containers(name: str) -> dict[str, str]:
    """Class name of every module with sub-modules (what the diagram can collapse), by path;
    the model is built once per name, on meta tensors."""
    found = _CONTAINERS.get(name)
    if found is None:
        import torch

        from cnnlab.registry import create_model

        with torch.device("meta"):
            model = create_model(name)
        found = _CONTAINERS[name] = {
            path: type(m).__name__ for path, m in model.named_modules()
            if path and next(m.children(), None) is not None}
    return found


def lecture_sections() -> list[dict[str, Any]]:
    """docs/lecture-numbers.md's sections, from the same functions that write the file."""
    from cnnlab.analysis.lectures import sections

    out = []
    for key, lines in sections():
        title = lines[0].removeprefix("## ") if lines and lines[0].startswith("## ") else key
        body = lines[1:] if lines and lines[0].startswith("## ") else lines
        out.append({"id": key, "title": title, "markdown": "\n".join(body).strip() + "\n"})
    return out
