"""hubconf.py: every registered model is a torch.hub entry point; a few load through
``torch.hub.load(repo, name, source="local")``, with weights from a server on 127.0.0.1."""

import importlib.util
from pathlib import Path

import pytest
import torch

import cnnlab

from local_server import checkpoint_bytes, publish, serving

REPO = Path(__file__).resolve().parents[1]


def test_every_registered_model_is_an_entrypoint():
    # torch.hub's own rule for entry points: the hubconf module's public callables.
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entrypoints = sorted(n for n in dir(hubconf) if callable(getattr(hubconf, n))
                         and not n.startswith("_"))
    assert entrypoints == sorted(cnnlab.list_models())
    assert "torch" in hubconf.dependencies
    assert "Deep Residual Learning" in hubconf.resnet50.__doc__


def test_hub_load_builds_models_with_their_options():
    model = torch.hub.load(str(REPO), "resnet18", source="local", num_classes=10)
    assert model.model_name == "resnet18" and model.fc.out_features == 10
    lenet = torch.hub.load(str(REPO), "lenet5", source="local", verbose=False)
    assert lenet(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_hub_load_with_published_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data, state = checkpoint_bytes("squeezenet1_1")
    with serving() as server:
        publish(monkeypatch, server, "squeezenet1_1", data)
        model = torch.hub.load(str(REPO), "squeezenet1_1", source="local", weights="DEFAULT")
        features = torch.hub.load(str(REPO), "squeezenet1_1", source="local",
                                  weights="IMAGENET1K_V1", features_only=True)
    assert len(server.requests) == 1  # the second came from the hub cache
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [f.shape[1] for f in features(torch.zeros(1, 3, 64, 64))] == [
        info["channels"] for info in features.feature_info]
    with pytest.raises(ValueError, match="no weights 'V9'"):
        torch.hub.load(str(REPO), "squeezenet1_1", source="local", weights="V9")
