"""Write docs/lecture-numbers.md: every number the lectures state, recomputed by the analyser.

Claim: the lecture slides' arithmetic (VGG16 memory/params, AlexNet conv1, LeNet, the
Inception module's cost, small filters, GoogLeNet vs AlexNet, GAP vs FC, ResNet-50 FLOPs)
reproduced by ``cnnlab.analysis`` on meta tensors, with the slides' own slips shown.
Evidence: this script; `tests/test_lecture_numbers.py` fails when the file is stale and
re-derives the key figures by hand.

    PYTHONPATH=src python scripts/lecture_numbers.py          # rewrite the file
    PYTHONPATH=src python scripts/lecture_numbers.py --check  # exit 1 if stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from cnnlab.analysis.lectures import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "lecture-numbers.md"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is stale: run python scripts/lecture_numbers.py", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
