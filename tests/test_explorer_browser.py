"""The explorer end-to-end in a real browser: Debian's chromium driven by Playwright.

Skipped (with the reason) when Playwright or chromium is missing; `make test` installs both
on the project's machines (README, "The explorer"). Screenshots are saved as artefacts in
build/explorer-screenshots/ (or $CNNLAB_SCREENSHOTS).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from cnnlab.analysis import summarize
from cnnlab.explorer import make_server

from explorer_runs import make_runs

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which(os.environ.get("CNNLAB_CHROMIUM") or "chromium") or shutil.which(
    "chromium-browser")
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is not installed: pip install -e '.[explorer-test]' (make test does)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: apt-get install -y chromium (make test does, as root)")
SHOTS = Path(os.environ.get("CNNLAB_SCREENSHOTS", ROOT / "build" / "explorer-screenshots"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = make_server(port=0, runs=make_runs(tmp_path_factory.mktemp("browser")), quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server, request):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.base = server.url  # type: ignore[attr-defined]
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    page.close()
    expected = getattr(request.function, "expected_console_errors", 0)
    assert len(problems) == expected, problems


def ready(page, hash_part: str = "") -> None:
    """Wait until the view for a hash containing ``hash_part`` has rendered."""
    page.wait_for_function(
        "part => document.body.dataset.ready === 'true' && location.hash.includes(part)",
        arg=hash_part, timeout=60_000)


def go(page, hash_: str) -> None:
    page.goto(page.base + hash_)
    ready(page, hash_.split("?")[0].removeprefix("#"))


def text(page, selector: str) -> str:
    return page.locator(selector).inner_text().strip()


def test_search_open_resize_expand(page):
    go(page, "#/models")
    page.fill("#model-search", "resnet1")
    names = page.locator("#models-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.model)")
    assert "resnet18" in names and all("resnet1" in n for n in names)
    page.click("#models-table a:text-is('resnet18')")
    ready(page, "model/resnet18")

    s = summarize("resnet18")
    assert text(page, "#total-params") == f"{s.total_params:,}" == "11,689,512"
    assert text(page, "#total-macs") == f"{s.total_macs:,}"
    row = next(r for r in s.layers if r.name == "layer1.0.conv1")
    cells = page.locator("#layers-table tr[data-row='layer1.0.conv1'] td").all_inner_texts()
    assert cells[:5] == ["layer1.0.conv1", "Conv2d", "64x56x56", f"{row.params:,}", f"{row.macs:,}"]

    page.fill("#input-size", "3x128x128")
    page.press("#input-size", "Enter")
    ready(page, "input=3x128x128")
    s = summarize("resnet18", (3, 128, 128))
    assert text(page, "#total-macs") == f"{s.total_macs:,}"
    assert text(page, "#total-activations") == f"{s.activation_values:,} values"
    assert text(page, "#total-rf").startswith(str(s.receptive_field.size))
    last = s.layers[-1]
    cells = page.locator(f"#layers-table tr[data-row='{last.name}'] td").all_inner_texts()
    assert cells[2] == "x".join(map(str, last.output_shape[1:])) == "1000"

    # the block diagram: layer1 is one box until expanded, then its blocks, then the add
    assert page.locator("g[data-node='layer1']").count() == 1
    assert page.locator("g[data-node='layer1.0']").count() == 0
    page.click("g[data-node='layer1']")
    page.click("g[data-node='layer1.0']")
    add = page.locator("g[data-node='layer1.0.add']")
    assert add.count() == 1 and "add" in add.get_attribute("class")
    assert "residual add" in add.text_content()
    assert "expand=layer1,layer1.0" in page.url
    # the URL reproduces the view: reloading keeps the size and the expanded block
    page.reload()
    ready(page, "model/resnet18")
    assert page.input_value("#input-size") == "3x128x128"
    assert page.locator("g[data-node='layer1.0.add']").count() == 1
    assert page.locator("#module-tree button[data-module='layer1'][aria-expanded='true']").count()


def test_inception_branches_and_collapse(page):
    go(page, "#/model/googlenet?input=3x224x224&expand=inception3a")
    branches = [f"inception3a.branch{i}" for i in range(1, 5)]
    for b in branches:
        assert page.locator(f"g[data-node='{b}']").count() == 1, b
    cat = page.locator("g[data-node='inception3a.cat']")
    assert "concatenation" in cat.text_content()
    page.click("#module-tree button[data-module='inception3a']")  # collapse it again
    assert page.locator("g[data-node='inception3a']").count() == 1
    assert "expand=" not in page.url


def test_errors_are_shown(page):
    go(page, "#/model/nosuch")
    assert "unknown model 'nosuch'" in text(page, ".error")
    go(page, "#/model/vgg16?input=3x2048x2048")
    assert "more than the explorer's limit" in text(page, "#model-status")


test_errors_are_shown.expected_console_errors = 2  # type: ignore[attr-defined]


def test_compare(page):
    go(page, "#/compare?models=resnet18,vgg16")
    heads = page.locator("#compare-table thead th").all_inner_texts()
    assert heads[1:] == ["resnet18", "vgg16"]
    macs = page.locator("#compare-table tr:has(th:text-is('MACs')) td").all_inner_texts()
    assert macs == [f"{summarize('resnet18').total_macs:,}", f"{summarize('vgg16').total_macs:,}"]
    assert page.locator("#stage-charts svg").count() == 4
    bubbles = page.locator("#bubble-chart .bubble").evaluate_all(
        "els => els.map(e => [e.dataset.label, e.getAttribute('fill-opacity')])")
    labels = dict(bubbles)
    assert labels["resnet18"] == labels["vgg16"] == "0.75" and labels["alexnet"] == "0.35"
    # the user's CIFAR-10 run joins the chart on its dataset
    page.select_option("#bubble-dataset", "cifar10")
    ready(page, "dataset=cifar10")
    assert page.locator("#bubble-chart [data-label='run resnet20-cifar10']").count() == 1


def test_runs(page):
    go(page, "#/runs")
    assert page.locator("#runs-table tr[data-run]").evaluate_all(
        "rows => rows.map(r => r.dataset.run)") == ["resnet20-cifar10", "weights-only"]
    page.click("#runs-table a:text-is('resnet20-cifar10')")
    ready(page, "runs/resnet20-cifar10")
    assert page.locator("#run-curves path").count() >= 3  # train, val, test
    assert "73.7500" in text(page, "#run-final")
    assert "he2016_cifar" in text(page, "#run-recipe")


def test_lectures(page):
    go(page, "#/lectures")
    vgg = text(page, "#lecture-vgg16")
    assert "138,357,544" in vgg and "15,237,608 values" in vgg
    assert "105,415,200 MACs" in text(page, "#lecture-alexnet_conv1")  # 55*55*96*11*11*3
    assert 55 * 55 * 96 * 11 * 11 * 3 == 105_415_200
