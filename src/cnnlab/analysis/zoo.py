"""The zoo as rows of data: declared facts plus the analyser's MACs where a paper gives none.

One row per model, for ``cnnlab models``, the README table and the explorer page alike.
A declared figure (paper or torchvision) is shown as declared; otherwise the MACs are the
analyser's count on meta tensors at the model's own input (``macs_computed``). Counting all
93 models takes most of a minute on two cores, so the counts are cached in ``zoo_macs.json``
(``python scripts/sync_readme.py`` rewrites it; a registry-wide test checks every entry
against a fresh count). A model missing from the cache (one registered by the user) is
counted on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cnnlab.registry import list_models, model_info, natural_key

__all__ = ["SORT_KEYS", "ZooRow", "cached_macs", "computed_macs", "write_macs_cache", "zoo_rows"]

CACHE = Path(__file__).with_name("zoo_macs.json")
SORT_KEYS = ("name", "params", "macs", "top1", "year")


@dataclass(frozen=True)
class ZooRow:
    name: str
    family: str
    year: int
    params: int
    macs: int  # declared, else computed by the analyser at input_size
    macs_computed: bool
    input_size: tuple[int, int, int]
    dataset: str
    top1: float | None  # published accuracy in percent, on ``dataset``


@cache
def cached_macs() -> dict[str, int]:
    """The analyser's MACs per model at its input_size, as last written to the cache."""
    return json.loads(CACHE.read_text()) if CACHE.is_file() else {}


def computed_macs(name: str) -> int:
    """The analyser's MACs for a registered model at its own input_size."""
    macs = cached_macs().get(name)
    if macs is None:
        from cnnlab.analysis.summary import summarize

        macs = cached_macs()[name] = summarize(name).total_macs
    return macs


def write_macs_cache() -> bool:
    """Count every registered model afresh and rewrite the cache; True when it changed."""
    from cnnlab.analysis.summary import summarize

    fresh = {name: summarize(name).total_macs for name in list_models()}
    changed = fresh != cached_macs()
    if changed:
        CACHE.write_text(json.dumps(fresh, indent=1) + "\n")
        cached_macs.cache_clear()
    return changed


def _row(name: str) -> ZooRow:
    info = model_info(name)
    return ZooRow(
        name=name, family=info.family, year=info.year, params=info.params,
        macs=computed_macs(name) if info.macs is None else info.macs,
        macs_computed=info.macs is None, input_size=info.input_size, dataset=info.dataset,
        top1=info.top1,
    )


def zoo_rows(
    pattern: str = "*",
    *,
    family: str | None = None,
    dataset: str | None = None,
    sort: str = "name",
) -> list[ZooRow]:
    """The models matching ``pattern`` (and ``family``/``dataset``), sorted by ``sort``:
    name (natural order), params, macs and year ascending, top1 best first; ties and models
    with no published top-1 follow in name order."""
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    names = list_models(pattern)
    if family is not None:
        families = sorted({model_info(n).family for n in list_models()})
        if family.lower() not in families:
            raise ValueError(f"unknown family {family!r}; one of {', '.join(families)}")
        names = [n for n in names if model_info(n).family == family.lower()]
    if dataset is not None:
        names = [n for n in names if model_info(n).dataset == dataset.lower()]
    rows = [_row(n) for n in names]
    rows.sort(key=lambda r: natural_key(r.name))
    if sort == "top1":
        rows.sort(key=lambda r: (r.top1 is None, -(r.top1 or 0.0)))
    elif sort != "name":
        rows.sort(key=lambda r: getattr(r, sort))
    return rows
