"""Published weights: the table's facts, the checked hub cache, pretrained models, predict.

Checkpoints are generated here in torchvision's key layout (the model's own state_dict is
that layout) and served from a real HTTP server on 127.0.0.1; the URL table is pointed at it.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.deploy import weights as W
from cnnlab.deploy.classify import eval_preprocess, predict_pretrained

from conftest import torchvision_reference
from local_server import checkpoint_bytes, publish, serving


@pytest.fixture
def server():
    with serving() as httpd:
        yield httpd


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache: $TORCH_HOME/hub/checkpoints, as torchvision uses."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def squeezenet():
    return checkpoint_bytes("squeezenet1_1")


# --- the table -------------------------------------------------------------------------


def test_resnet50_sets_are_torchvisions():
    # torchvision's ResNet50_Weights docs: V1 76.130/92.862 (resize 256), V2 80.858/95.434
    # (resize 232), both 25,557,032 params, 4.09 GFLOPs, file names resnet50-0676ba61.pth and
    # resnet50-11ad3fa6.pth; DEFAULT = V2.
    v1, v2 = W.get_weights("resnet50", "IMAGENET1K_V1"), W.get_weights("resnet50", "DEFAULT")
    assert v2.name == "IMAGENET1K_V2" and v2.default and not v1.default
    assert (v1.acc1, v1.acc5, v2.acc1, v2.acc5) == (76.13, 92.862, 80.858, 95.434)
    assert (v1.transforms.resize, v2.transforms.resize, v2.transforms.crop) == (256, 232, 224)
    assert v1.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert (v1.sha256_prefix, v2.filename) == ("0676ba61", "resnet50-11ad3fa6.pth")
    assert v1.num_params == v2.num_params == 25_557_032 and round(v2.gflops, 2) == 4.09
    assert 97 < v2.file_size_mb < 99
    assert v2.transforms.mean == (0.485, 0.456, 0.406)
    assert v2.transforms.std == (0.229, 0.224, 0.225)
    # EfficientNet-B3 is evaluated at 320 -> 300, bicubic (torchvision docs).
    b3 = W.get_weights("efficientnet_b3")
    assert (b3.transforms.resize, b3.transforms.crop, b3.transforms.interpolation) == (
        320, 300, "bicubic")


def test_every_torchvision_compatible_model_has_sets_matching_the_reference():
    reference = torchvision_reference()
    models = [n for n in cnnlab.list_models() if cnnlab.model_info(n).torchvision]
    assert {ws.model for ws in W.list_weights()} == set(models)
    for name in models:
        sets = [ws for ws in W.list_weights(name)]
        assert sum(ws.default for ws in sets) == 1, name
        for ws in sets:
            if name.startswith("vit_") and ws.min_size != cnnlab.model_info(name).input_size[1:]:
                # a ViT set at another size (SWAG at 384/512/518) has a longer position
                # embedding: (size / patch)² + 1 tokens of D values
                with torch.device("meta"):
                    at_size = cnnlab.create_model(name, image_size=ws.min_size[0])
                assert ws.num_params == sum(p.numel() for p in at_size.parameters()), ws.tag
                continue
            # the published parameter count is the registry's declared one
            assert ws.num_params == cnnlab.model_info(name).params, ws.tag
            assert ws.url.startswith("https://download.pytorch.org/models/")
            assert ws.filename.split("-")[-1].startswith(ws.sha256_prefix), ws.tag
            if ws.tag == "vgg16.IMAGENET1K_FEATURES":  # features only: no ImageNet accuracy
                assert ws.acc1 is None and ws.acc5 is None
            else:
                assert 0 < ws.acc5 - ws.acc1 < 30 and 50 < ws.acc1 < 90, ws.tag
        default = W.get_weights(name)
        assert default.acc1 == reference[name]["acc1"], name
        # and the test data's (torchvision's facts, copied independently of the package table)
        assert default.num_params == reference[name]["num_params_published"], name


def test_imagenet_class_names():
    names = W.imagenet_classes()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[1], names[207], names[999]) == (
        "tench", "goldfish", "golden retriever", "toilet tissue")


@pytest.mark.parametrize("spec, tag", [
    ("resnet50", "resnet50.IMAGENET1K_V2"),
    ("resnet50.IMAGENET1K_V1", "resnet50.IMAGENET1K_V1"),
    ("resnet50.default", "resnet50.IMAGENET1K_V2"),
    ("ResNet50_Weights.IMAGENET1K_V1", "resnet50.IMAGENET1K_V1"),
])
def test_weight_names(spec, tag):
    assert W.resolve(spec).tag == tag


def test_bad_weight_names_say_what_exists():
    with pytest.raises(W.WeightsError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        W.get_weights("resnet50", "V3")
    with pytest.raises(W.WeightsError, match="lenet5 has no published weights"):
        W.get_weights("lenet5")
    with pytest.raises(W.WeightsError, match="belong to 'resnet18'"):
        W.get_weights("resnet50", "ResNet18_Weights.IMAGENET1K_V1")


# --- download and cache --------------------------------------------------------------------


def test_download_once_into_the_hub_cache_then_cache_hit(server, hub, monkeypatch, squeezenet):
    data, state = squeezenet
    ws = publish(monkeypatch, server, "squeezenet1_1", data)
    model = cnnlab.create_model("squeezenet1_1", weights="DEFAULT")
    assert (hub / ws.filename).read_bytes() == data and sorted(hub.iterdir()) == [
        hub / ws.filename]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.pretrained == ws and model.eval_transforms.crop == 224
    again = cnnlab.create_model("squeezenet1_1", weights="IMAGENET1K_V1")
    assert len(server.requests) == 1  # the second model came from the cache
    assert torch.equal(again.classifier[1].weight, state["classifier.1.weight"])


def test_dropped_connection_resumes_with_range(server, hub, monkeypatch, squeezenet):
    data, _ = squeezenet
    ws = publish(monkeypatch, server, "squeezenet1_1", data)
    server.drop.add(ws.filename)
    path = W.download_weights(ws, backoff=0)
    assert path.read_bytes() == data
    assert server.requests == [(ws.filename, None), (ws.filename, f"bytes={len(data) // 2}-")]


def test_partial_download_is_kept_and_resumed_by_the_next_run(server, hub, monkeypatch,
                                                              squeezenet):
    data, _ = squeezenet
    ws = publish(monkeypatch, server, "squeezenet1_1", data)
    server.drop.add(ws.filename)
    with pytest.raises(W.WeightsError) as err:
        W.download_weights(ws, retries=0)
    message = str(err.value)
    assert "\n" not in message and ws.url in message and str(hub / ws.filename) in message
    assert "kept to resume" in message
    assert not (hub / ws.filename).exists()  # only the .part, never a torn file under its name
    W.download_weights(ws, retries=0)
    assert (hub / ws.filename).read_bytes() == data and list(hub.iterdir()) == [
        hub / ws.filename]
    assert server.requests[-1] == (ws.filename, f"bytes={len(data) // 2}-")


def test_wrong_hash_leaves_nothing_in_the_cache(server, hub, monkeypatch, squeezenet):
    data, _ = squeezenet
    ws = publish(monkeypatch, server, "squeezenet1_1", data, sha256="00000000")
    with pytest.raises(W.WeightsError) as err:
        cnnlab.create_model("squeezenet1_1", weights="DEFAULT")
    message = str(err.value)
    assert ws.url in message and str(hub / ws.filename) in message
    assert "SHA-256" in message and "expected 00000000" in message
    assert list(hub.iterdir()) == []


def test_truncated_file_fails_its_hash_and_is_deleted(server, hub, monkeypatch, squeezenet):
    data, _ = squeezenet
    # The server sends a shorter file, completely (a truncated upload, say).
    ws = publish(monkeypatch, server, "squeezenet1_1", data, served=data[: len(data) // 3])
    with pytest.raises(W.WeightsError, match="partial download was deleted"):
        W.download_weights(ws, backoff=0)
    assert list(hub.iterdir()) == []


def test_a_corrupt_cached_file_is_fetched_again(server, hub, monkeypatch, squeezenet):
    data, _ = squeezenet
    ws = publish(monkeypatch, server, "squeezenet1_1", data)
    hub.mkdir(parents=True)
    (hub / ws.filename).write_bytes(data[:1000])
    assert W.download_weights(ws).read_bytes() == data and len(server.requests) == 1


def test_no_network_is_one_line_naming_url_and_cache(hub, monkeypatch, squeezenet):
    with serving() as gone:
        url = gone.url  # a port nobody listens on once the server is closed
    data, _ = squeezenet
    ws = dataclasses.replace(W.get_weights("squeezenet1_1"), url=f"{url}/squeezenet1_1-x.pth")
    monkeypatch.setitem(W._TABLE["squeezenet1_1"], ws.name, ws)
    with pytest.raises(W.WeightsError) as err:
        W.download_weights(ws, retries=0)
    message = str(err.value)
    assert "\n" not in message and ws.url in message and str(hub / ws.filename) in message
    assert not hub.exists() or list(hub.iterdir()) == []


def test_cli_download_and_list(server, hub, monkeypatch, squeezenet, capsys):
    data, _ = squeezenet
    ws = publish(monkeypatch, server, "squeezenet1_1", data)
    assert main(["weights", "download", "squeezenet1_1.IMAGENET1K_V1"]) == 0
    out = capsys.readouterr().out
    assert str(hub / ws.filename) in out and "squeezenet1_1.IMAGENET1K_V1" in out
    assert main(["weights", "list", "squeezenet1_1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["tag"] for r in rows] == ["squeezenet1_1.IMAGENET1K_V1"] and rows[0]["cached"]
    assert rows[0]["acc1"] == 58.178  # torchvision's SqueezeNet1_1_Weights docs


def test_cli_errors_are_one_line(server, hub, monkeypatch, squeezenet, capsys):
    data, _ = squeezenet
    publish(monkeypatch, server, "squeezenet1_1", data, sha256="deadbeef")
    assert main(["weights", "download", "squeezenet1_1", "--retries", "0"]) == 2
    progress, err = capsys.readouterr().err.strip().rsplit("\n", 1)  # "fetching URL", error
    assert progress.startswith("fetching http://127.0.0.1")
    assert err.startswith("cnnlab: error: cannot download") and "expected deadbeef" in err
    assert main(["weights", "download", "resnet50.V9"]) == 2
    assert "IMAGENET1K_V2" in capsys.readouterr().err
    assert main(["weights", "list", "nosuchnet"]) == 2


CALLED = []


def record(what):
    CALLED.append(what)


class Payload:
    """Unpickling this calls a function: what a malicious checkpoint does."""

    def __reduce__(self):
        return record, ("unpickled",)


def test_weights_load_without_unpickling_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": Payload()}, path)
    with pytest.raises(ValueError, match="not a readable weights file"):
        cnnlab.create_model("resnet18", weights=path)
    assert CALLED == []
    torch.load(path, weights_only=False)  # the file really does run code when unpickled
    assert CALLED == ["unpickled"]


# --- pretrained models ----------------------------------------------------------------------


def test_googlenet_is_built_as_torchvision_builds_it(server, hub, monkeypatch):
    # torchvision's GoogLeNet file holds the aux heads and expects [-1, 1] input: it is built
    # with transform_input=True and aux_logits=True, loaded strictly, and the heads dropped.
    data, state = checkpoint_bytes("googlenet", aux_logits=True, init_weights=False)
    publish(monkeypatch, server, "googlenet", data)
    model = cnnlab.create_model("googlenet", weights="DEFAULT").eval()
    assert model.transform_input and model.aux1 is None and model.aux2 is None
    plain = cnnlab.create_model("googlenet", init_weights=False).eval()
    plain.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux")})
    x = torch.rand(1, 3, 64, 64)
    normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():  # transform_input maps ImageNet-normalised input to (x - 0.5) / 0.5
        torch.testing.assert_close(model(normalised), plain((x - 0.5) / 0.5),
                                   rtol=1e-4, atol=1e-4)


def test_pretrained_with_other_classes_replaces_only_the_head(server, hub, monkeypatch,
                                                              squeezenet):
    data, state = squeezenet
    publish(monkeypatch, server, "squeezenet1_1", data)
    model = cnnlab.create_model("squeezenet1_1", weights="DEFAULT", num_classes=3)
    assert model.head_names == ["classifier.1"]
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    new = model.state_dict()
    assert new["classifier.1.weight"].shape == (3, 512, 1, 1)
    assert all(torch.equal(new[k], v) for k, v in state.items() if not k.startswith("classifier"))


def test_local_weights_file(tmp_path):
    source = cnnlab.create_model("resnet18", num_classes=4)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "r18.pth")  # timm-style container
    model = cnnlab.create_model("resnet18", weights=tmp_path / "r18.pth")
    assert model.fc.out_features == 4 and model.pretrained is None
    assert model.eval_transforms == W.get_weights("resnet18").transforms
    assert torch.equal(model.fc.weight, source.fc.weight)
    with pytest.raises(FileNotFoundError, match="missing.pth' does not exist"):
        cnnlab.create_model("resnet18", weights=tmp_path / "missing.pth")


def test_eval_preprocess_is_torchvisions_preset():
    # 500x375 -> shorter side 256: 341x256 (int(256 * 500 / 375) = 341); central 224 crop at
    # left round((341 - 224) / 2) = 58 (58.5 rounds to even), top 16.
    t = W.EvalTransforms(256, 224, "bilinear", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    grid = torch.arange(375 * 500, dtype=torch.int64).view(375, 500)
    pixels = torch.stack([grid % 251, grid // 500 % 256, grid % 500 % 256], -1).to(torch.uint8)
    image = Image.fromarray(pixels.numpy())
    x = eval_preprocess(image, t)
    assert x.shape == (3, 224, 224)
    resized = image.resize((341, 256), Image.Resampling.BILINEAR).crop((58, 16, 282, 240))
    expected = torch.from_numpy(np.array(resized)).float() / 255
    torch.testing.assert_close(x, expected.permute(2, 0, 1))


def test_predict_prints_imagenet_names_with_the_weights_transforms(server, hub, monkeypatch,
                                                                   squeezenet, tmp_path, capsys):
    data, state = squeezenet
    publish(monkeypatch, server, "squeezenet1_1", data)
    image = tmp_path / "cat.png"
    Image.fromarray(torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8).numpy()).save(image)
    # By hand: shorter side 256 (341x256), central 224 crop, ImageNet mean/std.
    with Image.open(image) as im:
        crop = im.convert("RGB").resize((341, 256), Image.Resampling.BILINEAR).crop(
            (58, 16, 282, 240))
    x = torch.from_numpy(np.array(crop)).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    plain = cnnlab.create_model("squeezenet1_1").eval()
    plain.load_state_dict(state)
    with torch.no_grad():
        p = plain(x.permute(2, 0, 1)[None]).softmax(-1)[0]
    top = p.topk(3)
    names = W.imagenet_classes()
    expected = [(names[i], float(v)) for v, i in zip(top.values, top.indices.tolist(), strict=True)]
    got = predict_pretrained("squeezenet1_1", "DEFAULT", [image], topk=3)[0]
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert [round(v, 5) for _, v in got] == [round(v, 5) for _, v in expected]
    assert main(["predict", "squeezenet1_1", str(image), "--weights", "DEFAULT",
                 "--topk", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: {expected[0][0]} ")


def test_concurrent_downloads_fetch_once(server, hub, monkeypatch, squeezenet):
    import threading

    data, _ = squeezenet
    ws = publish(monkeypatch, server, "squeezenet1_1", data)
    paths, errors = [], []

    def fetch():
        try:
            paths.append(W.download_weights(ws, backoff=0))
        except Exception as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(paths) == 3
    assert (hub / ws.filename).read_bytes() == data
    assert len(server.requests) == 1  # the cache lock made the others find the file


# torchvision's own head of each family (the layer its fine-tuning tutorials replace)
HEADS = {"alexnet": ["classifier.6"], "vgg11_bn": ["classifier.6"], "resnet18": ["fc"],
         "resnext50_32x4d": ["fc"], "wide_resnet50_2": ["fc"], "densenet121": ["classifier"],
         "squeezenet1_0": ["classifier.1"], "mobilenet_v2": ["classifier.1"],
         "mobilenet_v3_small": ["classifier.3"], "efficientnet_b0": ["classifier.1"],
         "googlenet": ["fc"], "inception_v3": ["AuxLogits.fc", "fc"], "swin_t": ["head"],
         "regnet_y_400mf": ["fc"], "vit_b_16": ["heads.head"], "convnext_tiny": ["classifier.2"]}


def test_heads_cover_every_family_with_weights():
    families = {cnnlab.model_info(ws.model).family for ws in W.list_weights()}
    assert {cnnlab.model_info(name).family for name in HEADS} == families


@pytest.mark.parametrize("name", sorted(HEADS))
def test_replace_head_finds_torchvisions_head(name):
    with torch.device("meta"):  # shapes only: nothing allocated, any size costs the same
        model = cnnlab.create_model(name).eval()
        assert W.replace_head(model, 7) == HEADS[name]
        size = 299 if name == "inception_v3" else 224
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 7)


def test_predict_names_a_file_it_cannot_read(server, hub, monkeypatch, squeezenet, tmp_path,
                                             capsys):
    publish(monkeypatch, server, "squeezenet1_1", squeezenet[0])
    (tmp_path / "notes.png").write_text("not an image")
    for bad in (tmp_path / "notes.png", tmp_path / "missing.png", tmp_path):
        assert main(["predict", "squeezenet1_1", str(bad), "--weights", "DEFAULT"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"cnnlab: error: {bad}: cannot decode image") and "\n" not in err


def test_a_cnnlab_checkpoint_is_rebuilt_with_its_own_options(tmp_path):
    # A cnnlab checkpoint records the builder options: a GoogLeNet trained from scratch has
    # transform_input=False, which loading it as weights= keeps (the published set's is True).
    from cnnlab.train.checkpoint import save_atomic

    model = cnnlab.create_model("googlenet", num_classes=3, init_weights=False)
    save_atomic({"format": "cnnlab-checkpoint-1", "model_name": "googlenet",
                 "model": model.state_dict(), "ema": None, "config": {},
                 "run": {"num_classes": 3, "model_kwargs": {}}}, tmp_path / "checkpoint.pt")
    loaded = cnnlab.create_model("googlenet", weights=tmp_path / "checkpoint.pt")
    assert not loaded.transform_input and loaded.fc.out_features == 3 and loaded.aux1 is None
    assert torch.equal(loaded.fc.weight, model.fc.weight)
    # the published set's own form, for comparison
    assert W.get_weights("googlenet").build["transform_input"] is True


def test_pretrained_with_no_classes_returns_pooled_features(server, hub, monkeypatch,
                                                            squeezenet):
    publish(monkeypatch, server, "squeezenet1_1", squeezenet[0])
    model = cnnlab.create_model("squeezenet1_1", weights="DEFAULT", num_classes=0)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 512)  # fire9's 512 channels
