"""The IDX format of MNIST, Fashion-MNIST and KMNIST, gzipped or raw.

IDX (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code (0x08 = unsigned byte),
the number of dimensions, then each dimension as a big-endian int32, then the data row-major.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import torch

from cnnlab.data.dataset import DatasetError, ImageTensorDataset

__all__ = ["MNIST_FAMILY", "find_idx_file", "load_idx_dataset", "read_idx"]

# The file names are the same for the three datasets (Table: "FILE FORMATS", LeCun's page).
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MNIST_FAMILY: dict[str, list[str]] = {
    "mnist": [str(d) for d in range(10)],
    # Xiao et al. 2017, Table 1.
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    # Clanuwat et al. 2018, Table 1 (romanised hiragana).
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}

_UBYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":  # not gzip: a raw IDX file
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{path}: truncated or corrupt gzip data ({exc})") from None


def read_idx(path: str | Path) -> torch.Tensor:
    """One IDX file (gzipped or raw) as a uint8 tensor of the shape its header declares."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise DatasetError(
            f"{path}: not an IDX file (magic {data[:4].hex() or 'empty'}; "
            "expected 0000 then type code and dimension count)"
        )
    type_code, ndim = data[2], data[3]
    if type_code != _UBYTE:
        raise DatasetError(
            f"{path}: IDX type code 0x{type_code:02x} is not supported (only unsigned byte 0x08)"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetError(f"{path}: IDX header declares {ndim} dimensions but is cut short")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = 1
    for d in dims:
        expected *= d
    if len(data) - header != expected:
        raise DatasetError(
            f"{path}: IDX header declares shape {dims} = {expected} bytes of data "
            f"but the file holds {len(data) - header}"
        )
    # bytearray: torch wants a writable buffer; this is the one copy of the data.
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(dims)


def find_idx_file(root: Path, stem: str) -> Path:
    """``root/stem.gz`` if present, else the raw ``root/stem``; a clear error if neither is."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: neither {stem}.gz nor {stem} found")


def load_idx_split(root: Path, split: str, classes: list[str], name: str) -> ImageTensorDataset:
    image_stem, label_stem = SPLIT_FILES[split]
    image_path, label_path = find_idx_file(root, image_stem), find_idx_file(root, label_stem)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3:
        raise DatasetError(
            f"{image_path}: expected 3 IDX dimensions (count, rows, cols), "
            f"got shape {tuple(images.shape)}"
        )
    if labels.ndim != 1:
        raise DatasetError(f"{label_path}: expected 1 IDX dimension, got {tuple(labels.shape)}")
    if len(images) != len(labels):
        raise DatasetError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= len(classes):
        raise DatasetError(
            f"{label_path}: label {int(labels.max())} out of range for {len(classes)} classes"
        )
    return ImageTensorDataset(images.unsqueeze(1), labels.to(torch.int64), classes,
                              name=f"{name}/{split}")


def load_idx_dataset(root: str | Path, name: str = "mnist") -> dict[str, ImageTensorDataset]:
    """The train and test splits of an MNIST-family dataset whose four files lie in ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    classes = MNIST_FAMILY[name.removesuffix("-sample")]
    return {split: load_idx_split(root, split, classes, name) for split in SPLIT_FILES}
