"""The README's main job, `cnnlab demo`, shortened to one epoch."""

from cnnlab.cli import main


def test_demo_prints_summary_trains_and_leaves_its_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "runs" / "demo" / "checkpoint.pt"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an earlier demo")
    assert main(["demo", "--epochs", "1"]) == 0
    out = tmp_path / "runs" / "demo-2"  # the earlier demo's folder is left alone
    assert earlier.read_bytes() == b"an earlier demo"
    text = capsys.readouterr().out
    assert "lenet5_modern @ 1x28x28" in text and "61,706" in text  # the summary table
    assert "test accuracy" in text and "10,000 official MNIST test digits" in text
    for name in ("checkpoint.pt", "metrics.jsonl", "curves.png"):
        assert (out / name).is_file(), name

