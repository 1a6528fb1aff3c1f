"""Transfer learning: `cnnlab train MODEL --weights NAME` on a tiny image folder, with a
mobilenet_v3_small checkpoint generated here and served from 127.0.0.1."""

import dataclasses

import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.deploy import weights as W
from cnnlab.train.checkpoint import load_checkpoint
from cnnlab.train.optim import build_optimizer, set_lr
from cnnlab.train.recipes import get_recipe

from data_files import write_folder
from local_server import checkpoint_bytes, publish, serving

# Small transforms (and a normalisation unlike ImageNet's) so that the run is fast and the
# test can tell that the weights' own preset is the one used.
TINY = W.EvalTransforms(resize=40, crop=32, interpolation="bilinear", mean=(0.5, 0.4, 0.3),
                        std=(0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def mobilenet():
    return checkpoint_bytes("mobilenet_v3_small")


@pytest.fixture
def served(mobilenet, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data, state = mobilenet
    with serving() as server:
        ws = publish(monkeypatch, server, "mobilenet_v3_small", data)
        monkeypatch.setitem(W._TABLE["mobilenet_v3_small"], ws.name,
                            dataclasses.replace(ws, transforms=TINY))
        yield server, state


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets")
    write_folder(root, classes=("cat", "dog"), per_class=6, size=(44, 50))
    return root


HEAD = "classifier.3."  # mobilenet_v3_small's last Linear (1024 -> classes)


def test_frozen_backbone_stays_exactly_the_pretrained_weights(served, folder, tmp_path):
    server, published = served
    out = tmp_path / "run"
    args = ["--data", "folder", "--root", str(folder), "--batch-size", "4", "--quiet",
            "--device", "cpu"]
    assert main(["train", "mobilenet_v3_small", "--weights", "DEFAULT", "--freeze", "backbone",
                 "--epochs", "1", "--out", str(out), *args]) == 0
    first = load_checkpoint(out / "checkpoint.pt")
    assert first["config"]["name"] == "finetune" and first["config"]["backbone_lr_scale"] == 0.1
    run = first["run"]
    assert run["image_size"] == [3, 32, 32]  # the weights' crop, not the model's 224
    assert run["mean"] == [0.5, 0.4, 0.3] and run["std"] == [0.2, 0.25, 0.3]
    assert run["finetune"]["head"] == ["classifier.3"] and run["classes"] == ["cat", "dog"]
    model = first["model"]
    backbone = [k for k in published if not k.startswith(HEAD)]
    # every weight and BN statistic (running mean/var, batch count) as published
    assert all(torch.equal(model[k], published[k]) for k in backbone)
    assert model[HEAD + "weight"].shape == (2, 1024)
    assert model[HEAD + "bias"].abs().sum() > 0  # trained: it starts at zero

    # Resuming rebuilds the same model and freezing without fetching the weights again.
    server.files.clear()
    for cached in W.cache_dir().iterdir():
        cached.unlink()
    assert main(["train", "--resume", str(out / "checkpoint.pt"), "--epochs", "2", *args]) == 0
    second = load_checkpoint(out / "checkpoint.pt")["model"]
    assert all(torch.equal(second[k], published[k]) for k in backbone)
    assert not torch.equal(second[HEAD + "weight"], model[HEAD + "weight"])


def test_finetune_recipe_gives_the_backbone_a_tenth_of_the_head_rate(served):
    model = cnnlab.create_model("mobilenet_v3_small", weights="DEFAULT", num_classes=5)
    assert all(p.requires_grad for p in model.parameters())  # --freeze none: all of it trains
    recipe = get_recipe("finetune")
    optimizer = build_optimizer(model, recipe)
    set_lr(optimizer, 0.01)
    head = {id(p) for p in model.classifier[3].parameters()}
    rates = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[id(p)] = group["lr"]
    assert len(rates) == len(list(model.parameters()))
    assert {rates[i] for i in head} == {0.01}
    (backbone_rate,) = {r for i, r in rates.items() if i not in head}
    assert backbone_rate == pytest.approx(0.001)


def test_linear_probe_runs_the_backbone_in_eval_mode(served):
    from cnnlab.train.finetune import Finetune

    probe = Finetune("DEFAULT", linear_probe=True)
    assert (probe.freeze, probe.recipe) == ("backbone", "linear_probe")
    model = probe.build("mobilenet_v3_small", 2).train()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        HEAD + "weight", HEAD + "bias"]
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x))  # no dropout, BN on running statistics
    assert not model.classifier[2].training  # the dropout before the head
    frozen = Finetune("DEFAULT", freeze="backbone").build("mobilenet_v3_small", 2).train()
    frozen(x)
    assert frozen.classifier[2].training and not frozen.features[0][1].training
    assert get_recipe("linear_probe").augment == "none"


def test_freeze_without_weights_is_refused(folder, tmp_path, capsys):
    assert main(["train", "mobilenet_v3_small", "--freeze", "backbone", "--data", "folder",
                 "--root", str(folder), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cnnlab: error: --freeze and --linear-probe need pretrained --weights"
    with pytest.raises(ValueError, match="--linear-probe trains the head alone"):
        from cnnlab.train.finetune import Finetune

        Finetune("DEFAULT", freeze="none", linear_probe=True)
