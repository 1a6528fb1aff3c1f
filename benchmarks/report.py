"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections as they are.

Each script owns the block between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``.
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nWritten by the scripts in `benchmarks/`; each section names its command.\n"
)


def machine() -> str:
    """One line describing where the figures were measured."""
    cores = os.cpu_count()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {cores} cores, {device}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    )


def write_section(name: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"<!-- bench:{name}:start -->\n{body.rstrip()}\n<!-- bench:{name}:end -->"
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)}:start -->.*?<!-- bench:{re.escape(name)}:end -->", re.S
    )
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
