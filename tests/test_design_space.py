"""The design-space experiment: EDF and KS arithmetic, the two spaces' sampler, the MACs of one
AnyNetX net by hand, and the tiny run (resumed, and re-run with fewer --samples)."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from cnnlab.cli import main
from cnnlab.experiments import design_space as D
from cnnlab.experiments import run_experiment


def test_edf_counts_the_models_strictly_below_each_error():
    errors = [10.0, 20.0, 20.0, 40.0]
    # F(e) = #{error < e} / 4, by hand
    assert D.edf(errors, [5, 10, 15, 20, 25, 40, 50]) == [0, 0, 0.25, 0.25, 0.75, 0.75, 1.0]


def test_ks_distance_and_critical_gap_by_hand():
    # interleaved samples: F_a runs ahead of F_b by 1/3 between each pair
    assert D.ks_distance([10, 20, 30], [15, 25, 35]) == pytest.approx(1 / 3)
    assert D.ks_distance([1, 2], [1, 2]) == 0
    assert D.ks_distance([1, 2], [3, 4]) == 1
    # c(0.05) = sqrt(-ln(0.025) / 2) = 1.3581; sqrt((32 + 32) / (32 * 32)) = 0.25
    assert D.ks_critical(32, 32) == pytest.approx(1.3581 * 0.25, abs=1e-4)
    assert D.verdict([10, 20, 30], [15, 25, 35]) == "indistinguishable"
    low, high = [float(x) for x in range(1, 41)], [float(x) for x in range(61, 101)]
    assert D.verdict(high, low) == "better" and D.verdict(low, high) == "worse"


def test_space_sizes_by_enumeration_and_the_papers_count():
    small = D.Ranges(max_depth=1, max_width=16)  # d in {1}, w in {8, 16}
    stage = list(itertools.product(small.depths, small.widths, D.GROUP_WIDTHS,
                                   D.BOTTLENECK_RATIOS))
    assert D.space_size("AnyNetX_A", small) == len(stage) ** 4 == 24**4
    ordered = sum(1 for ws in itertools.product(small.widths, repeat=4) if list(ws) == sorted(ws))
    assert ordered == 5  # 8888, 888x, 88xx, 8xxx, xxxx with x = 16
    assert D.space_size("AnyNetX_D", small) == 3 * 4 * 1 * ordered
    quick = D.Ranges(4, 64)
    assert D.space_size("AnyNetX_A", quick) == (4 * 8 * 4 * 3) ** 4
    assert D.space_size("AnyNetX_D", quick) == 3 * 4 * 4**4 * 330  # C(11, 4) = 330
    # the paper's AnyNetX_A: (16 * 128 * 3 * 6)^4, "about 10^18" (Sec. 3.2)
    assert 1e18 < (16 * 128 * 3 * 6) ** 4 < 2e18


def test_draws_respect_each_space():
    rng, ranges = random.Random(5), D.Ranges(4, 64)
    d_draws = [D.draw("AnyNetX_D", rng, ranges) for _ in range(200)]
    for stages in d_draws:
        assert len({s[2] for s in stages}) == 1 and len({s[3] for s in stages}) == 1
        widths = [s[1] for s in stages]
        assert widths == sorted(widths)
    a_draws = [D.draw("AnyNetX_A", rng, ranges) for _ in range(200)]
    for stages in a_draws + d_draws:
        for depth, width, g, b in stages:
            assert 1 <= depth <= 4 and width in range(8, 65, 8)
            assert g in (1, 2, 4, 8) and b in (1, 2, 4)
    # A is free: some draws mix bottleneck ratios and have shrinking widths
    assert any(len({s[3] for s in st}) > 1 for st in a_draws)
    assert any([s[1] for s in st] != sorted(s[1] for s in st) for st in a_draws)
    with pytest.raises(ValueError, match="unknown design space"):
        D.draw("AnyNetX_Z", rng, ranges)


def test_macs_of_one_anynetx_net_by_hand():
    # 28x28 digit, stem 3x3/2 1 -> 8 at 14x14; each stage's first block strided on its 3x3
    # conv and its 1x1 projection; MACs = out pixels x out channels x (k^2 x in / groups)
    stages = ((1, 8, 2, 2), (1, 16, 4, 1), (2, 16, 8, 1), (1, 24, 2, 2))
    stem = 14 * 14 * 8 * 9
    s1 = 196 * 8 * 4 + 49 * 4 * 9 * 2 + 49 * 4 * 8 + 49 * 8 * 8  # w_b = 4, 2 groups; 14 -> 7
    s2 = 49 * 8 * 16 + 16 * 16 * 9 * 4 + 16 * 16 * 16 + 16 * 8 * 16  # w_b = 16, 4 groups; 7 -> 4
    s3 = (16 * 16 * 16 + 4 * 16 * 9 * 8 + 4 * 16 * 16 + 4 * 16 * 16  # 4 -> 2, 2 groups
          + 4 * 16 * 16 + 4 * 16 * 9 * 8 + 4 * 16 * 16)  # second block: identity shortcut
    s4 = 4 * 16 * 12 + 1 * 12 * 9 * 2 + 12 * 24 + 16 * 24  # w_b = 12, 6 groups; 2 -> 1
    fc = 24 * 10
    macs, _ = D.count(stages, (1, 28, 28))
    assert macs == stem + s1 + s2 + s3 + s4 + fc == 69_552


def test_sampling_is_seeded_in_the_band_and_a_prefix_of_larger_n():
    ranges, band = D.Ranges(1, 16), (40_000, 70_000)
    three, stats = D.sample_space("AnyNetX_A", 3, seed=0, ranges=ranges, macs=band)
    assert len(three) == 3
    assert stats["draws"] == 3 + stats["invalid"] + stats["outside_budget"]
    assert all(band[0] <= m.macs <= band[1] for m in three)
    assert all(D.count(m.stages, (1, 28, 28))[0] == m.macs for m in three)
    two, _ = D.sample_space("AnyNetX_A", 2, seed=0, ranges=ranges, macs=band)
    assert two == three[:2]
    other, _ = D.sample_space("AnyNetX_A", 3, seed=1, ranges=ranges, macs=band)
    assert other != three
    with pytest.raises(ValueError, match="widen the band"):
        D.sample_space("AnyNetX_D", 1, seed=0, ranges=ranges, macs=(1, 2), max_draws=5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "design-space"
    result = run_experiment("design-space", out, budget="tiny", device="cpu", command=["test"])
    return result, out


def test_tiny_run_writes_every_output(tiny):
    result, out = tiny
    saved = json.loads((out / "result.json").read_text())
    assert saved["numbers"] == json.loads(json.dumps(result["numbers"]))
    n = saved["numbers"]
    assert set(n["spaces"]) == {"AnyNetX_A", "AnyNetX_D"}
    for space in n["spaces"].values():
        assert space["n"] == len(space["models"]) == 2
        errors = [m["test_error"] for m in space["models"]]
        assert space["min_error"] == min(errors)
        assert space["mean_error"] == pytest.approx(sum(errors) / 2)
        assert all(40_000 <= m["macs"] <= 70_000 for m in space["models"])
        assert all((out / "runs" / m["run"] / "checkpoint.pt").is_file() for m in space["models"])
    assert n["verdict"] in ("better", "worse", "indistinguishable")
    assert n["ranges"]["group_width"] == [1, 2, 4, 8]
    assert sorted(saved["figures"]) == ["design_space.png", "design_space.svg"]
    report = (out / "report.md").read_text()
    assert "| AnyNetX_A | 2 |" in report and "AnyNetX_D" in report


def test_tiny_run_resumes_and_fewer_samples_reuse_the_first(tiny):
    result, out = tiny
    again = run_experiment("design-space", out, budget="tiny", device="cpu", command=["test"],
                           samples=1)
    assert len(again["runs"]) == 2 and all(r["resumed"] for r in again["runs"].values())
    assert again["settings"]["samples"] == 1
    for name, space in again["numbers"]["spaces"].items():
        assert space["models"] == result["numbers"]["spaces"][name]["models"][:1]


def test_samples_option_errors(tmp_path, capsys):
    assert main(["experiment", "degradation", "--samples", "3", "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--samples" in err and "design-space" in err
    assert main(["experiment", "design-space", "--samples", "0", "--out",
                 str(tmp_path / "y")]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
