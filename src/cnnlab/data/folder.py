"""Image folders: one sub-folder per class of JPEG/PNG files (ImageNet, Imagenette, your own).

Layouts: ``root/<class>/<image>`` (one split, "train"), or ``root/train/<class>/...`` with
``root/val/...`` and/or ``root/test/...`` beside it. Images decode with Pillow to uint8 RGB
(C, H, W) one at a time, in the loader's workers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnlab.data.dataset import ChannelStatsMixin, DatasetError, PixelMoments

__all__ = ["IMAGENETTE_CLASSES", "EXTENSIONS", "DatasetWarning", "ImageFolderDataset",
           "decode_image", "load_folder"]

EXTENSIONS = (".jpg", ".jpeg", ".png")

# Imagenette's ten ImageNet synsets (https://github.com/fastai/imagenette) and their names.
IMAGENETTE_CLASSES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888605": "parachute",
}


def decode_image(path: str | Path) -> torch.Tensor:
    """One JPEG/PNG file as uint8 RGB (3, H, W); a file Pillow cannot fully decode raises
    :class:`DatasetError` naming it."""
    try:
        with warnings.catch_warnings():
            # Pillow warns of a possible decompression bomb (over MAX_IMAGE_PIXELS) and goes
            # on; here it is refused, in our own one-line error rather than after a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc}); skip_corrupt "
                           "(--skip-corrupt) leaves such images out") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class DatasetWarning(UserWarning):
    """Something in a dataset was left out; the message names it."""


def _images_within(folder: Path, within: Path, outside: list[tuple[Path, Path]]) -> list[Path]:
    """The image files under ``folder``, sorted; a symbolic link (to a file, or a folder of
    them) whose target is not inside ``within`` is left out and added to ``outside``."""
    files = []
    for path in sorted(folder.rglob("*")):
        if not (path.suffix.lower() in EXTENSIONS and path.is_file()):
            continue
        target = path.resolve()
        if not target.is_relative_to(within):
            outside.append((path, target))
        else:
            files.append(path)
    return files


class ImageFolderDataset(ChannelStatsMixin, torch.utils.data.Dataset):
    """``samples`` is a list of (path, label), ``classes`` the sorted class-folder names (or
    their readable names where known); ``ds[i]`` decodes image i to uint8 (3, H, W).

    With ``skip_corrupt=True`` every image is decoded once up front and the ones that fail
    are left out and listed in ``skipped`` as (path, reason); otherwise a corrupt image raises
    when it is read, naming the file.
    """

    def __init__(
        self, root: str | Path, *, skip_corrupt: bool = False,
        class_names: dict[str, str] | None = None, name: str = "", within: Path | None = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DatasetError(f"{root}: no class folders (expected {root}/<class>/<image>.jpg)")
        samples: list[tuple[Path, int]] = []
        outside: list[tuple[Path, Path]] = []
        for label, folder in enumerate(folders):
            files = _images_within(folder, (within or root).resolve(), outside)
            if not files:
                raise DatasetError(f"{folder}: class folder holds no {'/'.join(EXTENSIONS)} images")
            samples += [(p, label) for p in files]
        if outside:
            (path, target), more = outside[0], len(outside) - 1
            warnings.warn(f"{path} -> {target} is outside {within or root} and was skipped"
                          + (f" (and {more} more such links)" if more else ""),
                          DatasetWarning, stacklevel=2)
        self.root = root
        self.wnids = [f.name for f in folders]
        self.classes = [(class_names or {}).get(w, w) for w in self.wnids]
        self.skipped: list[tuple[Path, str]] = []
        if skip_corrupt:
            kept = []
            for path, label in samples:
                try:
                    decode_image(path)
                    kept.append((path, label))
                except DatasetError as exc:
                    self.skipped.append((path, str(exc)))
            if not kept:
                raise DatasetError(f"{root}: every one of {len(samples)} images is corrupt")
            samples = kept
        self.samples = samples
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return decode_image(path), label

    def stats(
        self, max_images: int | None = 2000, seed: int = 0
    ) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units over all pixels of ``max_images`` images
        drawn with ``seed`` (all images when None)."""
        count = len(self)
        order: list[int] = list(range(count))
        if max_images is not None and max_images < count:
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(count, generator=generator)[:max_images].tolist()
        moments = PixelMoments(3)
        for i in order:
            moments.add(self[i][0])
        return moments.mean_std()

    def __repr__(self) -> str:
        return (f"ImageFolderDataset({self.name or self.root}: {len(self)} images, "
                f"{len(self.classes)} classes, {len(self.skipped)} skipped)")


def _split_root(root: Path, name: str) -> Path:
    """Imagenette archives unpack to ``imagenette2-160/`` etc.; accept its parent as root."""
    if name == "imagenette" and not (root / "train").is_dir():
        candidates = sorted(p for p in root.glob("imagenette2*") if (p / "train").is_dir())
        if candidates:
            return candidates[0]
    return root


def load_folder(
    root: str | Path, name: str = "folder", *, skip_corrupt: bool = False
) -> dict[str, ImageFolderDataset]:
    """The splits of an image-folder dataset.

    With ``train/`` (and ``val/``, ``test/``) sub-folders each becomes a split; when there is
    a ``val/`` but no ``test/`` (ImageNet, Imagenette: the test labels are not public and the
    papers report the validation set) "test" is the same dataset as "val". A root of class
    folders alone is one split, "train".
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    root = _split_root(root, name)
    names = IMAGENETTE_CLASSES if name == "imagenette" else None
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if name in ("imagenet", "imagenette") and "train" not in split_dirs:
        raise DatasetError(f"{root}: expected train/ and val/ folders of class folders for {name}")
    if "train" not in split_dirs:
        return {"train": ImageFolderDataset(root, skip_corrupt=skip_corrupt, name=f"{name}/train")}
    splits = {
        split: ImageFolderDataset(path, skip_corrupt=skip_corrupt, class_names=names,
                                  name=f"{name}/{split}", within=root)
        for split, path in split_dirs.items()
    }
    for split, ds in splits.items():
        if ds.wnids != splits["train"].wnids:
            raise DatasetError(
                f"{split_dirs[split]}: class folders differ from train/ "
                f"({len(ds.wnids)} vs {len(splits['train'].wnids)})"
            )
    if "test" not in splits and "val" in splits:
        splits["test"] = splits["val"]
    return splits
