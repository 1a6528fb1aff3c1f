"""What a dataset holds: per split, the count, image shape, classes and per-channel mean/std."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.data import load_dataset
from cnnlab.data.dataset import ImageTensorDataset

__all__ = ["dataset_info"]


def dataset_info(
    name: str, root: str | Path | None = None, *, max_images: int = 2000, **options: Any
) -> dict[str, Any]:
    """A JSON-ready summary. Mean/std use every image of in-memory datasets and
    ``max_images`` seeded draws from image folders (whose images have differing sizes)."""
    splits = load_dataset(name, root, **options)
    info: dict[str, Any] = {"name": name, "root": None if root is None else str(root),
                            "splits": {}}
    for split, ds in splits.items():
        if isinstance(ds, ImageTensorDataset):
            mean, std = ds.mean, ds.std
            shape = list(ds.images.shape[1:])
            basis = f"all {len(ds)} images"
        else:
            mean, std = ds.stats(max_images=max_images)
            shape = None
            basis = f"{min(max_images, len(ds))} of {len(ds)} images"
        entry = {
            "count": len(ds), "shape": shape, "classes": len(ds.classes),
            "class_names": list(ds.classes), "mean": mean, "std": std, "stats_from": basis,
        }
        skipped = getattr(ds, "skipped", None)
        if skipped:
            entry["skipped"] = [str(p) for p, _ in skipped]
        info["splits"][split] = entry
    return info
