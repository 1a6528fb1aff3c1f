"""docs/lecture-numbers.md is current, and its key figures agree with hand arithmetic."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from cnnlab import create_model
from cnnlab.analysis import summarize

from conftest import torchvision_reference

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
    # the slide's 24M is off by 24M - 15.24M; torchvision's form adds a 7x7x512 avgpool
    assert f"wrong by {(24e6 - total) / 1e6:.2f}M values" in rendered
    assert f"forward total is {total + 7 * 7 * 512:,} values" in rendered
    # training at batch 1, fp32: activations + weights + grads + momentum
    params_bytes = 4 * (conv_params + fc)
    train_mib = (4 * (total + 7 * 7 * 512) + 3 * params_bytes) / 2**20
    assert f"{train_mib:,.0f} MiB; the parameters alone are {params_bytes / 2**20:,.0f} MiB" \
        in rendered


def test_alexnet_conv1_by_hand(rendered):
    n = (227 - 11) // 4 + 1
    pool = (n - 3) // 2 + 1
    params = 11 * 11 * 3 * 96 + 96
    assert (n, pool, params) == (55, 27, 34_944)  # the slide's 55x55x96 and "35K"
    assert f"**{n}**: the analyser gives 96x{n}x{n}" in rendered
    assert f"**{params:,}**" in rendered and f"{n * n * 96 * 11 * 11 * 3:,} MACs" in rendered
    assert f"output 96x{pool}x{pool}, **0 parameters**" in rendered
    # the 2012 two-tower net: conv2, conv4 and conv5 see half the channels (groups=2)
    two_tower = (params + 5 * 5 * 48 * 256 + 256 + 3 * 3 * 256 * 384 + 384
                 + 3 * 3 * 192 * 384 + 384 + 3 * 3 * 192 * 256 + 256
                 + 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000)
    assert f"{two_tower:,} parameters (\"60 million\")" in rendered


def test_lecture_lenet_rows_by_hand(rendered):
    # 28x28x1 input, 'same' 5x5 convs (20, 50 filters), 2x2 max pools, FC 500, FC 10.
    rows = [("input", "Input", "1x28x28", 28 * 28, 0, 0),
            ("features.0", "Conv2d", "20x28x28", 20 * 28 * 28, 25 * 20 + 20, 25 * 20),
            ("features.2", "MaxPool2d", "20x14x14", 20 * 14 * 14, 0, 0),
            ("features.3", "Conv2d", "50x14x14", 50 * 14 * 14, 25 * 20 * 50 + 50, 25 * 20 * 50),
            ("features.5", "MaxPool2d", "50x7x7", 50 * 7 * 7, 0, 0),
            ("classifier.0", "Linear", "500", 500, 2450 * 500 + 500, 2450 * 500),
            ("classifier.2", "Linear", "10", 10, 500 * 10 + 10, 500 * 10)]
    for name, kind, shape, values, params, weights in rows:
        assert f"| {name} | {kind} | {shape} | {values:,} | {params:,} | {weights:,} |" \
            in rendered, name
    macs = 28 * 28 * 20 * 25 + 14 * 14 * 50 * 25 * 20 + 2450 * 500 + 500 * 10
    rf = 1 + 4 + 1 + 4 * 2 + 1 * 2  # conv5, pool2 (jump 2), conv5, pool2
    assert f"Total {sum(r[4] for r in rows):,} parameters, {macs:,} MACs, receptive field of " \
        f"the last map {rf}x{rf}." in rendered


def test_googlenet_vs_alexnet_against_torchvision(rendered):
    # torchvision's own published counts, independent of cnnlab's builders
    alex = torchvision_reference()["alexnet"]["num_params_published"]
    goog = torchvision_reference()["googlenet"]["num_params_published"]
    assert f"googlenet {goog:,} vs alexnet {alex:,}: {alex / goog:.1f}x" in rendered
    # as published: the 2012 two-tower AlexNet (above) vs GoogLeNet without aux heads
    # (6,998,552, tests/test_googlenet.py from the paper's Table 1)
    assert f"**{60_965_224 / 6_998_552:.1f}x** fewer" in rendered


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


def test_resnet50_doc_figures(rendered):
    extra = 231_211_008  # derived above
    ref = torchvision_reference()["resnet50"]
    assert f"+{extra / 1e6:.0f}M MACs" in rendered
    assert f"**{ref['gflops_published']:.2f} GMACs**" in rendered  # v1.5 = torchvision's 4.09
    assert f"Both: {ref['num_params_published']:,} parameters" in rendered
