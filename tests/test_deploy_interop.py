"""Weight interop: checkpoints built here in torchvision's, timm's, DataParallel, torch.compile,
safetensors and cnnlab's own layouts load with `cnnlab.load_weights`; mismatches list all."""

import argparse
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import cnnlab
from cnnlab.cli import main
from cnnlab.deploy.interop import LoadMismatch, load_weights, to_model_layout

from seeded_weights import deterministic_state_dict


@pytest.fixture(scope="module")
def resnet18_state():
    return deterministic_state_dict(cnnlab.create_model("resnet18").state_dict())


def assert_loaded(model, state):
    own = model.state_dict()
    assert set(state) <= set(own)
    for key, value in state.items():
        assert torch.equal(own[key], value), key


def test_torchvision_layout_loads_strictly(resnet18_state, tmp_path):
    torch.save(resnet18_state, tmp_path / "resnet18.pth")
    model = cnnlab.create_model("resnet18")
    report = cnnlab.load_weights(model, tmp_path / "resnet18.pth")
    assert report.layout == "torchvision/cnnlab keys" and report.loaded == len(resnet18_state)
    assert_loaded(model, resnet18_state)


def test_dataparallel_ddp_and_compile_prefixes_are_stripped(resnet18_state, tmp_path):
    source = cnnlab.create_model("resnet18")
    source.load_state_dict(resnet18_state)
    parallel = nn.DataParallel(source).state_dict()  # what DataParallel and DDP write
    assert next(iter(parallel)).startswith("module.")
    # torch.compile's OptimizedModule keeps the model as _orig_mod (under DDP: both prefixes)
    compiled = {f"_orig_mod.module.{k}": v for k, v in resnet18_state.items()}
    for state, prefix in ((parallel, "module"), (compiled, "_orig_mod+module")):
        torch.save(state, tmp_path / "wrapped.pth")
        model = cnnlab.create_model("resnet18")
        assert load_weights(model, tmp_path / "wrapped.pth").layout.endswith(f"{prefix} prefix")
        assert_loaded(model, resnet18_state)


def test_safetensors_file(resnet18_state, tmp_path):
    save_file({k: v.contiguous() for k, v in resnet18_state.items()}, tmp_path / "m.safetensors")
    model = cnnlab.create_model("resnet18")
    load_weights(model, tmp_path / "m.safetensors")
    assert_loaded(model, resnet18_state)


def test_timm_resnet_train_checkpoint_loads_its_ema(resnet18_state, tmp_path):
    # timm's ResNet/ResNeXt/WRN keep torchvision's names (conv1, bn1, layer1.0.conv1, ...,
    # fc); its train.py saves {"epoch", "arch", "state_dict", "optimizer", "version",
    # "args" (an argparse.Namespace), "state_dict_ema"}, and timm's loader prefers the EMA.
    plain = {k: torch.zeros_like(v) for k, v in resnet18_state.items()}
    checkpoint = {"epoch": 7, "arch": "resnet18", "state_dict": plain, "optimizer": {},
                  "version": 2, "args": argparse.Namespace(lr=0.1, model="resnet18"),
                  "state_dict_ema": resnet18_state}
    torch.save(checkpoint, tmp_path / "last.pth.tar")
    model = cnnlab.create_model("resnet18")
    report = load_weights(model, tmp_path / "last.pth.tar")
    assert report.source == "checkpoint['state_dict_ema']"
    assert_loaded(model, resnet18_state)
    # timm's hub files hold no BN batch counters: they load, the counters stay as built.
    no_counters = {k: v for k, v in resnet18_state.items() if "num_batches_tracked" not in k}
    load_weights(model, no_counters)


def pattern(*shape):
    """Distinct, cheap values (randn over VGG's 100M-weight layer costs seconds)."""
    n = torch.Size(shape).numel()
    period = torch.linspace(-0.01, 0.01, 1009)  # a prime period: no layout aliases it
    return period.repeat(n // 1009 + 1)[:n].view(shape)


def test_timm_vgg_conv_head_is_reshaped_back_to_linear():
    # timm's VGG: pre_logits.fc1 = Conv2d(512, 4096, 7), pre_logits.fc2 = Conv2d(4096, 4096, 1),
    # head.fc = Linear(4096, 1000); features.* as torchvision's.
    with torch.device("meta"):  # built without its (slow) init: every value is loaded below
        model = cnnlab.create_model("vgg11")
    model = model.to_empty(device="cpu")
    timm = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()
            if k.startswith("features.")}
    timm["pre_logits.fc1.weight"] = pattern(4096, 512, 7, 7)
    timm["pre_logits.fc1.bias"] = pattern(4096)
    timm["pre_logits.fc2.weight"] = pattern(4096, 4096, 1, 1).flip(0)
    timm["pre_logits.fc2.bias"] = pattern(4096).flip(0)
    timm["head.fc.weight"] = pattern(1000, 4096).flip(1)
    timm["head.fc.bias"] = pattern(1000).flip(0)
    report = load_weights(model, timm)
    assert report.layout == "timm VGG (conv pre_logits)"
    # The 7x7 conv over the 7x7 map is the Linear over its flattened (C, H, W) order.
    fmap = torch.randn(2, 512, 7, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        conv = F.conv2d(fmap, timm["pre_logits.fc1.weight"], timm["pre_logits.fc1.bias"])
        torch.testing.assert_close(model.classifier[0](fmap.flatten(1)), conv.flatten(1),
                                   rtol=1e-4, atol=1e-4)
    assert torch.equal(model.classifier[6].weight, timm["head.fc.weight"])
    assert torch.equal(model.classifier[6].bias, timm["head.fc.bias"])
    assert torch.equal(model.classifier[3].weight, timm["pre_logits.fc2.weight"].flatten(1))
    assert torch.equal(model.classifier[3].bias, timm["pre_logits.fc2.bias"])


def _legacy(key):
    """torchvision's published DenseNet files: ``denselayer1.norm.1.weight`` for
    ``denselayer1.norm1.weight`` (and relu.1, conv.1, norm.2, conv.2)."""
    return re.sub(r"(denselayer\d+)\.(norm|relu|conv)([12])\.", r"\1.\2.\3.", key)


def test_densenet_legacy_names_load():
    assert _legacy("features.denseblock1.denselayer1.norm1.weight") == \
        "features.denseblock1.denselayer1.norm.1.weight"
    assert _legacy("features.transition1.norm.weight") == "features.transition1.norm.weight"
    model = cnnlab.create_model("densenet_bc_100_12")
    state = deterministic_state_dict(model.state_dict())
    # the files predate BN's num_batches_tracked: they have no counters
    legacy = {_legacy(k): v for k, v in state.items() if "num_batches_tracked" not in k}
    # (100 - 4) / 6 = 16 layers in each of 3 blocks, each with norm1 and norm2 (weight, bias,
    # running mean and var) and conv1, conv2 (weight): 48 x 10 keys renamed
    assert sum(k != _legacy(k) for k in state if "num_batches_tracked" not in k) == 48 * 10
    state = {k: v for k, v in state.items() if "num_batches_tracked" not in k}
    fresh = cnnlab.create_model("densenet_bc_100_12")
    assert load_weights(fresh, legacy).layout.startswith("DenseNet legacy keys")
    assert_loaded(fresh, state)
    # densenet121 as torchvision publishes it (meta tensors: shapes only, nothing allocated)
    with torch.device("meta"):
        big = cnnlab.create_model("densenet121")
    shapes = {_legacy(k): torch.empty(v.shape, device="meta") for k, v in
              big.state_dict().items()}
    _, layout, problems = to_model_layout(big, shapes)
    assert layout.startswith("DenseNet legacy") and problems == ([], [], [])


def test_cnnlab_training_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "lenet5_modern", "--data", "mnist-sample", "--epochs", "1",
                 "--set", "max_steps=2", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    expected = ckpt["ema"] if ckpt["ema"] is not None else ckpt["model"]
    model = cnnlab.create_model("lenet5_modern")
    report = load_weights(model, out / "checkpoint.pt")
    assert report.source.startswith("cnnlab checkpoint")
    assert_loaded(model, expected)
    fresh = cnnlab.create_model("lenet5_modern")
    load_weights(fresh, out / "model.safetensors")  # the run's exported weights
    assert_loaded(fresh, expected)


def test_a_mismatch_lists_every_problem_grouped(resnet18_state):
    state = dict(resnet18_state)
    del state["fc.weight"], state["fc.bias"]
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    state["head.extra"] = torch.zeros(3)
    state["head.other"] = torch.zeros(3)
    model = cnnlab.create_model("resnet18")
    with pytest.raises(LoadMismatch) as err:
        load_weights(model, state)
    e = err.value
    assert e.missing == ["fc.weight", "fc.bias"]
    assert e.unexpected == ["head.extra", "head.other"]
    assert e.shapes == [("conv1.weight", (64, 3, 3, 3), (64, 3, 7, 7))]
    lines = str(e).splitlines()
    shape_line = "shape differs (1): conv1.weight file [64, 3, 3, 3] vs model [64, 3, 7, 7]"
    assert lines[0] == ("weights do not fit resnet18 (read as torchvision/cnnlab keys): "
                        "2 missing, 2 unexpected, 1 with another shape key(s)")
    assert lines[1:] == ["missing (2): fc.weight, fc.bias",
                         "unexpected (2): head.extra, head.other",
                         shape_line]
    # strict=False loads what fits and reports the rest
    before = model.conv1.weight.clone()
    report = load_weights(model, state, strict=False)
    assert report.missing == e.missing and report.shapes == e.shapes
    assert torch.equal(model.conv1.weight, before)
    assert torch.equal(model.layer1[0].conv1.weight, resnet18_state["layer1.0.conv1.weight"])


def test_family_converter_is_used(monkeypatch):
    import cnnlab.models.squeezenet as family

    calls = []

    def convert_timm_state_dict(state_dict, model_name):
        calls.append(model_name)
        return {k.replace("timm_classifier.", "classifier."): v for k, v in state_dict.items()}

    monkeypatch.setattr(family, "convert_timm_state_dict", convert_timm_state_dict, raising=False)
    model = cnnlab.create_model("squeezenet1_1")
    state = deterministic_state_dict(model.state_dict())
    renamed = {k.replace("classifier.", "timm_classifier."): v for k, v in state.items()}
    report = load_weights(model, renamed)
    assert calls == ["squeezenet1_1"] and report.layout == "timm layout (family converter)"
    assert_loaded(model, state)


def test_not_a_state_dict_is_one_line(tmp_path):
    torch.save({"epoch": 3, "notes": "no tensors here"}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="no state_dict of tensors found"):
        load_weights(cnnlab.create_model("lenet5"), tmp_path / "x.pth")
    (tmp_path / "torn.pth").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ValueError, match="not a readable weights file"):
        load_weights(cnnlab.create_model("lenet5"), tmp_path / "torn.pth")
