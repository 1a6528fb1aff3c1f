"""The training loop: exact resume, NaN stop, atomic checkpoints, logs, EMA/AMP options."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from cnnlab.data import ImageTensorDataset
from cnnlab.data.loader import DeviceLoader
from cnnlab.data.transforms import random_crop, random_flip
from cnnlab.train import NonFiniteLoss, fit, get_recipe, load_checkpoint, seed_everything
from cnnlab.train.checkpoint import read_checkpoint, save_atomic

ROOT = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    """Conv + BN + dropout: exercises buffers, the optimiser state and the global RNG."""

    def __init__(self, poison: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 4),
        )
        self.poison = False

    def forward(self, x):
        out = self.body(x)
        return out * float("nan") if self.poison else out


def synthetic(n=192, seed=1):
    """Four classes: which band of two rows of an 8x8 image is bright (flip-invariant)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 2 * c : 2 * c + 2, :] += 150
    return ImageTensorDataset(images, labels, ["a", "b", "c", "d"], name="synthetic")


def augment(x, g):
    return random_flip(random_crop(x, 8, padding=1, generator=g), generator=g)


def loaders(ds):
    train = DeviceLoader(ds, 32, shuffle=True, train_transform=augment, seed=0, drop_last=True)
    test = DeviceLoader(ds, 64, shuffle=False)
    return train, test


def recipe(**kw):
    base = dict(epochs=2, lr=0.2, batch_size=32, schedule="onecycle")
    return dataclasses.replace(get_recipe("fast_cpu"), **(base | kw))


def train(out, rec, resume=None, on_step=None, model=None):
    seed_everything(rec.seed)
    model = model or Tiny()
    train_loader, test_loader = loaders(synthetic())
    return model, fit(model, rec, train_loader, test_loader=test_loader, out_dir=out,
                      model_name="tiny", resume=resume, on_step=on_step, progress=False)


def _no_time(history):
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in history]


@pytest.mark.parametrize("options", [{}, {"ema_decay": 0.9, "schedule": "multistep",
                                          "milestones": (1,), "grad_clip": 1.0}])
def test_resume_is_tensor_equal_to_an_uninterrupted_run(tmp_path, options):
    rec = recipe(**options)
    straight, res_a = train(tmp_path / "a", rec)

    steps_per_epoch = 192 // 32

    def crash_in_epoch_two(step):
        if step == steps_per_epoch + 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", rec, on_step=crash_in_epoch_two)
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == steps_per_epoch
    resumed, res_b = train(tmp_path / "b", rec, resume=ckpt)

    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    assert _no_time(res_a.history) == _no_time(res_b.history)
    final_a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    final_b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for a, b in zip(final_a["optimizer"]["state"].values(),
                    final_b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    if options:
        for a, b in zip(final_a["ema"].values(), final_b["ema"].values(), strict=True):
            assert torch.equal(a, b)
    rows = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


def test_one_epoch_then_resume_with_more_epochs_equals_two_epochs(tmp_path):
    rec2 = recipe(schedule="multistep", milestones=(1,))  # schedule independent of the length
    straight, _ = train(tmp_path / "a", rec2)
    train(tmp_path / "b", dataclasses.replace(rec2, epochs=1))
    resumed, _ = train(tmp_path / "b", rec2, resume=load_checkpoint(tmp_path / "b/checkpoint.pt"))
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_learns_and_writes_its_outputs(tmp_path):
    _, res = train(tmp_path, recipe(epochs=3))
    assert res.history[-1]["test_top1"] > 90.0  # a 4-class task any working loop learns
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("epoch", "step", "lr", "train_loss", "train_top1", "test_top1",
                "images_per_s", "elapsed_s"):
        assert key in row
    assert row["epoch"] == 3 and row["step"] == 3 * 6
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,step,lr,train_loss") and len(csv_lines) == 4
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "model.safetensors")
    assert set(weights) == set(Tiny().state_dict())


def test_nan_loss_stops_within_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model = Tiny()
    seen = {}

    def poison_in_epoch_two(step):
        if step == 6:  # end of epoch 1
            seen["epoch1"] = {k: v.clone() for k, v in model.state_dict().items()}
        if step == 8:
            seen["before"] = [p.detach().clone() for p in model.parameters()]
            model.poison = True

    _, res = train(tmp_path, recipe(epochs=3), on_step=poison_in_epoch_two, model=model)
    assert res.stopped is not None
    assert "loss became nan at epoch 2, step 9" in res.stopped
    assert "last good checkpoint" in res.stopped and "(epoch 1, step 6)" in res.stopped
    assert res.diverged
    # model.safetensors is written with each checkpoint: it holds epoch 1's good weights
    from safetensors import safe_open

    with safe_open(res.weights, "pt") as f:
        assert f.metadata()["epoch"] == "1"
        for k, v in seen["epoch1"].items():
            assert torch.equal(f.get_tensor(k), v), k
    # the poisoned step was not applied
    for a, b in zip(seen["before"], model.parameters(), strict=True):
        assert torch.equal(a, b)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    for k, v in seen["epoch1"].items():
        assert torch.equal(ckpt["model"][k], v), k
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert isinstance(NonFiniteLoss("x"), RuntimeError)


def test_nan_in_first_epoch_says_no_checkpoint(tmp_path):
    model = Tiny()
    model.poison = True
    _, res = train(tmp_path, recipe(), model=model)
    assert "step 1" in res.stopped and "no checkpoint had been written yet" in res.stopped
    assert res.diverged
    assert not (tmp_path / "checkpoint.pt").exists()


def test_bf16_autocast_on_cpu_trains(tmp_path):
    _, res = train(tmp_path, recipe(epochs=1, amp="bf16", channels_last=True))
    assert res.history[-1]["train_loss"] < 1.5


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(tmp_path / "run", recipe(amp="fp16"))
    assert not (tmp_path / "run").exists()  # refused before the output folder was made


KILLER = textwrap.dedent("""
    import io, os, signal, sys
    import torch
    from cnnlab.train import checkpoint

    path = sys.argv[1]
    checkpoint.save_atomic({"model": {"w": torch.ones(4)}, "config": {"v": 1}}, path)
    real_save = torch.save

    def torn_save(obj, f):
        buf = io.BytesIO()
        real_save(obj, buf)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # die in the middle of writing

    torch.save = torn_save
    checkpoint.save_atomic({"model": {"w": torch.zeros(1 << 16)}, "config": {"v": 2}}, path)
""")


def test_a_process_killed_while_writing_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", KILLER, str(path)], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    torn = [p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint.pt.tmp-")]
    assert len(torn) == 1, "the kill should have happened during the temporary write"
    with pytest.raises(Exception):  # noqa: B017 - any unpickling error: it is torn
        torch.load(torn[0], weights_only=True)
    ckpt = read_checkpoint(path)  # intact (its SHA-256 verified); a toy layout, not a run's
    assert ckpt["config"] == {"v": 1} and torch.equal(ckpt["model"]["w"], torch.ones(4))


def test_checkpoints_load_with_weights_only(tmp_path):
    _, res = train(tmp_path, recipe(epochs=1))
    ckpt = torch.load(res.checkpoint, weights_only=True)
    assert ckpt["config"]["name"] == "fast_cpu" and ckpt["epoch"] == 1
    assert set(ckpt["rng"]) >= {"torch", "python", "numpy"}


def test_save_atomic_replaces(tmp_path):
    p = tmp_path / "c.pt"
    save_atomic({"model": {}, "config": {"a": 1}}, p)
    save_atomic({"model": {}, "config": {"a": 2}}, p)
    assert read_checkpoint(p)["config"] == {"a": 2}
    assert [q.name for q in tmp_path.iterdir()] == ["c.pt"]


def test_failed_writes_keep_the_old_file_and_leave_no_temporary(tmp_path, monkeypatch):
    import csv

    from cnnlab.train import checkpoint
    from cnnlab.train.metrics import write_logs

    write_logs([{"epoch": 1, "train_loss": 0.5}], tmp_path)
    checkpoint.export_safetensors({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(*args, **kwargs):
        path = next((a for a in args if isinstance(a, (str, Path))), None)
        if path is not None:  # safetensors' save_file(tensors, filename): half a file first
            Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", disk_full)
    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_logs([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.4}], tmp_path)
    with pytest.raises(OSError, match="No space"):
        checkpoint.export_safetensors({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    # metrics.jsonl was fully rewritten before the csv failed; the csv and weights are the old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)
    assert (tmp_path / "metrics.csv").read_bytes() == before["metrics.csv"]
    assert (tmp_path / "model.safetensors").read_bytes() == before["model.safetensors"]


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_names_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match="evil.pt: not a readable cnnlab checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a, _ = train(tmp_path / "a", recipe(epochs=1))
    b, _ = train(tmp_path / "b", recipe(epochs=1))
    c, _ = train(tmp_path / "c", recipe(epochs=1, seed=1))
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_weight_decay_skips_1d_tensors_when_asked():
    from cnnlab.train.optim import build_optimizer

    model = Tiny()
    opt = build_optimizer(model, recipe(weight_decay=5e-4, no_decay_1d=True))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])  # conv and linear weights
    # conv bias, BN weight and bias, linear bias
    assert sorted(p.numel() for p in no_decay["params"]) == [4, 8, 8, 8]
    (only,) = build_optimizer(model, recipe(weight_decay=5e-4, no_decay_1d=False)).param_groups
    assert len(only["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(("name", "cls", "checks"), [
    ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    ("adamw", torch.optim.AdamW, {"betas": (0.9, 0.999)}),
    ("rmsprop", torch.optim.RMSprop, {"alpha": 0.9, "eps": 1.0}),
])
def test_optimisers(name, cls, checks):
    from cnnlab.train.optim import build_optimizer

    rec = recipe(optimizer=name, alpha=0.9, eps=1.0 if name == "rmsprop" else 1e-8)
    opt = build_optimizer(Tiny(), rec)
    assert isinstance(opt, cls)
    for key, value in checks.items():
        assert opt.param_groups[0][key] == value


def test_label_smoothing_and_grad_clip_take_effect(tmp_path):
    _, plain = train(tmp_path / "a", recipe(epochs=1))
    _, smooth = train(tmp_path / "b", recipe(epochs=1, label_smoothing=0.1))
    _, clipped = train(tmp_path / "c", recipe(epochs=1, grad_clip=1e-3))
    assert smooth.history[0]["train_loss"] != plain.history[0]["train_loss"]
    assert clipped.history[0]["train_loss"] != plain.history[0]["train_loss"]
