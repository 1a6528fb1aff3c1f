"""A run folder: one run per folder, one writer at a time, nothing of another run mixed in.

``claim(out)`` takes an OS lock (``fcntl.flock``) on ``out/.lock`` for as long as a run writes
the folder. The kernel drops the lock when the process ends in any way (exit, exception,
``kill -9``), so a lock left by a killed process never blocks the next run: the stale file is
simply locked again. While it holds the lock, a run removes the temporary files
(``.NAME.tmp-PID...``) that writers killed mid-write left behind, if their PID is dead.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnlab.train.checkpoint import CHECKPOINT

__all__ = [
    "CHECKPOINT",
    "RUN_FILES",
    "checkpoint_path",
    "claim",
    "fresh_default",
    "holds_run",
    "remove_run_files",
    "remove_stale_temporaries",
]

LOCK = ".lock"
# What a run writes; --overwrite removes exactly these (other files in the folder are kept).
RUN_FILES = (CHECKPOINT, "metrics.jsonl", "metrics.csv", "curves.png", "model.safetensors",
             "best.safetensors")
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)(\.[^.]*)?$")  # save_atomic's and replacing()'s


def checkpoint_path(run_folder: str | Path) -> Path:
    """Where a run folder keeps its checkpoint (the one place every writer and reader uses)."""
    return Path(run_folder) / CHECKPOINT


def holds_run(folder: str | Path) -> bool:
    folder = Path(folder)
    return any((folder / name).exists() for name in RUN_FILES)


def fresh_default(base: str | Path) -> Path:
    """``base`` if it holds no run yet, else the first of ``base-2``, ``base-3``, ... that
    holds none and that no run is starting in (the default ``runs/MODEL-DATA`` never reuses
    an earlier run's folder)."""
    base = Path(base)
    candidate, n = base, 1
    while holds_run(candidate) or (candidate / LOCK).exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def remove_run_files(folder: Path) -> None:
    """--overwrite: the earlier run's files go before the new run writes any, so the folder
    never holds a mix of the two."""
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of writers that died mid-write (dead PIDs only)."""
    removed = []
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class FolderInUse(ValueError):
    """Another process holds the run folder's lock."""


@contextmanager
def claim(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block; refuse at once if another process holds it."""
    folder = Path(folder)
    lock_file = folder / LOCK
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FolderInUse(
                f"run folder {str(folder)!r} is in use by another cnnlab run (pid {holder}); "
                "wait for it to end, or choose another folder with --out"
            ) from None
        # The holder we waited on may have unlinked the file before we locked it: then our
        # lock is on a name nobody else sees; take the lock of the file that is there now.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_file).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        remove_stale_temporaries(folder)
        yield folder
    finally:
        lock_file.unlink(missing_ok=True)
        os.close(fd)  # releases the lock
