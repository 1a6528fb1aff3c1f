"""Take docs/explorer.md's screenshots from the real page.

Claim: the pictures in docs/explorer.md are the explorer as it runs, not mock-ups.
Evidence: this script starts the explorer on 127.0.0.1, drives Debian's chromium with
Playwright, and writes docs/explorer-*.png.

    PYTHONPATH=src python scripts/explorer_screenshots.py --runs DIR   # a folder of runs
"""

from __future__ import annotations

import argparse
import shutil
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from cnnlab.explorer import make_server

DOCS = Path(__file__).resolve().parents[1] / "docs"

# (file, URL hash, element to capture or None for the window, window height)
SCROLL_TO_INCEPTION = (  # the diagram scrolled to maxpool2, just above inception3a
    "const n = document.querySelector(\"[data-node='maxpool2']\");"
    "n.closest('.diagram').scrollTop = n.transform.baseVal[0].matrix.f - 20;")
SHOTS = [
    ("explorer-models.png", "#/models?q=resnet&sort=params&dir=desc", None, 700),
    ("explorer-model.png", "#/model/resnet50?input=3x224x224", None, 820),
    ("explorer-diagram.png", "#/model/googlenet?input=3x224x224&expand=inception3a,"
     "inception3a.branch2", ".split", 0),  # scrolled: SCROLL_TO_INCEPTION
    ("explorer-compare.png", "#/compare?models=resnet50,vgg16,mobilenet_v2,efficientnet_b0",
     "#bubble-chart", 0),
    ("explorer-compare-stages.png", "#/compare?models=resnet50,vgg16,mobilenet_v2,"
     "efficientnet_b0", "#stage-charts", 0),
    ("explorer-runs.png", "#/runs/lenet5_modern-mnist-sample", None, 760),
    ("explorer-lectures.png", "#/lectures", None, 760),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", help="folder of training runs to show")
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    args = parser.parse_args()
    server = make_server(port=0, runs=args.runs, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        for name, hash_, selector, height in SHOTS:
            width = 1500 if name == "explorer-diagram.png" else 1280  # all four branches
            page = browser.new_page(viewport={"width": width, "height": height or 900})
            page.goto(server.url + hash_)
            page.wait_for_function("document.body.dataset.ready === 'true'", timeout=120_000)
            if name == "explorer-diagram.png":
                page.evaluate(SCROLL_TO_INCEPTION)
            target = page.locator(selector) if selector else page
            target.screenshot(path=str(DOCS / name))
            print(f"wrote docs/{name} ({(DOCS / name).stat().st_size // 1024} KiB)")
            page.close()
        browser.close()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
