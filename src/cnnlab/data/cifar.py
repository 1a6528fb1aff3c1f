"""CIFAR-10 and CIFAR-100 from the official "python version" pickles, read safely.

The files (https://www.cs.toronto.edu/~kriz/cifar.html) are Python 2 pickles of dicts whose
``data`` is a uint8 (N, 3072) numpy array (1024 red, 1024 green, 1024 blue values per image,
row-major) and whose labels are lists of ints. A pickle can name any Python callable, so they
are read by :class:`CifarUnpickler`, which resolves only the few globals those files use and
refuses every other one before anything runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.dataset import DatasetError, ImageTensorDataset

__all__ = ["CifarUnpickler", "ForbiddenGlobal", "load_cifar", "read_cifar_pickle"]

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
SPLIT_FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"train": ["train"], "test": ["test"]},
}
META = {"cifar10": ("batches.meta", "label_names"), "cifar100": ("meta", "fine_label_names")}
LABEL_KEY = {"cifar10": "labels", "cifar100": "fine_labels"}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global that CIFAR files never contain."""


class _NDArrayClass:
    """Stands for ``numpy.ndarray`` inside the unpickler: only :func:`_reconstruct` accepts it,
    so the pickle cannot call the real class with arguments of its choosing. No ``__dict__``
    and no slots, so the BUILD opcode cannot set attributes on this shared instance."""

    __slots__ = ()


class _Frozen:
    """An allowed callable as the unpickler hands it out. A plain function would let the
    pickle's BUILD opcode set its ``__defaults__`` or ``__dict__`` and so change how every
    later file in the process is read; this wrapper refuses every attribute assignment."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Any) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise ForbiddenGlobal(f"setting attribute {name!r} on an allowed global")


_NDARRAY = _NDArrayClass()
_NUMPY_RECONSTRUCT: Any = np.ndarray((0,)).__reduce__()[0]  # numpy's own, whatever its module


def _reconstruct(subtype: object, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise ForbiddenGlobal("numpy _reconstruct called with something other than ndarray")
    return _NUMPY_RECONSTRUCT(np.ndarray, shape, _dtype(dtype))


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    # ``copy`` is ignored on purpose: numpy's pickles ask for a copy (dtype("u1", False, True))
    # and then BUILD it with a state whose flags a copy would take, so a crafted file could
    # mark a copy as holding objects. numpy's shared built-in dtypes ignore that state.
    dtype = np.dtype(spec, bool(align))
    if dtype.hasobject:  # object arrays would carry arbitrary pickled objects
        raise ForbiddenGlobal(f"numpy dtype {dtype} holds Python objects")
    if dtype.kind not in "biuf" or dtype.isbuiltin != 1:
        raise ForbiddenGlobal(f"numpy dtype {dtype.str} is not a built-in number type")
    return dtype


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # How Python 3 writes bytes at pickle protocol 2: _codecs.encode(str, "latin1").
    if encoding not in ("latin1", "latin-1"):
        raise ForbiddenGlobal(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class CifarUnpickler(pickle.Unpickler):
    """Resolves only numpy's array reconstruction (ndarray, dtype) and latin-1 bytes; lists,
    dicts, bytes, str and ints need no globals. Any other global raises :class:`ForbiddenGlobal`
    when the pickle names it, before it could be called."""

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _Frozen(_reconstruct),  # numpy 1 (official)
        ("numpy._core.multiarray", "_reconstruct"): _Frozen(_reconstruct),  # numpy 2
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Frozen(_dtype),
        ("_codecs", "encode"): _Frozen(_latin1),
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenGlobal("persistent ids are not allowed")


def _str_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    return obj


def read_cifar_pickle(path: str | Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys, through :class:`CifarUnpickler`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        with path.open("rb") as fh:
            obj = CifarUnpickler(fh, encoding="bytes").load()
    except ForbiddenGlobal as exc:
        raise DatasetError(
            f"{path}: refused to unpickle ({exc}); CIFAR files hold only numpy arrays, "
            "lists, dicts, bytes, str and ints"
        ) from None
    except Exception as exc:  # truncated or garbled: the pickle module raises many types
        raise DatasetError(
            f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return _str_keys(obj)


def _read_batch(path: Path, label_key: str, classes: int) -> tuple[np.ndarray, list[int]]:
    batch = read_cifar_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DatasetError(f"{path}: missing 'data' or {label_key!r} (keys: {sorted(batch)})")
    data, labels = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DatasetError(f"{path}: 'data' must be a uint8 (N, 3072) array, got shape {shape}")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DatasetError(f"{path}: {len(data)} images but {len(labels)} labels")
    for i, label in enumerate(labels):  # 1.5 or "3" would be truncated or misread silently
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < classes:
            raise DatasetError(f"{path}: label {i} is {label!r} ({type(label).__name__}); "
                               f"labels must be integers 0..{classes - 1}")
    return data, labels


def _decode_names(path: Path, key: str) -> list[str]:
    meta = read_cifar_pickle(path)
    names = meta.get(key)
    if not isinstance(names, list):
        raise DatasetError(f"{path}: no list of class names under {key!r}")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar(root: str | Path, name: str = "cifar10") -> dict[str, ImageTensorDataset]:
    """The train and test splits of CIFAR-10 or CIFAR-100 (fine labels) under ``root``.

    ``root`` is the folder holding ``cifar-10-batches-py/`` (``cifar-100-python/``), or that
    folder itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    folder = root / FOLDERS[name] if (root / FOLDERS[name]).is_dir() else root
    meta_file, meta_key = META[name]
    classes = _decode_names(folder / meta_file, meta_key)
    splits = {}
    for split, files in SPLIT_FILES[name].items():
        parts = [_read_batch(folder / f, LABEL_KEY[name], len(classes)) for f in files]
        data = np.concatenate([d for d, _ in parts])
        labels = torch.tensor([label for _, ls in parts for label in ls], dtype=torch.int64)
        images = torch.from_numpy(data).reshape(-1, 3, 32, 32)
        splits[split] = ImageTensorDataset(images, labels, classes, name=f"{name}/{split}")
    return splits
