"""Saving a matplotlib figure as PNG and SVG side by side, each written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["figure_stem", "save_figure"]

FORMATS = (".png", ".svg")


def figure_stem(path: str | Path) -> Path:
    """``x.png``, ``x.svg`` or ``x`` -> ``x`` (the stem both files share); checked now."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; name a file such as "
                         f"{str(path / 'figure.png')!r}")
    if path.suffix.lower() in FORMATS:
        path = path.with_suffix("")
    elif path.suffix:
        raise ValueError(f"figures are written as .png and .svg, not {path.suffix!r}: {path}")
    if not path.parent.is_dir():
        raise ValueError(f"folder {str(path.parent)!r} does not exist")
    return path


def save_figure(fig: Any, path: str | Path, *, dpi: int = 100) -> list[Path]:
    """Write ``fig`` to PATH.png and PATH.svg and close it; returns both paths."""
    import matplotlib.pyplot as plt

    from cnnlab.train.checkpoint import replacing

    stem = figure_stem(path)
    written = []
    try:
        for suffix in FORMATS:
            target = stem.with_name(stem.name + suffix)
            with replacing(target) as tmp:
                fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
            written.append(target)
    finally:
        plt.close(fig)
    return written
