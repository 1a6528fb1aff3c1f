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


def _descendants(pid):
    """The processes below ``pid`` (torchrun starts each worker in a session of its own, so
    killing torchrun's process group would leave them running)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _run_torchrun(target, *, cwd, nproc, timeout=240, max_restarts=0):
    """``torchrun --nproc_per_node nproc TARGET...`` with c10d rendezvous on a free 127.0.0.1
    port (tests/ importable); torchrun and every worker are killed if it overruns or the
    test fails."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env |= {"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(nproc), "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--max-restarts", str(max_restarts),
           *map(str, target)]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        for pid in [*_descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    return proc.returncode, out


def _torchrun(args, *, cwd, nproc, timeout=240):
    """``torchrun ... -m cnnlab ARGS``."""
    return _run_torchrun(["-m", "cnnlab", *args], cwd=cwd, nproc=nproc, timeout=timeout)


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
    code, log = _run_torchrun(
        [script, tmp_path / "mnist", tmp_path / "run", tmp_path / "ref"], cwd=tmp_path,
        nproc=2, max_restarts=1)
    assert code == 0, log[-3000:]
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


# A small model with BatchNorm2d and BatchNorm1d, and 20 global batches of 128 8x8 images.
BN_SETUP = textwrap.dedent("""
    import dataclasses
    import torch, torch.nn as nn
    from cnnlab.data import ImageTensorDataset
    from cnnlab.train import get_recipe, seed_everything

    def data():
        g = torch.Generator().manual_seed(1)
        labels = torch.randint(0, 4, (2560,), generator=g)
        images = torch.randint(0, 60, (2560, 1, 8, 8), generator=g, dtype=torch.uint8)
        for i, c in enumerate(labels.tolist()):
            images[i, 0, 2 * c : 2 * c + 2, :] += 150
        return ImageTensorDataset(images, labels, list("abcd"))

    def model():
        seed_everything(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16),
                             nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)).double()

    def recipe(sync_bn):
        return dataclasses.replace(get_recipe("fast_cpu"), epochs=1, batch_size=128, lr=0.2,
                                   schedule="constant", sync_bn=sync_bn)
""")

SYNC_BN_WORKER = BN_SETUP + textwrap.dedent("""
    import sys
    from safetensors.torch import load_file
    from cnnlab.data.loader import DeviceLoader
    from cnnlab.train import fit
    from cnnlab.train.distributed import init_from_env, shutdown

    out = sys.argv[1]
    ctx = init_from_env(torch.device("cpu"))
    for sync_bn in (True, False):  # the test's control: plain BN on each rank's 64 images
        net = model()
        loader = DeviceLoader(data(), 64, shuffle=True, seed=0, rank=ctx.rank,
                              world_size=ctx.world_size)
        folder = f"{out}/sync{int(sync_bn)}"
        fit(net, recipe(sync_bn), loader, out_dir=folder, model_name="tiny", dist_ctx=ctx,
            test_loader=DeviceLoader(data(), 512, shuffle=False), progress=False,
            input_fit=lambda x: x.double())
        # after training the model is plain again, and so is every weight file rank 0 wrote
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
        if ctx.is_main:
            ckpt = torch.load(f"{folder}/checkpoint.pt", weights_only=True)
            for weights in (ckpt["model"], load_file(f"{folder}/model.safetensors"),
                            load_file(f"{folder}/best.safetensors")):
                model().load_state_dict(weights, strict=True)
    shutdown(ctx)
""")


@pytest.mark.slow
def test_sync_bn_two_ranks_x_64_equal_plain_bn_one_process_x_128(tmp_path):
    """SyncBatchNorm normalises each rank's 64 images with the statistics of all 128, so 2
    ranks under torchrun reach the weights (and running statistics) of one process with
    plain BatchNorm on the global batch after 20 steps; plain BN on 64-image shares does
    not."""
    from safetensors.torch import load_file

    from cnnlab.data.loader import DeviceLoader
    from cnnlab.train import fit

    script = tmp_path / "worker.py"
    script.write_text(SYNC_BN_WORKER)
    code, log = _run_torchrun([script, tmp_path], cwd=tmp_path, nproc=2)
    assert code == 0, log[-3000:]
    setup: dict = {}
    exec(BN_SETUP, setup)
    one = setup["model"]()
    init = {k: v.clone() for k, v in one.state_dict().items()}
    fit(one, setup["recipe"](False), DeviceLoader(setup["data"](), 128, shuffle=True, seed=0),
        out_dir=tmp_path / "one", model_name="tiny", progress=False,
        input_fit=lambda x: x.double())
    want = one.state_dict()
    assert int(want["1.num_batches_tracked"]) == 20

    def worst(folder):
        got = load_file(tmp_path / folder / "model.safetensors")
        assert got.keys() == want.keys()
        return max(((got[k].double() - want[k].double()).norm() / want[k].double().norm()
                    ).item() for k in want if want[k].is_floating_point())

    assert worst("sync1") <= 1e-5
    assert worst("sync0") > 1e-3  # per-rank statistics: another model
    assert min((want[k] - init[k]).norm().item() for k in want if k.endswith("weight")) > 1e-2


DISAGREE_WORKER = textwrap.dedent("""
    import os, sys
    from cnnlab.cli import main

    root, out = sys.argv[1:3]
    lr = "0.05" if os.environ["RANK"] == "0" else "0.01"  # a node started with another --set
    sys.exit(main(["train", "lenet5_modern", "--data", "mnist", "--root", root, "--out", out,
                   "--epochs", "1", "--batch-size", "32", "--quiet", "--set", f"lr={lr}"]))
""")


@pytest.mark.slow
def test_ranks_that_disagree_on_the_recipe_all_exit_2_naming_what_differs(tmp_path):
    from data_files import write_mnist

    write_mnist(tmp_path / "mnist", n_train=64, n_test=16)
    script = tmp_path / "worker.py"
    script.write_text(DISAGREE_WORKER)
    code, log = _run_torchrun([script, tmp_path / "mnist", tmp_path / "run"], cwd=tmp_path,
                              nproc=2, timeout=120)
    assert code != 0
    line = ("cnnlab: error: the ranks disagree on the recipe's lr: rank 1 differs from rank 0; "
            "every rank must run the same command")
    assert log.count(line) == 2, log[-3000:]  # one line from each rank
    assert "]: Traceback" not in log  # no rank's traceback ([rankN]: ...)
    assert log.count("exitcode: 2") >= 1 and "exitcode: 1" not in log
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # nothing was trained


WORLD_SIZE_WORKER = textwrap.dedent("""
    import sys
    from cnnlab.train.run import RunSpec, train

    root, out = sys.argv[1:3]

    class Stop(Exception):
        pass

    def on_step(step):  # both ranks stop at step 13, one step after the checkpoint of 12
        if step == 13:
            raise Stop

    try:
        train(RunSpec(model="lenet5_modern", data="mnist", root=root, epochs=2,
                      batch_size=128, out=out, overrides=["checkpoint_every=4", "accum_steps=2"]),
              progress=False, on_step=on_step)
    except Stop:
        pass
""")


@pytest.mark.slow
def test_a_run_checkpointed_by_two_ranks_resumes_on_one(tmp_path, capsys):
    """1301 = 10 x 128 + 21 images: 11 steps an epoch, the last one of 21 images (11 + 10 on
    two ranks; with 2 accumulation steps, a step of one micro-batch). Two ranks train epoch 1
    and 1 step of epoch 2, checkpoint (step 12: 128 images into epoch 2) and stop; one
    process resumes, re-sharding, and ends with the samples, steps and weights of a run that
    was one process throughout."""
    from safetensors.torch import load_file

    from cnnlab.cli import main

    from data_files import write_mnist

    write_mnist(tmp_path / "mnist", n_train=1301, n_test=32)
    script = tmp_path / "worker.py"
    script.write_text(WORLD_SIZE_WORKER)
    code, log = _run_torchrun([script, tmp_path / "mnist", tmp_path / "run"], cwd=tmp_path,
                              nproc=2)
    assert code == 0, log[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert (ckpt["step"], ckpt["position"]["samples"], ckpt["run"]["world_size"]) == (12, 128, 2)
    assert ckpt["metrics"][0]["train_images"] == 1301  # epoch 1 on two ranks: every image

    assert main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 0
    assert ("world size 2 -> 1: the data is re-sharded over 1 process (64 images each per "
            "batch: 128 in 2 accumulation steps); continuing epoch 2 after 128 of its "
            "images") in capsys.readouterr().out
    args = ["train", "lenet5_modern", "--data", "mnist", "--root", str(tmp_path / "mnist"),
            "--epochs", "2", "--batch-size", "128", "--quiet", "--sync-bn",
            "--set", "accum_steps=2"]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    err = capsys.readouterr().err  # --sync-bn on a model without BatchNorm: one warning
    assert err.count("cnnlab: warning: --sync-bn: lenet5_modern has no BatchNorm layer") == 1

    def rows(folder):
        return [json.loads(line) for line in (tmp_path / folder / "metrics.jsonl").open()]

    assert [(r["step"], r["train_images"]) for r in rows("run")] == [(11, 1301), (22, 1301)]
    assert [(r["step"], r["train_images"]) for r in rows("ref")] == [(11, 1301), (22, 1301)]
    for got, want in zip(rows("run"), rows("ref"), strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
    run, ref = load_file(tmp_path / "run" / "model.safetensors"), load_file(
        tmp_path / "ref" / "model.safetensors")
    for name in ref:
        rel = ((run[name] - ref[name]).norm() / ref[name].norm()).item()
        assert rel <= 1e-5, (name, rel)
