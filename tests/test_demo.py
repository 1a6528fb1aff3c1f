"""The README's main job, `cnnlab demo`, shortened to one epoch."""

from cnnlab.cli import main


def test_demo_prints_summary_trains_and_leaves_its_files(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lenet5_modern @ 1x28x28" in text and "61,706" in text  # the summary table
    assert "test accuracy" in text and "10,000 official MNIST test digits" in text
    for name in ("checkpoint.pt", "metrics.jsonl", "curves.png"):
        assert (out / name).is_file(), name
