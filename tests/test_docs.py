"""The README's claims hold, and no doc or benchmark names a path of the development machine."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import cnnlab

ROOT = Path(__file__).resolve().parents[1]
# Absolute paths of a developer's machine (a user's clone has none of them).
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|home|Users|root|mnt|opt)/[\w.-]")


def test_readme_tour_states_the_strides_the_backbone_returns():
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "features_only=True, out_indices=" in ln)
    indices = tuple(int(i) for i in re.search(r"out_indices=\(([\d, ]+)\)", line)[1].split(","))
    maps_line = readme.splitlines()[readme.splitlines().index(line) + 1]
    stated = [int(s) for s in re.search(r"strides ([\d/]+)", maps_line)[1].split("/")]
    with torch.device("meta"):
        backbone = cnnlab.create_model("resnet50", features_only=True, out_indices=indices)
    maps = backbone(torch.empty(1, 3, 224, 224, device="meta"))
    assert [224 // m.shape[-1] for m in maps] == stated


def test_docs_and_benchmarks_name_no_machine_paths():
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").rglob("*"),
             *(ROOT / "scripts").rglob("*")]
    found = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
             for f in files if f.is_file() and f.suffix in {".md", ".py", ".txt", ""}
             for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1)
             if MACHINE_PATH.search(line) or str(ROOT) in line]
    assert found == [], "write ../shared/data/mnist or DIR instead:\n" + "\n".join(found)


def test_the_benchmark_records_a_portable_data_path():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_speed",
                                                  ROOT / "benchmarks" / "train_speed.py")
    train_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_speed)
    assert train_speed.portable(str(ROOT.parent / "shared" / "data" / "mnist")) == (
        "../shared/data/mnist")
    assert train_speed.portable("data/mnist") == "data/mnist"
