"""`cnnlab summary | rf | erf | calc conv`: formats, numbers and one-line errors."""

from __future__ import annotations

import csv
import io
import json

import pytest

from cnnlab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_json_has_rows_totals_and_conventions(capsys):
    code, out, _ = run(capsys, "summary", "alexnet", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["totals"]["params"] == 61_100_840
    assert data["totals"]["receptive_field"]["size"] == 195
    conv1 = next(r for r in data["rows"] if r["name"] == "features.0")
    # 64 filters of 11x11x3 on a 224 input with padding 2: (224+4-11)//4+1 = 55
    assert conv1["output_shape"] == [1, 64, 55, 55]
    assert conv1["macs"] == 55 * 55 * 64 * 11 * 11 * 3
    assert "FLOPs = 2 x MACs" in data["conventions"]


def test_summary_csv_and_markdown_and_table(capsys):
    code, out, _ = run(capsys, "summary", "alexnet", "--format", "csv", "--depth", "1")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert [r[0] for r in rows[1:]] == ["input", "features", "avgpool", "classifier"]
    code, out, _ = run(capsys, "summary", "alexnet", "--format", "markdown", "--batch", "2")
    assert code == 0 and "| features.0 | Conv2d | 2x64x55x55 |" in out
    code, out, _ = run(capsys, "summary", "alexnet", "--dtype", "fp16")
    assert code == 0 and "61,100,840" in out and "float16" in out


def test_rf_lists_stages(capsys):
    code, out, _ = run(capsys, "rf", "alexnet", "--input", "3x224x224")
    assert code == 0
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
             if line.startswith("│")]
    # Araujo et al.'s recurrence by hand, (k, s, p) = conv1 (11, 4, 2), pool (3, 2, 0),
    # conv2 (5, 1, 2), pool, three 3x3 'same' convs, pool:
    # size 11 -> 11+2*4 = 19 -> 19+4*8 = 51 -> 51+2*8 = 67 -> 67+3*2*16 = 163 -> 163+2*16 = 195;
    # jump 4 -> 8 -> 16 -> 32; start (10/2-2) = 3 -> 3+1*4 = 7 -> 7 -> 7+1*8 = 15 -> 15+1*16 = 31
    # No SE gates: the local field (last column) is the field itself.
    assert cells == [
        ["0", "features.2", "1x64x27x27", "19", "8", "7", "19"],
        ["1", "features.5", "1x192x13x13", "67", "16", "15", "67"],
        ["2", "features.12", "1x256x6x6", "195", "32", "31", "195"],
        ["features", "forward_features", "", "195", "32", "31", "195"],
    ]


def test_erf_writes_png(capsys, tmp_path):
    png = tmp_path / "erf.png"
    code, out, _ = run(capsys, "erf", "alexnet", "--layer", "features.5", "--input", "3x95x95",
                       "--samples", "1", "--out", str(png))
    assert code == 0 and "radius" in out and "theoretical field 67 px" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_calc_conv_lecture_numbers(capsys):
    code, out, _ = run(capsys, "calc", "conv", "--n", "227", "--k", "11", "--s", "4",
                       "--c-in", "3", "--c-out", "96")
    assert code == 0
    assert "= 55" in out and "34,944" in out and "290,400" in out
    assert f"= {55 * 55 * 96 * 11 * 11 * 3:,}" in out  # MACs: each output value, 11x11x3
    code, out, _ = run(capsys, "calc", "conv", "--n", "7", "--k", "3", "--s", "3")
    assert code == 0 and "= 2" in out and "floored" in out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["summary", "alexnet", "--input", "3x224"], "ambiguous"),  # HxW, or C=3 and H=224?
        (["summary", "alexnet", "--input", "3by224"], "must be CxHxW"),
        (["summary", "alexnet", "--input", "3x0x224"], "between 1 and"),
        (["summary", "alexnet", "--input", "3x-5x224"], "between 1 and"),
        (["summary", "alexnet", "--input", "3x32x32"], "too small"),
        (["summary", "alexnet", "--batch", "0"], "--batch must be an integer in [1, "),
        (["summary", "nosuchnet"], "unknown model"),
        (["rf", "alexnet", "--input", "x"], "must be CxHxW"),
        (["rf", "alexnet", "--input", "99999999999"], "between 1 and 2,147,483,647"),
        (["rf", "alexnet", "--input", "2147483647"], "too large"),  # 3x(2^31-1)^2 overflows
        (["erf", "alexnet", "--layer", "nope"], "no layer named"),
        (["calc", "conv", "--n", "3", "--k", "5"], "smaller than 1"),
        (["calc", "conv", "--n", "0", "--k", "5"], "--n must be an integer >= 1"),
        (["calc", "conv", "--n", "5", "--k", "3", "--c-in", "3"], "give both"),
        (["erf", "alexnet", "--layer", "features.5", "--out", "erf.jpg"], "ending in .png"),
        (["erf", "alexnet", "--layer", "features.5", "--out", "/no/such/folder/erf.png"],
         "'/no/such/folder' does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, match):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("cnnlab: error:")
    assert match in err
    assert out == ""  # nothing half-done on stdout before the error


def test_erf_out_folder_is_rejected_before_any_work(capsys, tmp_path):
    # matplotlib would silently write FOLDER.png next to it and we would print "wrote FOLDER"
    code, out, err = run(capsys, "erf", "alexnet", "--layer", "features.5", "--out",
                         str(tmp_path))
    assert (code, out) == (2, "") and "is a folder" in err and err.count("\n") == 1
    assert not tmp_path.with_suffix(".png").exists()
