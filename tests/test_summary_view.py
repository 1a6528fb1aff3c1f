"""`summarize`'s defaults and `cnnlab summary`'s views: fitted, wide, extra columns, tree."""

from __future__ import annotations

import json
import re

import pytest

from cnnlab.analysis import render, summarize
from cnnlab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_cells(text):
    """The cells of each table line (framed or not: a tight fit leaves out the frame)."""
    rows = []
    for line in text.splitlines():
        if "│" in line or "┃" in line:
            cells = [c.strip() for c in re.split(r"[│┃]", line)]
            rows.append(cells[1:-1] if line.startswith(("│", "┃")) else cells)
    return rows


def test_default_input_is_the_models_own():
    s = summarize("resnet20")
    assert s.input_size == (3, 32, 32)
    # He et al. 2016 Sec. 4.2 on 32x32, by hand: conv1 32*32*16*27 = 442,368; stage 1 six
    # 3x3 16->16 convs at 32x32, 2,359,296 each; stages 2 and 3 the same count per conv
    # (half the side, twice the width) except the first, 1,179,648; fc 64*10: 40,551,040.
    assert s.total_macs == 442_368 + 6 * 2_359_296 + 2 * (1_179_648 + 5 * 2_359_296) + 640
    lenet = summarize("lenet5")  # 1x32x32: it used to fail at 3x224x224
    assert lenet.input_size == (1, 32, 32) and lenet.total_params == 60_000
    c1 = next(r for r in lenet.layers if r.name == "features.c1")
    assert c1.output_shape == (1, 6, 28, 28)  # LeCun et al. 1998, Fig. 2: C1 6@28x28


def test_batch_first_input_size():
    s = summarize("resnet20", (4, 3, 32, 32))
    assert s.batch_size == 4 and s.input_size == (3, 32, 32)
    assert s.layers[0].output_shape == (4, 3, 32, 32)
    assert s.total_macs == summarize("resnet20").total_macs  # still per image
    with pytest.raises(ValueError, match="batch-first with batch 4, but batch_size is 2"):
        summarize("resnet20", (4, 3, 32, 32), batch_size=2)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        summarize("resnet20", (1, 1, 3, 32, 32))


def test_module_without_registry_entry_needs_an_input_size():
    import torch.nn as nn

    with pytest.raises(ValueError, match="give input_size"):
        summarize(nn.Conv2d(1, 1, 3))


def test_print_summary_prints_the_table(capsys):
    s = summarize("resnet20")
    print(s)
    out = capsys.readouterr().out
    assert "│ conv1 " in out and "params 269,722" in out and "40,551,040" in out
    assert repr(s) == str(s)


def test_fitted_table_cuts_nothing_in_80_columns():
    s = summarize("densenet121")  # names up to features.denseblock4.denselayer16.conv2
    text = render.fitted_text(s, width=80)
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    names = [c[0] for c in table_cells(text)[1:]]
    assert "features.denseblock4.denselayer16.conv2" in names
    assert len(names) == len(s.rows)
    assert "left out to fit 80 columns: values, type, RF (--wide)" in " ".join(text.split())
    asked = render.fitted_text(summarize("resnet20"), width=80, extra=("kernel", "stride"))
    assert table_cells(asked)[0][:3] == ["layer", "kernel", "stride"]  # asked for: kept


def test_cli_compact_by_default_and_wide(capsys):
    code, out, _ = run(capsys, "summary", "alexnet")
    header = table_cells(out)[0]
    assert code == 0 and "act. bytes" not in header and "MACs" in header
    code, out, _ = run(capsys, "summary", "alexnet", "--wide")
    header = table_cells(out)[0]
    assert code == 0 and header[:3] == ["layer", "type", "output shape"]
    assert "act. bytes" in header and "RF start" in header and "…" not in out


def test_input_shape_and_kernel_columns(capsys):
    code, out, _ = run(capsys, "summary", "alexnet", "--input-shape", "--kernel")
    assert code == 0
    cells = table_cells(out)
    header = cells[0]
    conv1 = dict(zip(header, next(c for c in cells if c[0] == "features.0"), strict=True))
    # torchvision's AlexNet conv1: 11x11, stride 4, on the 3x224x224 image -> 64x55x55
    assert conv1["input"] == "3x224x224" and conv1["output"] == "64x55x55"
    assert conv1["kernel"] == "11x11" and conv1["stride"] == "4"
    pool = dict(zip(header, next(c for c in cells if c[0] == "features.2"), strict=True))
    assert pool["kernel"] == "3x3" and pool["stride"] == "2"  # overlapping pooling
    data = json.loads(run(capsys, "summary", "alexnet", "--format", "json")[1])
    row = next(r for r in data["rows"] if r["name"] == "features.0")
    assert row["input_shape"] == [1, 3, 224, 224] and row["kernel_size"] == [11, 11]
    assert row["stride"] == [4, 4]


def test_tree_view_by_module_depth(capsys):
    code, out, _ = run(capsys, "summary", "resnet18", "--input", "3x64x64", "--depth", "2",
                       "--tree", "--wide")
    assert code == 0
    cells = table_cells(out)
    header = cells[0]
    names = [c[0] for c in cells[1:]]
    i = names.index("layer1")
    assert names[i + 1:i + 3] == ["├─ 0", "└─ 1"]
    layer1 = dict(zip(header, cells[1 + i], strict=True))
    block = dict(zip(header, cells[2 + i], strict=True))
    assert layer1["params"] == ""  # counted in its children, so the column adds up
    # BasicBlock 64->64: two 3x3x64x64 convs + two BNs (64 scales, 64 shifts): 73,984
    assert block["params"] == f"{2 * 3 * 3 * 64 * 64 + 2 * 128:,}" and block["type"] == (
        "BasicBlock")
    shown = sum(int(c[header.index("params")].replace(",", "") or 0) for c in cells[1:])
    assert shown == 11_689_512


def test_variant_with_in_chans_and_num_classes(capsys):
    code, out, _ = run(capsys, "summary", "resnet18", "--in-chans", "1", "--num-classes", "10",
                       "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["input_size"] == [1, 224, 224]
    # conv1 7x7x1x64 instead of 7x7x3x64; fc 512x10 + 10 instead of 512x1000 + 1000
    assert data["totals"]["params"] == 11_689_512 - 9_408 + 3_136 - 513_000 + 5_130
    code, _, err = run(capsys, "summary", "lenet5", "--num-classes", "11")
    assert code == 2 and err.count("\n") == 1 and "num_classes" in err
    code, _, err = run(capsys, "summary", "resnet18", "--num-classes", "-1")
    assert code == 2 and "--num-classes must be an integer >= 0, got '-1'" in err
    code, out, _ = run(capsys, "summary", "resnet18", "--num-classes", "0", "--format", "json")
    assert code == 0 and json.loads(out)["totals"]["params"] == 11_689_512 - 513_000  # no fc
