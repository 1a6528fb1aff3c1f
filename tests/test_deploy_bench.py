"""`cnnlab bench`: the JSON/CSV schema, OOM back-off, the GEMM peak, and Canziani's charts."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
import torch.nn as nn

import cnnlab
from cnnlab.cli import main
from cnnlab.deploy import charts
from cnnlab.deploy.bench import CSV_COLUMNS, BenchConfig, bench, gemm_peak_gflops
from cnnlab.deploy.charts import accuracy_vs_macs, draw_charts, time_vs_batch

TIMM_COLUMNS = ["model", "img_size", "batch", "samples_per_sec", "step_time_ms", "param_count",
                "gmacs"]
OURS = ["p50_ms", "p90_ms", "p99_ms", "peak_mem_mb", "pct_of_peak", "joules_per_img", "variant"]


def test_csv_schema_has_timms_columns_first_then_ours(capsys):
    assert main(["bench", "lenet5", "--batch", "1,4", "--iters", "3", "--warmup", "1",
                 "--gemm-size", "256", "--csv"]) == 0
    text = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(text)))
    header = text.splitlines()[0].split(",")
    assert header[:7] == TIMM_COLUMNS and set(OURS) <= set(header)
    assert [int(r["batch"]) for r in rows] == [1, 4]
    for r in rows:
        assert r["model"] == "lenet5" and r["img_size"] == "32" and r["variant"] == "eager"
        # LeNet-5 (LeCun et al. 1998): 60,000 trainable parameters. MACs by hand, with C3 run
        # as a masked dense 6->16 conv (as the flop counter sees it) and the RBF output not a
        # multiply-accumulate: C1 28*28*6*25 + C3 10*10*16*6*25 + C5 120*400 + F6 84*120.
        assert float(r["param_count"]) == pytest.approx(0.060, abs=1e-3)
        macs = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 120 * 400 + 84 * 120
        assert float(r["gmacs"]) == pytest.approx(macs / 1e9, rel=1e-3)
        p50, p90, p99 = (float(r[k]) for k in ("p50_ms", "p90_ms", "p99_ms"))
        assert 0 < p50 <= p90 <= p99
        assert float(r["step_time_ms"]) == p50
        assert float(r["samples_per_sec"]) == pytest.approx(int(r["batch"]) / p50 * 1e3, rel=1e-2)
        assert 0 < float(r["pct_of_peak"]) < 100
        assert r["joules_per_img"] == "not available" or float(r["joules_per_img"]) > 0
        assert (r["warmup"], r["iters"]) == ("1", "3")


def test_json_schema_and_variant_names(capsys):
    assert main(["bench", "resnet20", "--batch", "2", "--iters", "2", "--warmup", "1",
                 "--fuse", "--channels-last", "--gemm-size", "256", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["meta"]["gemm_peak_gflops"] > 0 and data["meta"]["variant"] == "fused+channels_last"
    (row,) = data["rows"]
    assert set(row) == set(CSV_COLUMNS)
    assert row["variant"] == "fused+channels_last" and row["device"] == "cpu"
    # achieved GFLOP/s = 2 x MACs x batch / median time
    assert row["gflops_per_s"] == pytest.approx(
        2 * row["gmacs"] * 2 / (row["p50_ms"] / 1e3), rel=2e-2)
    assert row["pct_of_peak"] == pytest.approx(
        100 * row["gflops_per_s"] / row["gemm_peak_gflops"], rel=2e-2, abs=0.1)


def test_train_mode_counts_three_forwards():
    cfg = BenchConfig(batches=(2,), mode="train", iters=2, warmup=1, gemm_size=256)
    (row,) = bench([cnnlab.create_model("lenet5")], cfg).rows
    assert row.mode == "train"
    assert row.gflops_per_s == pytest.approx(3 * 2 * row.gmacs * 2 / (row.p50_ms / 1e3), rel=2e-2)


class _RunsOutOfMemory(nn.Module):
    """Raises the allocator's error above a batch of 2, as a too-large batch would."""

    model_name = "oom_probe"
    in_chans, fixed_input_size = 1, (4, 4)

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return self.fc(x.flatten(1))


def test_oom_backs_off_to_the_next_smaller_batch_and_says_so():
    cfg = BenchConfig(batches=(8, 16), iters=2, warmup=1, gemm_size=128)
    rows = bench([_RunsOutOfMemory()], cfg).rows
    assert [r.batch for r in rows] == [2]  # 16 -> 8 -> 4 -> 2
    assert rows[0].note == "batch 4 ran out of memory; backed off to 2"


def test_gemm_peak_is_a_plausible_rate():
    peak = gemm_peak_gflops("cpu", n=256, repeats=3)
    assert 0.1 < peak < 1e5  # GFLOP/s of two CPU cores: far from zero, far below a GPU's


def test_bad_options_are_one_line(capsys):
    assert main(["bench", "resnet20", "--batch", "0,2"]) == 2
    assert main(["bench", "resnet20", "--mode", "train", "--fuse", "--batch", "1"]) == 2
    assert main(["bench", "--chart", "x.gif"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("cnnlab: error:") for line in err)


@pytest.fixture
def quick_macs(monkeypatch):
    """Models without declared MACs get them from the analyser (tested below, on one model);
    for the point counts a stand-in keeps the test fast."""
    monkeypatch.setattr(charts, "_analysed_macs", lambda name: 10**9)


def test_undeclared_macs_come_from_the_analyser():
    # ResNet-20 (He et al. 2016, CIFAR) by hand: conv1 32*32*16*27; stage 1: 6 x 32*32*16*16*9;
    # stages 2, 3: a strided 3x3 (16*16*32*16*9, 8*8*64*32*9) + 5 x 2,359,296; fc 64*10.
    stage = 5 * 2_359_296
    macs = 32 * 32 * 16 * 27 + 6 * 2_359_296 + (1_179_648 + stage) * 2 + 640
    assert charts._analysed_macs("resnet20") == macs == 40_551_040


def published_with_top1() -> list[str]:
    return [n for n in cnnlab.list_models() if cnnlab.model_info(n).top1 is not None]


def test_fig2_has_one_point_per_published_model_and_takes_users_runs(tmp_path, quick_macs):
    runs = [{"model": "my_net", "top1": 71.5, "gmacs": 0.8, "param_count": 4.2}]
    (tmp_path / "run.json").write_text(json.dumps({"model": "b", "top1": 60, "gmacs": 2.0}))
    fig, rows = accuracy_vs_macs(runs + [tmp_path / "run.json"])
    expected = published_with_top1()
    assert [r["model"] for r in rows if r["source"] == "published"] == expected
    assert {r["model"] for r in rows if r["source"] == "run"} == {"my_net", "b"}
    # Read back from what was drawn: the scatter offsets hold exactly these points.
    drawn = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert drawn == len(expected) + 2
    resnet50 = next(r for r in rows if r["model"] == "resnet50")
    assert resnet50["gmacs"] == pytest.approx(4.09, abs=0.01)  # torchvision: 4.089 GFLOPS(MACs)
    assert resnet50["params_m"] == pytest.approx(25.557, abs=1e-3)


def test_chart_png_from_bench_rows(tmp_path, quick_macs):
    rows = [{"model": "a", "variant": "eager", "batch": b, "step_time_ms": 10.0 * b ** 0.5}
            for b in (1, 4, 16)]
    out = tmp_path / "canziani.png"
    drawn = draw_charts(rows, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(drawn["fig3"]) == 3 and len(drawn["fig10"]) == len(published_with_top1())
    assert [r["ms_per_image"] for r in drawn["fig3"]] == pytest.approx([10.0, 5.0, 2.5])
    fig, _ = time_vs_batch(rows)
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 4, 16]


def test_cli_chart_from_an_earlier_csv(tmp_path, capsys, quick_macs):
    assert main(["bench", "lenet5", "--batch", "1,2", "--iters", "2", "--warmup", "1",
                 "--gemm-size", "128", "--csv"]) == 0
    (tmp_path / "b.csv").write_text(capsys.readouterr().out)
    out = tmp_path / "c.svg"
    assert main(["bench", "--from", str(tmp_path / "b.csv"), "--chart", str(out)]) == 0
    assert out.read_text().lstrip().startswith("<?xml")
    assert "Fig. 3 2 points" in capsys.readouterr().err
