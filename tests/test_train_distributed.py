"""Two gloo processes on CPU: DDP keeps the ranks' weights identical; only rank 0 writes."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import dataclasses, sys
    import torch, torch.nn as nn
    from cnnlab.data import ImageTensorDataset
    from cnnlab.data.loader import DeviceLoader
    from cnnlab.train import fit, get_recipe, seed_everything
    from cnnlab.train.distributed import init_from_env, shutdown

    out = sys.argv[1]
    ctx = init_from_env(torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (256,), generator=g)
    images = torch.randint(0, 60, (256, 1, 8, 8), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 2 * c : 2 * c + 2, :] += 150
    ds = ImageTensorDataset(images, labels, list("abcd"))
    seed_everything(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))
    train = DeviceLoader(ds, 16, shuffle=True, seed=0, drop_last=True,
                         rank=ctx.rank, world_size=ctx.world_size)
    test = DeviceLoader(ds, 128, shuffle=False)
    recipe = dataclasses.replace(get_recipe("fast_cpu"), epochs=2, lr=0.2, batch_size=16)
    res = fit(model, recipe, train, test_loader=test, out_dir=out, model_name="tiny",
              dist_ctx=ctx, progress=False)
    torch.save({"state": model.state_dict(), "history": res.history},
               f"{out}/rank{ctx.rank}.pt")
    shutdown(ctx)
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_train_identically(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), WORLD_SIZE="2", OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)],
                         env=dict(env, RANK=str(r), LOCAL_RANK=str(r)))
        for r in range(2)
    ]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    # 256 images / 2 ranks / batch 16 = 8 steps per epoch; metrics are summed over ranks
    assert [row["step"] for row in r0["history"]] == [8, 16]
    timeless = [[{k: v for k, v in row.items() if not k.endswith("_s")} for row in r["history"]]
                for r in (r0, r1)]
    assert timeless[0] == timeless[1]  # summed over ranks, evaluated with the same weights
    assert r0["history"][-1]["test_top1"] > 80.0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["best.safetensors", "checkpoint.pt", "curves.png", "metrics.csv",
                       "metrics.jsonl", "model.safetensors", "rank0.pt", "rank1.pt"]


def _torchrun(args, *, cwd, nproc, timeout=240):
    """``torchrun --nproc_per_node nproc -m cnnlab ARGS`` with c10d rendezvous on a free
    127.0.0.1 port; its whole process group is killed if it overruns or the test fails."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env |= {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(nproc), "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--max-restarts", "0",
           "-m", "cnnlab", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out


@pytest.mark.slow
def test_two_ranks_x_64_equal_one_process_x_128_under_torchrun(tmp_path):
    """The CLI under torchrun, 2 gloo ranks with the global batch 128 split into 2 x 64, reaches
    the weights of one process with batch 128 after 20 steps (LeNet-5 has no BatchNorm, so the
    split changes only the order of the floating-point sums)."""
    from safetensors.torch import load_file

    from cnnlab.cli import main
    from cnnlab.registry import create_model
    from cnnlab.train import seed_everything

    from data_files import write_mnist

    write_mnist(tmp_path / "mnist", n_train=2560, n_test=64)  # 20 steps of 128
    args = ["train", "lenet5_modern", "--data", "mnist", "--root", str(tmp_path / "mnist"),
            "--epochs", "1", "--batch-size", "128", "--set", "augment=none", "--quiet"]
    code, log = _torchrun([*args, "--out", str(tmp_path / "two")], cwd=tmp_path, nproc=2)
    assert code == 0, log[-3000:]
    assert "device cpu" in log and log.count("lenet5_modern on mnist") == 1  # rank 0 only
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two = load_file(tmp_path / "two" / "model.safetensors")
    one = load_file(tmp_path / "one" / "model.safetensors")
    seed_everything(0)  # the recipe's seed: the weights both runs started from
    init = create_model("lenet5_modern", num_classes=10, in_chans=1).state_dict()
    assert one.keys() == two.keys()
    for name in one:
        rel = ((one[name] - two[name]).norm() / one[name].norm()).item()
        assert rel <= 1e-5, (name, rel)
        if name.endswith("weight"):
            assert (one[name] - init[name]).norm() > 1e-2, name  # it did train
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [20]


FAULT_WORKER = textwrap.dedent("""
    import os, signal, sys
    from cnnlab.train.run import RunSpec, train

    root, out, ref = sys.argv[1:4]
    restarted = os.environ["TORCHELASTIC_RESTART_COUNT"] != "0"

    def on_step(step):  # rank 1 dies at step 10, one step after the checkpoint of step 9
        if step == 10 and not restarted and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)

    def spec(folder):  # the same command on every attempt; no --resume
        return RunSpec(model="lenet5_modern", data="mnist", root=root, epochs=3,
                       batch_size=128, out=folder,
                       overrides=["checkpoint_every=3", "eval_test_every_epoch=false"])

    train(spec(out), progress=False, on_step=on_step)
    if restarted:  # the reference: the same run, never interrupted, in the same processes
        train(spec(ref), progress=False)
""")


@pytest.mark.slow
def test_killed_worker_is_restarted_and_the_run_continues_exactly(tmp_path):
    """SIGKILL of rank 1 mid-epoch: torchrun restarts both workers with the same command, the
    run finds its checkpoint in its folder and ends with the weights and metrics of a run
    that was never interrupted (same checkpoint schedule): no gap, no step twice."""
    from safetensors.torch import load_file

    from data_files import write_mnist

    write_mnist(tmp_path / "mnist", n_train=1024, n_test=64)  # 8 steps of 128 an epoch
    script = tmp_path / "worker.py"
    script.write_text(FAULT_WORKER)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env |= {"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", "2", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--max-restarts", "1",
           str(script), str(tmp_path / "mnist"), str(tmp_path / "run"), str(tmp_path / "ref")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log[-3000:]
    assert "exitcode: -9" in log  # the worker was killed and the group restarted
    run, ref = load_file(tmp_path / "run" / "model.safetensors"), load_file(
        tmp_path / "ref" / "model.safetensors")
    for name in ref:
        assert torch.equal(run[name], ref[name]), name

    def rows(folder):
        lines = (tmp_path / folder / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
                for line in lines]

    assert [r["step"] for r in rows("run")] == [8, 16, 24]
    for got, want in zip(rows("run"), rows("ref"), strict=True):
        assert got == pytest.approx(want, rel=1e-9)
