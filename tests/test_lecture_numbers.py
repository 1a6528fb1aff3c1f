"""docs/lecture-numbers.md is current, and its key figures agree with hand arithmetic."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from cnnlab import create_model
from cnnlab.analysis import summarize

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "lecture-numbers.md"


@pytest.fixture(scope="module")
def rendered() -> str:
    script = runpy.run_path(str(ROOT / "scripts" / "lecture_numbers.py"), run_name="lecture")
    return script["render"]()


def test_doc_is_not_stale(rendered):
    assert DOC.read_text() == rendered, (
        "docs/lecture-numbers.md is stale: run `PYTHONPATH=src python scripts/lecture_numbers.py`")


def test_vgg16_slide_rows_by_hand(rendered):
    # The slide's rows: input, 13 conv outputs, 5 pools, 3 FCs (values per image).
    convs = 2 * 224**2 * 64 + 2 * 112**2 * 128 + 3 * 56**2 * 256 + 3 * 28**2 * 512 + \
        3 * 14**2 * 512
    pools = 112**2 * 64 + 56**2 * 128 + 28**2 * 256 + 14**2 * 512 + 7**2 * 512
    total = 224**2 * 3 + convs + pools + 4096 + 4096 + 1000
    assert total == 15_237_608  # reference/paper_numbers.md
    assert f"**{total:,} values**" in rendered
    widths = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
              (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    conv_params = sum(9 * a * b + b for a, b in widths)
    fc = 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    assert conv_params + fc == 138_357_544
    assert f"**{conv_params + fc:,}**" in rendered
    assert f"**{fc:,}**" in rendered  # the FC head
    assert f"**{512 * 1000 + 1000:,}**" in rendered  # GAP + FC


def test_alexnet_conv1_by_hand(rendered):
    assert (227 - 11) // 4 + 1 == 55
    assert f"**{11 * 11 * 3 * 96 + 96:,}**" == "**34,944**"
    assert "**34,944**" in rendered and "**55**" in rendered and "**0 parameters**" in rendered


def test_inception_module_by_hand(rendered):
    hw = 28 * 28
    naive = hw * 256 * (128 + 192 * 9 + 96 * 25)
    reduced = hw * 256 * (64 + 64 + 128 + 64) + hw * 64 * (192 * 9 + 96 * 25)
    assert round(naive / 1e6) == 854  # the slide's 854M
    assert f"**{naive / 1e6:.2f}M**" in rendered
    assert f"**{reduced / 1e6:.2f}M**" in rendered and f"{reduced:,}" in rendered
    assert round(reduced / 1e6) == 271 != 353


def test_small_filters_by_hand(rendered):
    c = 64
    assert f"**{27 * c * c:,}**" in rendered and f"**{49 * c * c:,}**" in rendered
    assert "field **6x6**" in rendered


def test_resnet50_stride_placement_by_hand():
    """v1.5 moves each downsampling block's stride from the first 1x1 to the 3x3: the 1x1
    then runs at the input resolution (4x the output's pixels), costing 3·H_out²·C_in·width
    more MACs in layer2.0, layer3.0 and layer4.0."""
    extra = sum(3 * h * h * c_in * w for h, c_in, w in [(28, 256, 128), (14, 512, 256),
                                                           (7, 1024, 512)])
    with torch.device("meta"):
        v1 = create_model("resnet50", stride_in_1x1=True)
    v15 = summarize("resnet50")
    assert v15.total_macs - summarize(v1).total_macs == extra == 231_211_008
    assert v15.total_macs == pytest.approx(4.09e9, rel=2e-3)  # torchvision's 4.09 GFLOPs
