"""Checkpoints that are never half-written, load without unpickling code, and resume exactly.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``. It is written to a temporary file in the same folder,
flushed and fsynced, then renamed over the old one: a crash at any moment leaves either
the previous checkpoint or the new one, never a torn file.

Every checkpoint carries ``sha256``, a hash of everything else it holds (every tensor's dtype,
shape and bytes, and every other value), checked on load: a flipped byte on disk is an error,
never a silently worse model.
"""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

CHECKPOINT = "checkpoint.pt"  # the name of a run folder's checkpoint

__all__ = [
    "capture_rng",
    "load_checkpoint",
    "payload_sha256",
    "read_checkpoint",
    "registered_model",
    "restore_rng",
    "save_atomic",
    "export_safetensors",
    "replacing",
    "unwrap",
]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers (its state_dict keys are clean)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = [kind, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, cached]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary name next to ``path`` to write to: renamed over ``path`` when the block
    ends normally, deleted when it raises, so ``path`` is either the old file or the new one.
    The temporary name keeps the suffix (matplotlib picks the format from it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        # Some writers (safetensors) create files readable by the owner only; a run's files
        # all get the mode the umask gives a new file, as open() does.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def payload_sha256(obj: Any) -> str:
    """SHA-256 of a checkpoint's contents (its ``sha256`` entry left out), in a fixed order."""
    digest = hashlib.sha256()

    def feed(path: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{path}:{t.dtype}:{tuple(value.shape)}:".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                if not (path == "" and key == "sha256"):
                    feed(f"{path}/{key}", value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"{path}:{type(value).__name__}{len(value)};".encode())
            for i, item in enumerate(value):
                feed(f"{path}/{i}", item)
        else:
            digest.update(f"{path}={value!r};".encode())

    feed("", obj)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to ``path`` via temp file + fsync + rename (atomic on POSIX), with the
    contents' ``sha256`` added."""
    path = Path(path)
    obj = dict(obj, sha256=payload_sha256(obj))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the directory entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """A checkpoint file's dict, loaded without executing pickled code (``weights_only``)
    and checked against its ``sha256`` when it has one; its layout is not checked."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{str(path)!r} is a folder without a {CHECKPOINT}; give a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():  # torch's pickle warnings would precede our one line
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torn, foreign, or naming code: say so in one line
        raise ValueError(f"{path}: not a readable cnnlab checkpoint ({_why(exc)})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a cnnlab checkpoint (it holds a {type(ckpt).__name__})")
    if "sha256" in ckpt and ckpt["sha256"] != payload_sha256(ckpt):
        raise ValueError(
            f"{path}: checkpoint is corrupt (its contents do not match the SHA-256 it was "
            "written with); use another copy or an earlier run"
        )
    return ckpt


def _why(exc: Exception) -> str:
    """torch's reason in a few words, without its advice to load with weights_only=False
    (which would run whatever code the file names)."""
    text = str(exc)
    if "TorchScript" in text:
        return "it is a TorchScript archive, an exported model; torch.jit.load opens it"
    if "weights_only" in text or "Weights only" in text:
        return "it holds Python objects other than tensors and plain values"
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# What each use needs; a checkpoint without these is not one of ours (or is damaged).
_NEEDED = ("model_name", "model", "config", "run")
_NEEDED_TO_RESUME = ("optimizer", "rng", "epoch", "step", "metrics")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    to_resume: bool = False) -> dict[str, Any]:
    """A verified cnnlab checkpoint (see :func:`read_checkpoint`) whose layout is checked:
    the entries every use needs (``to_resume``: also those training needs) and a sane ``run``
    record. ``path`` may be a run folder."""
    path = Path(path)
    if path.is_dir() and (path / CHECKPOINT).is_file():
        path = path / CHECKPOINT
    ckpt = read_checkpoint(path, map_location)
    needed = _NEEDED + (_NEEDED_TO_RESUME if to_resume else ())
    missing = [k for k in needed if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a cnnlab checkpoint (no {', '.join(map(repr, missing))} "
                         f"entr{'y' if len(missing) == 1 else 'ies'})")
    if not isinstance(ckpt["model_name"], str):
        raise ValueError(f"{path}: not a cnnlab checkpoint (model_name is not a string)")
    if not isinstance(ckpt["model"], dict) or not isinstance(ckpt["run"], dict):
        raise ValueError(f"{path}: not a cnnlab checkpoint ('model' and 'run' must be dicts)")
    for key in ("num_classes", "in_chans"):
        value = ckpt["run"].get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ValueError(f"{path}: run.{key} must be a positive integer, got {value!r}")
    return ckpt


def registered_model(ckpt: dict[str, Any], path: str | Path) -> str:
    """The checkpoint's model name, if the registry can build it (eval, predict, resume)."""
    from cnnlab.registry import list_models

    name = ckpt["model_name"]
    if name not in list_models():
        raise ValueError(f"{path}: holds a model named {name!r}, which cnnlab does not know "
                         "(`cnnlab models` lists them)")
    return name


def export_safetensors(model_state: dict[str, torch.Tensor], path: str | Path,
                       metadata: dict[str, str] | None = None) -> Path:
    """Weights only, as safetensors (no code, no optimiser), written atomically."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata or {})
    return path
