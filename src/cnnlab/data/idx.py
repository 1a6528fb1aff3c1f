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
# The most data one IDX file may declare: 4 GiB (MNIST's train images are 47 MB, EMNIST's
# largest 0.6 GB). A gzip bomb declares more than its few compressed bytes could honestly hold.
MAX_IDX_BYTES = 4 << 30


class _Reader:
    """Reads an IDX file's bytes in order, decompressing gzip lazily: only what is asked for
    is ever decompressed, so a header can be judged before the data is touched."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.fh = path.open("rb")
        self.gz = self.fh.read(2) == b"\x1f\x8b"
        self.fh.seek(0)
        self.stream = gzip.GzipFile(fileobj=self.fh, mode="rb") if self.gz else self.fh

    def read(self, n: int) -> bytes:
        try:
            return self.stream.read(n)
        except (EOFError, OSError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise DatasetError(f"{self.path}: truncated or corrupt gzip data ({exc})") from None

    def close(self) -> None:
        self.stream.close()
        self.fh.close()


def read_idx(path: str | Path, max_bytes: int = MAX_IDX_BYTES) -> torch.Tensor:
    """One IDX file (gzipped or raw) as a uint8 tensor of the shape its header declares.

    The header is read first: a declared size over ``max_bytes`` (or, raw, over the file's
    size) is refused before any data is read; so are a file cut short and bytes after the data.
    """
    path = Path(path)
    reader = _Reader(path)
    try:
        return _read_idx(reader, path, max_bytes)
    finally:
        reader.close()


def _read_idx(reader: _Reader, path: Path, max_bytes: int) -> torch.Tensor:
    magic = reader.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00":
        raise DatasetError(
            f"{path}: not an IDX file (magic {magic.hex() or 'empty'}; "
            "expected 0000 then type code and dimension count)"
        )
    type_code, ndim = magic[2], magic[3]
    if type_code != _UBYTE:
        raise DatasetError(
            f"{path}: IDX type code 0x{type_code:02x} is not supported (only unsigned byte 0x08)"
        )
    dims_bytes = reader.read(4 * ndim)
    if ndim == 0 or len(dims_bytes) < 4 * ndim:
        raise DatasetError(f"{path}: IDX header declares {ndim} dimensions but is cut short")
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    expected = 1
    for d in dims:
        expected *= d
    declared = f"{path}: IDX header declares shape {dims} = {expected:,} bytes of data"
    if expected > max_bytes:
        raise DatasetError(f"{declared}, more than the {max_bytes:,} cnnlab reads "
                           "(a corrupt file, or a gzip bomb); nothing was decompressed")
    if not reader.gz and 4 + 4 * ndim + expected != reader.size:
        raise DatasetError(f"{declared} but the file holds {reader.size - 4 - 4 * ndim:,}")
    data = reader.read(expected)
    if len(data) != expected:
        raise DatasetError(f"{declared} but the file holds {len(data):,}")
    if reader.read(1):
        raise DatasetError(f"{declared} but the file holds more (trailing bytes)")
    if expected == 0:  # torch.frombuffer refuses an empty buffer
        return torch.zeros(dims, dtype=torch.uint8)
    # bytearray: torch wants a writable buffer; this is the one copy of the data.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(dims)


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
    if len(images) == 0:
        raise DatasetError(f"{image_path}: holds 0 images (its IDX header declares a count of 0)")
    if 0 in images.shape[1:]:
        raise DatasetError(f"{image_path}: holds images of {images.shape[1]}x{images.shape[2]} "
                           "pixels; expected at least 1x1 (MNIST's are 28x28)")
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
    if name in MNIST_FAMILY:
        for stems in SPLIT_FILES.values():
            for stem in stems:
                _check_not_another_dataset(find_idx_file(root, stem), name)
    return {split: load_idx_split(root, split, classes, name) for split in SPLIT_FILES}


_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "kmnist": "KMNIST"}


def _check_not_another_dataset(path: Path, name: str) -> None:
    """The three datasets share file names and shapes; the catalog's MD5s of the official
    files tell them apart (milliseconds), so Fashion-MNIST given MNIST's files says so."""
    from cnnlab.data.catalog import SOURCES
    from cnnlab.data.download import md5_file

    if path.suffix != ".gz":
        return  # the catalog knows the official gzipped files only
    md5 = md5_file(path)
    for other in MNIST_FAMILY:
        if other != name and any(f.md5 == md5 for f in SOURCES[other].files):
            raise DatasetError(
                f"{path}: {path.name} is the official {_TITLES[other]} file, not {name}'s "
                f"(its MD5 is in the {other} catalog); use --data {other}, or put the "
                f"{name} files in this folder"
            )
