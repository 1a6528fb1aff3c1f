"""Scaling out in one process: gradient accumulation, the global batch split over ranks, and
the one-line errors of a distributed set-up that cannot work (no processes are started)."""

import dataclasses
import json

import pytest
import torch
import torch.nn as nn

from cnnlab.cli import main
from cnnlab.data import ImageTensorDataset
from cnnlab.data.loader import DeviceLoader
from cnnlab.train import fit, get_recipe
from cnnlab.train.distributed import check_backend, env_world_size
from cnnlab.train.recipes import apply_overrides, parse_overrides
from cnnlab.train.run import micro_batch_size

DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _data(n=512):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.randint(0, 255, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return ImageTensorDataset(images, labels, list("abcd"))


def _train(tmp_path, loader_batch, accum, steps=4, n=512, drop_last=True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(256, 4)).double()  # no BatchNorm: batches are independent
    loader = DeviceLoader(_data(n), loader_batch, shuffle=True, seed=0, drop_last=drop_last)
    recipe = dataclasses.replace(get_recipe("fast_cpu"), batch_size=128, accum_steps=accum,
                                 epochs=1, max_steps=steps, schedule="constant", lr=0.1)
    res = fit(model, recipe, loader, out_dir=tmp_path / f"a{accum}", progress=False,
              input_fit=lambda x: x.double())
    return model, res


def test_two_micro_batches_of_64_equal_one_batch_of_128(tmp_path):
    one, r1 = _train(tmp_path, 128, 1)
    two, r2 = _train(tmp_path, 64, 2)
    assert r1.history[-1]["step"] == r2.history[-1]["step"] == 4
    start = _train(tmp_path, 128, 1, steps=1)[0]  # the weights did move in those 4 steps
    for (name, a), b, s in zip(one.state_dict().items(), two.state_dict().values(),
                               start.state_dict().values(), strict=True):
        assert (a - s).norm() > 1e-3, name
        assert ((a - b).norm() / a.norm()).item() <= 1e-5, name
    # the training loss is the mean over the same 4 x 128 images
    assert r1.history[-1]["train_loss"] == pytest.approx(r2.history[-1]["train_loss"], rel=1e-9)


def test_the_last_shorter_step_is_the_mean_over_its_images_when_accumulating(tmp_path):
    """Without drop_last, 584 = 4 x 128 + 72 images are 5 steps: the last one is 72 images,
    which 2 micro-batches of 64 serve as 64 + 8; each micro-batch's loss is weighted by its
    images (64/72, 8/72), not halved, so the update equals one process's 72-image step."""
    one, r1 = _train(tmp_path, 128, 1, steps=None, n=584, drop_last=False)
    two, r2 = _train(tmp_path, 64, 2, steps=None, n=584, drop_last=False)
    assert [r["step"] for r in r1.history] == [r["step"] for r in r2.history] == [5]
    assert r1.history[-1]["train_images"] == r2.history[-1]["train_images"] == 584
    four, _ = _train(tmp_path, 128, 1, steps=4, n=584, drop_last=False)  # the last step moved
    for (name, a), b, s in zip(one.state_dict().items(), two.state_dict().values(),
                               four.state_dict().values(), strict=True):
        assert (a - s).norm() > 1e-4, name
        assert ((a - b).norm() / a.norm()).item() <= 1e-5, name


def test_accumulating_without_averaging_would_differ(tmp_path):
    # guard on the test above: 64-image steps without accumulation take other updates
    one, _ = _train(tmp_path, 128, 1, steps=2)
    half, _ = _train(tmp_path, 64, 1, steps=4)
    diffs = [((a - b).norm() / a.norm()).item()
             for a, b in zip(one.state_dict().values(), half.state_dict().values(), strict=True)]
    assert max(diffs) > 1e-3


def test_accum_steps_is_checked():
    recipe = get_recipe("fast_cpu")
    assert apply_overrides(recipe, parse_overrides(["accum_steps=4"])).accum_steps == 4
    with pytest.raises(ValueError, match="accum_steps must be an integer >= 1, got 0"):
        apply_overrides(recipe, parse_overrides(["accum_steps=0"]))
    with pytest.raises(ValueError, match="batch_size 128 is not divisible by accum_steps 3"):
        apply_overrides(recipe, parse_overrides(["accum_steps=3"]))


def test_global_batch_is_split_over_ranks_and_accumulation():
    recipe = dataclasses.replace(get_recipe("fast_cpu"), batch_size=128, accum_steps=2)
    assert micro_batch_size(recipe, 1) == 64
    assert micro_batch_size(recipe, 4) == 16
    with pytest.raises(ValueError, match=r"global batch 128 does not split over 3 processes x 2 "
                       r"accumulation steps; use --batch-size 126 or 132 \(a multiple of 6\)"):
        micro_batch_size(recipe, 3)


def _clear(monkeypatch):
    for name in DIST_VARS + ("TORCHELASTIC_RESTART_COUNT",):
        monkeypatch.delenv(name, raising=False)


def test_env_world_size(monkeypatch):
    _clear(monkeypatch)
    assert env_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1, or a leftover
    assert env_world_size() == 1
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", "29500")):
        monkeypatch.setenv(name, value)
    assert env_world_size() == 2
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="need 0 <= RANK < WORLD_SIZE"):
        env_world_size()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        env_world_size()


def test_half_set_env_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    _clear(monkeypatch)
    monkeypatch.setenv("RANK", "0")
    code = main(["train", "lenet5_modern", "--data", "mnist-sample", "--epochs", "1",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("cnnlab: error: distributed environment half set (RANK=0) but "
                          "WORLD_SIZE, MASTER_ADDR, MASTER_PORT are missing")
    assert not (tmp_path / "run").exists()


def test_indivisible_global_batch_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    _clear(monkeypatch)
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "3"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", "1")):  # refused before any rendezvous is attempted
        monkeypatch.setenv(name, value)
    code = main(["train", "lenet5_modern", "--data", "mnist-sample", "--epochs", "1",
                 "--batch-size", "64", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "global batch 64 does not split over 3 processes" in err and "63 or 66" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_nccl_without_gpu_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    _clear(monkeypatch)
    code = main(["train", "lenet5_modern", "--data", "mnist-sample", "--epochs", "1",
                 "--backend", "nccl", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err == ("cnnlab: error: --backend nccl needs CUDA GPUs, but no CUDA GPU is available "
                   "here; use --backend gloo (CPU) or auto")
    assert check_backend("auto", torch.device("cpu")) == "gloo"


def _steps(run):
    return [row["step"] for row in map(json.loads, (run / "metrics.jsonl").open())]


def test_resume_auto_starts_then_continues(monkeypatch, tmp_path):
    _clear(monkeypatch)
    run = tmp_path / "run"
    args = ["train", "lenet5_modern", "--data", "mnist-sample", "--out", str(run), "--quiet",
            "--resume", "auto", "--set", "eval_test_every_epoch=false"]
    assert main([*args, "--epochs", "1", "--set", "max_steps=2"]) == 0  # nothing there: starts
    assert _steps(run) == [2]
    assert main([*args, "--epochs", "2", "--set", "max_steps=4"]) == 0  # continues its own
    assert _steps(run) == [2, 4]


def test_torchrun_restart_continues_the_run_folder(monkeypatch, tmp_path, capsys):
    _clear(monkeypatch)
    run = tmp_path / "run"
    args = ["train", "lenet5_modern", "--data", "mnist-sample", "--out", str(run), "--quiet",
            "--set", "eval_test_every_epoch=false"]
    assert main([*args, "--epochs", "1", "--set", "max_steps=2"]) == 0
    # the same command again: refused, the folder holds a run ...
    assert main([*args, "--epochs", "2", "--set", "max_steps=4"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # ... unless torchrun re-runs it after a worker died: then it continues from checkpoint.pt
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert main([*args, "--epochs", "2", "--set", "max_steps=4"]) == 0
    assert _steps(run) == [2, 4]


def test_resume_auto_needs_out(monkeypatch, capsys):
    _clear(monkeypatch)
    assert main(["train", "lenet5_modern", "--data", "mnist-sample", "--resume", "auto"]) == 2
    assert "--resume auto needs --out RUN" in capsys.readouterr().err
