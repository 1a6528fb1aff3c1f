"""Two gloo processes on CPU: DDP keeps the ranks' weights identical; only rank 0 writes."""

import os
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
