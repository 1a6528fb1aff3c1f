"""The user's training runs, read from one folder and nothing outside it.

A run is a sub-folder holding ``metrics.jsonl`` (one JSON object per epoch, written by
:func:`cnnlab.train.metrics.write_logs`). The recipe and run facts come from the
checkpoint, loaded with ``torch.load(weights_only=True)`` (plain tensors and containers,
never code) and memory-mapped so a large checkpoint costs no reading; when there is none,
``model.safetensors``' JSON header names the model and the recipe. Every path is resolved
and must stay inside the runs folder, so a symlink pointing out of it is refused.
"""

from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path
from typing import Any

__all__ = ["RunNotFound", "RunsFolder"]

METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
MAX_METRICS_BYTES = 16 * 2**20  # a metrics log larger than this is not a cnnlab log
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")


class RunNotFound(LookupError):
    """No run of that name in the runs folder (or one that points outside it)."""


class RunsFolder:
    """Read-only view of ``root``: the runs are its sub-folders with a metrics log."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self._lock = threading.Lock()
        self._facts: dict[tuple[str, int, int], dict[str, Any]] = {}

    def _inside(self, path: Path) -> Path | None:
        """``path`` resolved (symlinks followed), or None if that leaves the root."""
        assert self.root is not None
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        return real if real.is_relative_to(self.root) else None

    def _folder(self, run_id: str) -> Path:
        if self.root is None:
            raise RunNotFound("no runs folder was given: start with `cnnlab serve --runs DIR`")
        if not _RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
            raise RunNotFound(f"no run {run_id!r}: a run id is a folder name in the runs folder")
        folder = self._inside(self.root / run_id)
        if folder is None or not folder.is_dir() or self._file(folder, METRICS) is None:
            raise RunNotFound(f"no run {run_id!r} in the runs folder; see /api/runs")
        return folder

    def _file(self, folder: Path, name: str) -> Path | None:
        path = self._inside(folder / name)
        return path if path is not None and path.is_file() else None

    def ids(self) -> list[str]:
        if self.root is None or not self.root.is_dir():
            return []
        found = []
        for child in sorted(self.root.iterdir()):
            if _RUN_ID.fullmatch(child.name):
                folder = self._inside(child)
                if folder is not None and folder.is_dir() and self._file(folder, METRICS):
                    found.append(child.name)
        return found

    def listing(self) -> list[dict[str, Any]]:
        """One line per run: id, model, recipe, epochs and the final metrics."""
        out = []
        for run_id in self.ids():
            try:
                run = self.get(run_id)
            except RunNotFound:
                continue  # removed while listing
            out.append({k: run[k] for k in ("id", "model", "data", "recipe", "epochs", "final",
                                             "best", "error")})
        return out

    def get(self, run_id: str) -> dict[str, Any]:
        """Everything the runs page shows: the epoch rows, recipe, run facts, final metrics."""
        folder = self._folder(run_id)
        history, error = _read_metrics(self._file(folder, METRICS))
        facts = self._run_facts(folder)
        final = history[-1] if history else {}
        best = {}
        for split in ("train", "val", "test"):
            values = [r[f"{split}_top1"] for r in history if r.get(f"{split}_top1") is not None]
            if values:
                best[f"{split}_top1"] = max(values)
        return {
            "id": run_id,
            "model": facts.get("model"),
            "data": facts.get("data"),
            "recipe": facts.get("recipe"),
            "config": facts.get("config"),
            "run": facts.get("run"),
            "epochs": len(history),
            "history": history,
            "final": final,
            "best": best,
            "files": sorted(p.name for p in folder.iterdir()
                            if not p.name.startswith(".") and self._file(folder, p.name)),
            "error": error or facts.get("error"),
        }

    def _run_facts(self, folder: Path) -> dict[str, Any]:
        """Model, data, recipe (name and fields) and run facts, cached by file identity."""
        ckpt = self._file(folder, CHECKPOINT)
        weights = self._file(folder, WEIGHTS)
        source = ckpt or weights
        if source is None:
            return {}
        stat = source.stat()
        key = (str(source), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._facts.get(key)
        if cached is not None:
            return cached
        facts = _checkpoint_facts(ckpt) if ckpt is not None else _weights_facts(source)
        with self._lock:
            self._facts[key] = facts
        return facts


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities (a diverged run's loss) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _read_metrics(path: Path | None) -> tuple[list[dict[str, Any]], str | None]:
    if path is None:
        return [], "no metrics.jsonl"
    if path.stat().st_size > MAX_METRICS_BYTES:
        return [], f"metrics.jsonl is larger than {MAX_METRICS_BYTES // 2**20} MiB; not read"
    rows, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1  # a line torn by a crash mid-write
            continue
        if isinstance(row, dict):
            rows.append(_clean(row))
    return rows, (f"{bad} unreadable line(s) in metrics.jsonl skipped" if bad else None)


def _checkpoint_facts(path: Path) -> dict[str, Any]:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file is reported, not raised
        return {"error": f"checkpoint.pt not readable: {str(exc).splitlines()[0][:200]}"}
    if not isinstance(ckpt, dict):
        return {"error": "checkpoint.pt is not a cnnlab checkpoint"}
    config: dict[str, Any] = ckpt["config"] if isinstance(ckpt.get("config"), dict) else {}
    run: dict[str, Any] = ckpt["run"] if isinstance(ckpt.get("run"), dict) else {}
    run = {k: v for k, v in run.items() if k != "classes"} | (
        {"classes": len(run["classes"])} if isinstance(run.get("classes"), list) else {})
    return _clean({
        "model": ckpt.get("model_name") or run.get("model"),
        "data": run.get("data"),
        "recipe": config.get("name"),
        "config": config,
        "run": run,
    })


def _weights_facts(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"model.safetensors not readable: {str(exc).splitlines()[0][:200]}"}
    return {"model": meta.get("model"), "recipe": meta.get("recipe"), "config": None,
            "run": None, "data": None}
