"""cnnlab.experiments: each experiment on its tiny budget, numbers checked against hand
arithmetic and the papers' tables; `cnnlab experiment` and its errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from cnnlab.analysis.summary import summarize
from cnnlab.cli import main
from cnnlab.experiments import EXPERIMENTS, list_experiments, run_experiment
from cnnlab.experiments import lesion as L
from cnnlab.experiments import small_filters as SF


def _run(name, tmp_path, **kw):
    out = tmp_path / name
    result = run_experiment(name, out, budget="tiny", device="cpu", command=["test"], **kw)
    saved = json.loads((out / "result.json").read_text())
    assert saved["numbers"] == json.loads(json.dumps(result["numbers"]))
    for key in ("command", "hardware", "versions", "seeds", "wall_s", "settings"):
        assert key in saved
    report = (out / "report.md").read_text()
    for heading in ("## What ran", "## What it shows", "## Compared with the paper",
                    "## What this budget cannot show"):
        assert heading in report
    assert saved["figures"] and all((out / f).stat().st_size > 0 for f in saved["figures"])
    assert {f.rsplit(".", 1)[1] for f in saved["figures"]} == {"png", "svg"}
    return saved["numbers"], out


def test_inception_cost_against_the_slide_and_table_1(tmp_path):
    n, _ = _run("inception-cost", tmp_path)
    ex = n["lecture_example"]
    hw = 28 * 28  # by hand, the slide's terms
    assert ex["naive"]["macs"] == hw * (128 * 256 + 192 * 9 * 256 + 96 * 25 * 256) == 854_196_224
    assert ex["reduced"]["macs"] == hw * (3 * 64 * 256 + 128 * 256 + 192 * 9 * 64
                                          + 96 * 25 * 64) == 271_351_808
    assert ex["naive"]["out_channels"] == 128 + 192 + 96 + 256 == 672
    assert round(ex["reduction_ratio"], 2) == 3.15
    assert ex["slide_reduced"] == 353e6 and ex["slide_naive"] == 854e6
    # Szegedy et al. 2015, Table 1, "ops" column (millions), retyped from the paper.
    table1_ops = {"3a": 128, "3b": 304, "4a": 73, "4b": 88, "4c": 100, "4d": 119, "4e": 170,
                  "5a": 54, "5b": 71}
    for block, ops in table1_ops.items():
        if block != "5a":
            assert abs(n["googlenet_blocks"][block]["reduced"]["macs"] / 1e6 - ops) < 1.0, block
    # 5a from its own Table 1 columns on 832x7x7 is 51.08M, not the printed 54M; said so.
    by_hand_5a = 49 * (832 * 256 + 832 * 160 + 160 * 320 * 9 + 832 * 32 + 32 * 128 * 25
                       + 832 * 128)
    assert n["googlenet_blocks"]["5a"]["reduced"]["macs"] == by_hand_5a == 51_079_168
    assert n["table1_mismatches"] == {"5a": by_hand_5a}
    # 3a's weights by hand: 1x1 64, reduce 96 -> 3x3 128, reduce 16 -> 5x5 32, pool proj 32.
    w3a = 192 * 64 + 192 * 96 + 96 * 128 * 9 + 192 * 16 + 16 * 32 * 25 + 192 * 32
    b3a = 64 + 96 + 128 + 16 + 32 + 32
    assert n["googlenet_blocks"]["3a"]["reduced"]["params"] == w3a + b3a
    sweep = {int(k): v for k, v in n["reduce_width_sweep"].items()}
    assert sweep[64] == ex["reduced"]["macs"]


def test_small_filters_arithmetic_by_hand():
    for c in (16, 64, 256):
        a = SF.arithmetic(c, side=56)
        assert a["3x3x3"]["params"] == 27 * c * c and a["7x7"]["params"] == 49 * c * c
        assert a["3x3x2"]["params"] == 18 * c * c and a["5x5"]["params"] == 25 * c * c
        assert a["3x3x3"]["macs"] == 27 * c * c * 56 * 56
        assert a["7x7"]["macs"] == 49 * c * c * 56 * 56
        assert [a[k]["receptive_field"] for k in ("3x3x3", "7x7", "3x3x2", "5x5")] == [7, 7, 5, 5]


def test_small_filters_tiny_run(tmp_path):
    n, _ = _run("small-filters", tmp_path)
    c = SF.SPEC.budgets["tiny"]["channels"]
    for name, k, layers in SF.VARIANTS:
        analysed = summarize(SF.net(c, k, layers), (1, 28, 28)).total_params
        # stem 3x3 conv (no bias) + BN; the block: layers x (KxK conv, no bias, + BN); linear
        by_hand = 9 * c + 2 * c + layers * (k * k * c * c + 2 * c) + c * 10 + 10
        assert n["trained"][name]["params"] == analysed == by_hand
        assert 0 <= n["trained"][name]["test_error"] <= 100


def test_degradation_tiny_run_resumes_from_the_engine_checkpoints(tmp_path):
    n, out = _run("degradation", tmp_path)
    assert n["padded_to"] == [32, 32]  # MNIST digits in the CIFAR nets' 32x32 field
    assert set(n["curves"]) == {"plain20", "plain56", "resnet20", "resnet56"}
    assert all((out / "runs" / f"tiny-{m}" / "checkpoint.pt").is_file() for m in n["curves"])
    again = run_experiment("degradation", out, budget="tiny", device="cpu", command=["test"])
    assert all(r["resumed"] for r in again["runs"].values())
    assert again["numbers"]["curves"] == n["curves"]  # loaded, not retrained


def test_path_lengths_equal_the_binomial():
    from cnnlab.registry import create_model

    for depth, blocks in ((20, 9), (110, 54)):
        counts = L.path_length_counts(create_model(f"resnet{depth}"))
        assert counts == [math.comb(blocks, k) for k in range(blocks + 1)]
        assert sum(counts) == 2**blocks
    plain = L.path_length_counts(create_model("plain20"))
    assert plain == [0] * 9 + [1]  # one path, through every block


def test_deleting_an_identity_block_is_replacing_it_by_identity():
    from cnnlab.registry import create_model

    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    handle = L._delete(model.layer2[1])
    lesioned = model(x)
    handle.remove()
    model.layer2[1] = nn.Identity()
    torch.testing.assert_close(lesioned, model(x))


def test_lesion_tiny_run(tmp_path):
    n, _ = _run("lesion", tmp_path)
    assert n["paths_equal_binomial"] is True
    errors = n["test_error_after_deleting"]
    res, plain = errors["resnet20"], errors["plain20"]
    assert len(res) == 1 + 9  # intact + every block (downsampling ones keep their shortcut)
    assert len(plain) == 1 + 7  # intact + the shape-preserving blocks only
    assert n["resnet110_mean_path_length"] == 27.0


def test_experiment_list_and_errors(tmp_path, capsys):
    assert main(["experiment", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPERIMENTS)
    assert [s.name for s in list_experiments()] == list(EXPERIMENTS)
    assert main(["experiment", "no-such", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown experiment 'no-such'" in err and "degradation" in err
    assert main(["experiment", "inception-cost"]) == 2
    assert "--out DIR" in capsys.readouterr().err
    # A folder of another experiment is never mixed into.
    assert main(["experiment", "inception-cost", "--budget", "tiny", "--out",
                 str(tmp_path / "ic")]) == 0
    assert main(["experiment", "small-filters", "--budget", "tiny", "--out",
                 str(tmp_path / "ic")]) == 2
    assert "another experiment" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(["experiment", "inception-cost", "--out", str(tmp_path / "full")]) == 2
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_states_claim_paper_and_three_budgets(name):
    from cnnlab.experiments import get_experiment

    spec = get_experiment(name)
    assert spec.claim and spec.paper and set(spec.budgets) == {"tiny", "quick", "paper"}


def test_gap_vs_fc_params_by_hand(tmp_path):
    n, _ = _run("gap-vs-fc", tmp_path)
    c, k = 8, 10  # the tiny budget's width; ten digit classes
    body = (9 * 1 * c + c) + (9 * c * c + c) + (9 * c * 2 * c + 2 * c) + (9 * 4 * c * c + 2 * c)
    fc_head = (2 * c * 7 * 7 * 256 + 256) + (256 * 256 + 256) + (256 * k + k)
    gap_head = 2 * c * k + k  # the 1x1 conv to one map per class
    heads = n["heads"]
    assert heads["fc"]["head_params"] == fc_head and heads["gap"]["head_params"] == gap_head
    assert heads["fc"]["params"] == body + fc_head and heads["gap"]["params"] == body + gap_head
    assert n["table5"] == {"NIN + GAP": 10.41, "NIN + FC": 11.59, "NIN + FC + dropout": 10.88}


def test_batchnorm_tiny_run(tmp_path):
    from cnnlab.experiments import batchnorm as B

    # Fig. 1's network: 784-100-100-100-10; BN replaces each hidden bias by a BN's 2 x 100.
    plain = sum(p.numel() for p in B.mlp(False).parameters())
    assert plain == 784 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10
    assert sum(p.numel() for p in B.mlp(True).parameters()) == plain - 300 + 3 * 200
    n, _ = _run("batchnorm", tmp_path)
    assert set(n["runs"]) == {f"{bn}-x{m}" for bn in ("plain", "bn") for m in (1, 5, 30)}
    assert [n["runs"][f"bn-x{m}"]["lr"] for m in (1, 5, 30)] == [0.05, 0.25, 1.5]
    assert all(len(r["curve"]) == 2 or r["diverged"] for r in n["runs"].values())


def test_filter_normalised_direction_matches_each_filters_norm():
    from cnnlab.experiments.loss_landscape import filter_normalised_direction
    from cnnlab.registry import create_model

    torch.manual_seed(0)
    model = create_model("resnet20")
    d = filter_normalised_direction(model, torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        if p.dim() <= 1:  # biases and BN: no direction (Li et al. 2018, Sec. 4)
            assert not d[name].any(), name
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1),
                                       p.detach().flatten(1).norm(dim=1))


def test_loss_landscape_tiny_run_centre_is_the_trained_loss(tmp_path):
    n, _ = _run("loss-landscape", tmp_path)
    for name in ("resnet20", "plain20"):
        s = n["surfaces"][name]
        assert s["coords"] == [-1.0, 0.0, 1.0] and len(s["loss"]) == 3
        centre = s["loss"][1][1]
        assert n["summary"][name]["centre"] == centre
        assert all(math.isfinite(v) for row in s["loss"] for v in row)
        # away from the trained weights the loss is higher (it is a minimum of sorts)
        assert max(max(row) for row in s["loss"]) > centre


def test_aliased_fraction_of_pure_frequencies():
    from cnnlab.experiments.zfnet_vs_alexnet import aliased_fraction

    x = torch.arange(64, dtype=torch.float64)
    for cycles, expected in ((20, 1.0), (8, 0.0)):  # 20/64 = 0.31 and 8/64 = 0.125 cycles/px
        w = torch.cos(2 * math.pi * cycles / 64 * x).expand(64, 64).reshape(1, 1, 64, 64)
        assert aliased_fraction(w, stride=2, size=64) == pytest.approx(expected, abs=1e-9)
    # stride 4: Nyquist 0.125; 10/64 = 0.156 cycles/px is above it
    w = torch.cos(2 * math.pi * 10 / 64 * x).expand(64, 64).reshape(1, 1, 64, 64)
    assert aliased_fraction(w, stride=4, size=64) == pytest.approx(1.0, abs=1e-9)


def test_zfnet_vs_alexnet_tiny_run(tmp_path):
    n, _ = _run("zfnet-vs-alexnet", tmp_path)
    a, z = n["first_layers"]["alexnet 11x11/4"], n["first_layers"]["zfnet 7x7/2"]
    # output sides on 64x64: (64 + 2*2 - 11) / 4 + 1 = 15 and (64 + 2 - 7) / 2 + 1 = 30
    assert a["feature_map"] == [96, 15, 15] and z["feature_map"] == [96, 30, 30]
    assert a["nyquist"] == 0.125 and z["nyquist"] == 0.25
    assert a["white_filter_aliased_fraction"] == 1 - 1 / 16
    # barely trained filters are still close to white noise
    assert abs(a["aliased_energy_fraction"] - 15 / 16) < 0.05
    assert abs(z["aliased_energy_fraction"] - 3 / 4) < 0.08
