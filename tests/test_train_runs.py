"""Run folders: one run per folder, locked while written, resumed from their checkpoint alone,
verified on load, checkpointed within epochs, and every bad checkpoint one line."""

import errno
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.train import load_checkpoint
from cnnlab.train.checkpoint import read_checkpoint, save_atomic
from test_train_cli import _one_line_error

from data_files import write_idx

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """256 training and 64 test digits of the bundled MNIST sample, as MNIST's IDX files."""
    from cnnlab.data import load_dataset

    sample = load_dataset("mnist-sample")
    root = tmp_path_factory.mktemp("digits")
    for prefix, split, n in (("train", "train", 256), ("t10k", "test", 64)):
        ds = sample[split]
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", ds.images[:n, 0].numpy())
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", ds.labels[:n].numpy().astype(np.uint8))
    return root


def _train(digits, out, *extra, epochs=2):
    """lenet5_modern, batch 32: 8 steps an epoch."""
    return main(["train", "lenet5_modern", "--data", "mnist", "--root", str(digits),
                 "--epochs", str(epochs), "--batch-size", "32", "--device", "cpu",
                 "--quiet", *(["--out", str(out)] if out is not None else []), *extra])


@pytest.fixture(scope="module")
def run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert _train(digits, out) == 0
    return out


def _snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


# --- one run per folder ----------------------------------------------------------------


def test_a_new_run_into_a_folder_holding_a_run_is_refused(digits, run, capsys):
    before = _snapshot(run)
    capsys.readouterr()
    assert _train(digits, run) == 2
    _one_line_error(capsys, f"{run} already holds a run", f"--resume {run}", "--out NEW",
                    "--overwrite")
    assert _snapshot(run) == before


def test_overwrite_replaces_the_whole_run(digits, tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(digits, out, "--set", "best_split=test", epochs=2) == 0
    (out / "notes.txt").write_text("mine")
    assert _train(digits, out, "--overwrite", "--set", "max_steps=3", epochs=1) == 0
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [3]
    assert load_checkpoint(out)["step"] == 3
    from safetensors import safe_open

    with safe_open(out / "best.safetensors", "pt") as f:  # the new run's, not the old one's
        assert f.metadata()["step"] == "3"
    assert (out / "notes.txt").read_text() == "mine"  # not a run's file: kept


def test_the_default_folder_is_a_fresh_numbered_one(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert _train(digits, None, "--set", "max_steps=1", epochs=1) == 0
    starting = tmp_path / "runs" / "lenet5_modern-mnist-3"  # a run is starting in it
    starting.mkdir()
    (starting / ".lock").write_text("12345")
    assert _train(digits, None, "--set", "max_steps=1", epochs=1) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "lenet5_modern-mnist", "lenet5_modern-mnist-2", "lenet5_modern-mnist-3",
        "lenet5_modern-mnist-4"]
    assert (tmp_path / "runs" / "lenet5_modern-mnist-4" / "checkpoint.pt").is_file()


# --- the lock --------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from cnnlab.train.runfolder import claim
    with claim(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def _hold_lock(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_folder_refuses_a_second_run_and_resume_until_its_holder_dies(
        digits, run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    holders = [_hold_lock(empty), _hold_lock(run)]
    try:
        capsys.readouterr()
        assert _train(digits, empty) == 2
        _one_line_error(capsys, f"run folder '{empty}' is in use by another cnnlab run",
                        f"pid {holders[0].pid}")
        assert main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 2
        _one_line_error(capsys, "is in use by another cnnlab run", f"pid {holders[1].pid}")
    finally:
        for proc in holders:
            proc.send_signal(signal.SIGKILL)  # dies holding the lock: its file stays behind
            proc.wait()
    assert (empty / ".lock").exists()
    # The kernel released the dead holder's lock: the stale lock file does not block.
    assert _train(digits, empty, "--set", "max_steps=1", epochs=1) == 0
    assert not (empty / ".lock").exists()


# --- resume ----------------------------------------------------------------------------


def test_resume_takes_model_data_and_recipe_from_the_checkpoint(run, tmp_path, capsys):
    out = tmp_path / "more"
    assert main(["train", "--resume", str(run / "checkpoint.pt"), "--epochs", "3",
                 "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 3 and ckpt["step"] == 24
    assert ckpt["run"]["data"] == "mnist" and ckpt["config"]["name"] == "fast_cpu"


def test_resume_on_other_data_or_root_is_refused(run, digits, tmp_path, capsys):
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--data", "mnist-sample", "--epochs", "3"]) == 2
    _one_line_error(capsys, "--data mnist-sample: the run being resumed was trained on mnist",
                    "leave --data out")
    assert main(["train", "--resume", str(run), "--root", str(tmp_path), "--epochs", "3"]) == 2
    _one_line_error(capsys, f"--root {tmp_path}: the run being resumed read its data from "
                    f"{digits.resolve()}")
    assert main(["train", "--resume", str(run), "--recipe", "he2016_cifar"]) == 2
    _one_line_error(capsys, "uses fast_cpu; leave --recipe out")
    # the same values, given again, are fine (here: a complete run, so nothing to do)
    assert main(["train", "--resume", str(run), "--data", "mnist", "--root", str(digits)]) == 0
    assert _snapshot(run) == before


def test_resume_of_a_complete_run_says_so_and_touches_nothing(run, capsys):
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run / "checkpoint.pt"), "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "already complete (2 epochs, 16 steps); nothing was changed" in out
    assert _snapshot(run) == before


# --- integrity -------------------------------------------------------------------------


def _largest_member_offset(path):
    """File offset and size of the largest stored entry of a torch zip (a weight tensor)."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_a_flipped_byte_in_a_checkpoint_is_a_clear_error(run, tmp_path, capsys):
    bad = tmp_path / "flipped"
    bad.mkdir()
    data = bytearray((run / "checkpoint.pt").read_bytes())
    offset, size = _largest_member_offset(run / "checkpoint.pt")
    data[offset + size // 2] ^= 0x10  # one bit of one weight
    (bad / "checkpoint.pt").write_bytes(bytes(data))
    torch.load(bad / "checkpoint.pt", weights_only=True)  # torch itself notices nothing
    capsys.readouterr()
    assert main(["eval", str(bad / "checkpoint.pt"), "--data", "mnist-sample"]) == 2
    _one_line_error(capsys, "checkpoint is corrupt", "SHA-256")
    assert main(["train", "--resume", str(bad), "--epochs", "3"]) == 2
    _one_line_error(capsys, "checkpoint is corrupt")


def test_the_hash_covers_every_entry():
    ckpt = {"model": {"w": torch.ones(3)}, "metrics": [{"top1": 90.0}], "rng": {"t": (1, 2)}}
    from cnnlab.train.checkpoint import payload_sha256

    base = payload_sha256(ckpt)
    assert payload_sha256(dict(ckpt, sha256="x")) == base  # the hash itself is left out
    for changed in ({"model": {"w": torch.tensor([1.0, 1.0, 1.5])}},
                    {"model": {"w": torch.ones(3, dtype=torch.float64)}},
                    {"metrics": [{"top1": 90.5}]}, {"rng": {"t": (1, 3)}}):
        assert payload_sha256(ckpt | changed) != base


# --- temporaries and a full disk -------------------------------------------------------


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_removed_by_the_next_resume(run, tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    for p in run.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    dead = _dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [folder / f".checkpoint.pt.tmp-{dead}", folder / f".model.tmp-{dead}.safetensors"]
        live = folder / f".checkpoint.pt.tmp-{alive.pid}"
        for p in (*stale, live):
            p.write_bytes(b"half a file")
        assert main(["train", "--resume", str(folder), "--epochs", "3", "--quiet",
                     "--device", "cpu"]) == 0
        assert not any(p.exists() for p in stale)
        assert live.exists()  # its writer may still be writing
    finally:
        alive.kill()
        alive.wait()


def test_disk_full_during_a_checkpoint_write_is_one_line_and_keeps_the_last(
        digits, tmp_path, monkeypatch, capsys):
    from cnnlab.train import checkpoint

    real_save = torch.save
    calls = []

    def save_until_disk_full(obj, f):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f)
        f.write(b"part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", save_until_disk_full)
    out = tmp_path / "r"
    assert _train(digits, out) == 2  # the second epoch's checkpoint meets a full disk
    _one_line_error(capsys, f"could not write the checkpoint in {out}", "No space left",
                    f"the previous checkpoint {out / 'checkpoint.pt'} (epoch 1, step 8) is intact")
    monkeypatch.undo()
    assert load_checkpoint(out)["epoch"] == 1
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


# --- Ctrl-C and checkpoints within epochs -----------------------------------------------


def _interrupt_at_step(monkeypatch, n):
    from cnnlab.train import engine

    real = engine.set_lr
    calls = []

    def set_lr(optimizer, lr):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        real(optimizer, lr)

    monkeypatch.setattr(engine, "set_lr", set_lr)


def test_ctrl_c_says_where_the_checkpoint_is_and_how_to_resume(digits, tmp_path, monkeypatch,
                                                               capsys):
    from cnnlab.train import engine

    monkeypatch.setattr(engine, "CURVES_SECONDS", 0.0)  # redraw with every checkpoint
    out = tmp_path / "r"
    _interrupt_at_step(monkeypatch, 13)  # in the second epoch
    assert _train(digits, out, epochs=3) == 130
    err = capsys.readouterr().err
    assert err == (f"cnnlab: interrupted; the last checkpoint is {out / 'checkpoint.pt'} "
                   f"(epoch 1, step 8); continue with: cnnlab train --resume {out}\n")
    # written with that checkpoint, not only at the end of the run
    assert (out / "curves.png").is_file() and (out / "model.safetensors").is_file()
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert load_checkpoint(out)["step"] == 24


def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path):
    # Interrupted while torch and the models are still being imported, and later.
    for delay in (0.3, 1.5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnnlab", "train", "lenet5_modern", "--data", "mnist-sample",
             "--out", str(tmp_path / "r"), "--device", "cpu"],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in err, (delay, err)
        assert err.startswith("cnnlab: interrupted")


def _no_time(history):
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in history]


@pytest.mark.parametrize("every", ["steps", "time"])
def test_a_checkpoint_within_an_epoch_resumes_exactly(tmp_path, monkeypatch, every):
    from cnnlab.train import engine
    from test_train_engine import recipe, train

    if every == "time":  # the default: by the clock (here: after every step)
        monkeypatch.setattr(engine, "CHECKPOINT_SECONDS", 0.0)
    rec = recipe(epochs=2, checkpoint_every=2 if every == "steps" else 0, ema_decay=0.9)
    straight, res_a = train(tmp_path / "a", rec)

    def crash(step):
        if step == 6 + 3:  # epoch 2, after its third step
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", rec, on_step=crash)
    ckpt = load_checkpoint(tmp_path / "b", to_resume=True)
    # every 2 steps / every step: the last one before the crash is after step 8
    assert ckpt["step"] == 8 and ckpt["epoch"] == 1
    assert ckpt["position"]["loader"]["batch"] == 2 and ckpt["position"]["seen"] == 64
    resumed, res_b = train(tmp_path / "b", rec, resume=ckpt)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    assert _no_time(res_a.history) == _no_time(res_b.history)
    # the position means nothing with steps of another size: refused (another number of
    # processes with the same global batch continues it: test_train_distributed.py)
    from cnnlab.data.loader import DeviceLoader
    from cnnlab.train import fit
    from test_train_engine import Tiny, synthetic

    with pytest.raises(ValueError, match="in the middle of an epoch, with steps of 32 images; "
                       "this run's steps have 16; resume it with --batch-size 32"):
        fit(Tiny(), rec, DeviceLoader(synthetic(), 16, shuffle=True, drop_last=True),
            out_dir=tmp_path / "c", model_name="tiny", resume=ckpt, progress=False)


def test_loaders_continue_an_epoch_from_their_state(tmp_path):
    from cnnlab.data import load_dataset
    from cnnlab.data.loader import DeviceLoader, FolderLoader
    from test_train_engine import augment, synthetic

    from data_files import write_folder

    write_folder(tmp_path / "train", per_class=6, size=(8, 8))
    write_folder(tmp_path / "val", per_class=2, size=(8, 8))
    folder = load_dataset("folder", tmp_path)["train"]
    for make in (lambda: DeviceLoader(synthetic(), 16, shuffle=True, train_transform=augment),
                 lambda: FolderLoader(folder, 3, shuffle=True, train_transform=augment,
                                      mean=[0.5] * 3, std=[0.25] * 3)):
        a = make()
        a.set_epoch(1)
        it = iter(a)
        [next(it) for _ in range(2)]
        state = a.state_dict()
        rest = list(it)
        b = make()
        b.set_epoch(1)
        b.load_state_dict(state)
        again = list(b)
        assert len(again) == len(rest) > 0
        for (xa, ya), (xb, yb) in zip(rest, again, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_best_weights_are_kept_by_the_configured_split(tmp_path):
    from safetensors.torch import load_file

    from cnnlab.train import fit, seed_everything
    from test_train_engine import Tiny, loaders, recipe, synthetic

    for split in ("val", "test"):
        out = tmp_path / split
        seed_everything(0)
        model = Tiny()
        train_loader, test_loader = loaders(synthetic())
        val_loader = loaders(synthetic(64, seed=5))[1]
        states = {}

        def keep(step, model=model, states=states):
            if step % 6 == 0:
                states[step // 6] = {k: v.clone() for k, v in model.state_dict().items()}

        res = fit(model, recipe(epochs=4, lr=0.5, best_split=split), train_loader,
                  val_loader=val_loader, test_loader=test_loader, out_dir=out,
                  model_name="tiny", on_step=keep, progress=False)
        accs = [row[f"{split}_top1"] for row in res.history]
        best_epoch = accs.index(max(accs)) + 1  # the first epoch with the best accuracy
        assert res.best == out / "best.safetensors"
        best = load_file(res.best)
        for k, v in states[best_epoch].items():
            assert torch.equal(best[k], v), (split, k)


# --- bad checkpoints: one line each ------------------------------------------------------


def _rewrite(run, tmp_path, name, change):
    ckpt = read_checkpoint(run / "checkpoint.pt")
    ckpt.pop("sha256")
    change(ckpt)
    return str(save_atomic(ckpt, tmp_path / name))


def test_bad_checkpoints_are_one_line_errors(run, tmp_path, capsys):
    cases = [
        (lambda c: c.update(model_name="nosuchnet"),
         "holds a model named 'nosuchnet', which cnnlab does not know"),
        (lambda c: c.pop("run"), "not a cnnlab checkpoint (no 'run' entry)"),
        (lambda c: c.pop("config"), "not a cnnlab checkpoint (no 'config' entry)"),
        (lambda c: c["run"].update(num_classes=-3),
         "run.num_classes must be a positive integer, got -3"),
    ]
    for i, (change, message) in enumerate(cases):
        path = _rewrite(run, tmp_path, f"c{i}.pt", change)
        for argv in (["eval", path, "--data", "mnist-sample"],
                     ["train", "--resume", path, "--epochs", "3"]):
            assert main(argv) == 2, argv
            _one_line_error(capsys, message)
    no_rng = _rewrite(run, tmp_path, "no-rng.pt", lambda c: c.pop("rng"))
    assert main(["train", "--resume", no_rng, "--epochs", "3"]) == 2
    _one_line_error(capsys, "not a cnnlab checkpoint (no 'rng' entry)")
    foreign = tmp_path / "foreign.pt"  # another project's layout
    torch.save({"model": {"w": torch.ones(1)}, "config": {}}, foreign)
    assert main(["eval", str(foreign), "--data", "mnist-sample"]) == 2
    _one_line_error(capsys, "not a cnnlab checkpoint (no 'model_name', 'run' entries)")


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # making the TorchScript file
def test_eval_on_a_folder_or_a_non_checkpoint_says_so(run, tmp_path, capsys):
    import pickle
    import warnings

    (tmp_path / "notes.txt").write_text("hello")
    script = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(script, tmp_path / "exported.pt")
    with open(tmp_path / "p5.pt", "wb") as f:  # torch warns about the protocol as it loads
        pickle.dump({"model": {}}, f, protocol=5)
    for path, message in ((tmp_path, "is a folder without a checkpoint.pt"),
                          (tmp_path / "notes.txt", "not a readable cnnlab checkpoint"),
                          (tmp_path / "exported.pt", "it is a TorchScript archive"),
                          (tmp_path / "p5.pt", "not a readable cnnlab checkpoint")):
        with warnings.catch_warnings(record=True) as caught:  # they would print before us
            warnings.simplefilter("always")
            assert main(["eval", str(path), "--data", "mnist-sample"]) == 2
        assert not caught, [str(w.message) for w in caught]
        err = _one_line_error(capsys, message)
        assert "weights_only" not in err


# --- what training shows and writes ------------------------------------------------------


def test_files_of_a_run_share_one_mode(run):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()}
    assert len(set(modes.values())) == 1, modes
    assert {"checkpoint.pt", "model.safetensors", "best.safetensors", "curves.png"} <= set(modes)


def test_logs_round_their_floats(run):
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key in ("train_top1", "test_top1"):
            assert row[key] == round(row[key], 4)
        assert row["train_loss"] == round(row["train_loss"], 6)
    exact = load_checkpoint(run)["metrics"][-1]  # the checkpoint keeps the exact values
    assert abs(exact["train_loss"] - row["train_loss"]) <= 5e-7


def test_without_a_terminal_progress_is_a_line_every_n_seconds(tmp_path):
    import io
    import re

    from rich.console import Console

    from cnnlab.train import fit
    from test_train_engine import Tiny, loaders, recipe, synthetic

    buf = io.StringIO()
    train_loader, test_loader = loaders(synthetic())
    fit(Tiny(), recipe(epochs=2, max_steps=9), train_loader, test_loader=test_loader,
        out_dir=tmp_path, console=Console(file=buf, width=200), log_every_s=0.0)
    lines = re.findall(r"epoch (\d)/2 · step (\d+)/9 · loss \d+\.\d{4} · [\d,]+ img/s · "
                       r"ETA \d:\d\d:\d\d", buf.getvalue())
    assert [int(step) for _, step in lines] == list(range(1, 10))


def test_the_progress_bar_total_respects_max_steps(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from cnnlab.train import engine, fit
    from test_train_engine import Tiny, loaders, recipe, synthetic

    totals = []
    real = engine.Progress.add_task

    def add_task(self, description, **kw):
        totals.append(kw["total"])
        return real(self, description, **kw)

    monkeypatch.setattr(engine.Progress, "add_task", add_task)
    train_loader, test_loader = loaders(synthetic())  # 6 steps an epoch
    fit(Tiny(), recipe(epochs=3, max_steps=9), train_loader, test_loader=test_loader,
        out_dir=tmp_path, console=Console(file=io.StringIO(), force_terminal=True))
    assert totals == [6, 3]  # the second epoch stops at step 9


def test_the_header_states_validation_threads_and_device(digits, tmp_path, capsys):
    assert _train(digits, tmp_path / "r", "--set", "val_size=32", "max_steps=2", epochs=1) == 0
    out = " ".join(capsys.readouterr().out.split())
    threads = torch.get_num_threads()
    assert "validation: 32 training images held out (seed 0)" in out
    assert f"device cpu · {threads} CPU thread" in out
    assert "train accuracy" in out and "val accuracy" in out and "(error " in out


def test_eval_reports_per_class_accuracy_and_a_confusion_matrix(run, digits, tmp_path, capsys):
    from PIL import Image

    from cnnlab.train.inference import evaluate_checkpoints

    r = evaluate_checkpoints([run], "mnist", str(digits))
    counts = torch.tensor(r.confusion)
    assert counts.sum() == r.images == 64
    assert counts.shape == (10, 10) and r.classes == [str(d) for d in range(10)]
    assert 100 * counts.diag().sum().item() / 64 == pytest.approx(r.top1)
    assert r.top1_error == pytest.approx(100 - r.top1)
    per_class = r.per_class()
    assert [n for _, n, _ in per_class] == counts.sum(1).tolist()
    weighted = sum(n * acc for _, n, acc in per_class if n) / 64
    assert weighted == pytest.approx(r.top1)
    png = tmp_path / "confusion.png"
    assert main(["eval", str(run), "--data", "mnist", "--root", str(digits),
                 "--confusion", str(png)]) == 0
    out = capsys.readouterr().out
    assert "confusion matrix (rows: true class, columns: predicted)" in out
    first = per_class[0]
    assert f"{first[0]:<5}  {first[1]:>6}  {first[2]:6.2f}%" in out
    assert Image.open(png).size[0] > 100


def test_predict_reads_a_folder_and_skips_a_bad_image(run, digits, tmp_path, capsys):
    from PIL import Image

    from cnnlab.data import load_dataset

    test = load_dataset("mnist", digits)["test"]
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(test.images[i, 0].numpy()).save(folder / f"d{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["predict", str(run), str(folder), "--topk", "1", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert [line.split(":")[0] for line in captured.out.splitlines()] == [
        str(folder / "d0.png"), str(folder / "d1.png")]
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"cnnlab: warning: {folder / 'broken.png'}: not a readable")


def test_resize_lets_models_for_larger_images_train_on_28x28_digits(digits, tmp_path, capsys):
    argv = ["--data", "mnist", "--root", str(digits), "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--quiet"]
    assert main(["train", "alexnet", *argv, "--out", str(tmp_path / "a")]) == 2
    _one_line_error(capsys, "alexnet needs images of at least 63x63", "--set resize=63")
    out = tmp_path / "nin"  # NiN's ImageNet form (at least 39x39) is small enough to train here
    assert main(["train", "nin", *argv, "--out", str(out),
                 "--set", "resize=40", "max_steps=1"]) == 0
    assert load_checkpoint(out)["run"]["image_size"] == [1, 40, 40]
    capsys.readouterr()
    assert main(["eval", str(out), "--data", "mnist", "--root", str(digits)]) == 0
    assert "64 images" in capsys.readouterr().out
