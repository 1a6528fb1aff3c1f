"""cnnlab.viz: filter grids, feature maps, CAM/Grad-CAM/Grad-CAM++, curves, and `cnnlab viz`."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
from PIL import Image

from cnnlab.cli import main
from cnnlab.viz import cam as C
from cnnlab.viz import curves, features, filters


def test_filter_grid_shape_and_per_filter_normalisation():
    # AlexNet's first layer: 96 kernels of 11x11x3 (Krizhevsky et al. 2012, Fig. 3).
    w = torch.randn(96, 3, 11, 11)
    grid = filters.filter_grid(w)
    cols = math.ceil(math.sqrt(96))  # 10 columns, 10 rows, 1-pixel gaps
    assert grid.shape == (10 * 12 - 1, cols * 12 - 1, 3)
    first = grid[:11, :11]
    assert first.min() == 0.0 and first.max() == 1.0  # each filter scaled on its own
    assert (grid[11, :] == 1.0).all()  # the white gap row
    grey = filters.filter_grid(torch.randn(20, 1, 5, 5), columns=5)
    assert grey.shape == (4 * 6 - 1, 5 * 6 - 1, 1)


def test_first_conv_of_alexnet_2012_is_the_papers_96_11x11x3():
    from cnnlab.registry import create_model

    model = create_model("alexnet_2012")
    first = dict(model.named_modules())[filters.conv_layers(model)[0]]
    assert tuple(first.weight.shape) == (96, 3, 11, 11)


class _GapNet(nn.Module):
    """conv-ReLU-conv-ReLU, global average pool, linear: a CAM network (Zhou et al. 2016)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def _squares(n: int, g: torch.Generator, at: tuple[int, int] | None = None) -> torch.Tensor:
    """Dim noise; class-1 images also hold one bright 6x6 square (anywhere, or at ``at``)."""
    x = 0.3 * torch.rand(n, 1, 32, 32, generator=g)
    for i in range(n):
        y0, x0 = at or (int(torch.randint(0, 27, (1,), generator=g)),
                        int(torch.randint(0, 27, (1,), generator=g)))
        x[i, 0, y0:y0 + 6, x0:x0 + 6] = 1.0
    return x


@pytest.fixture(scope="module")
def square_net() -> _GapNet:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = _GapNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(120):
        x = torch.cat([0.3 * torch.rand(16, 1, 32, 32, generator=g), _squares(16, g)])
        y = torch.cat([torch.zeros(16), torch.ones(16)]).long()
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcam++"])
def test_cam_peaks_in_the_quadrant_holding_the_only_evidence(square_net, method):
    x = _squares(1, torch.Generator().manual_seed(1), at=(4, 5))  # top-left quadrant only
    r = C.class_activation_map(square_net, x, target=1, layer="features.3", method=method)
    assert r.map.shape == (32, 32) and r.score > 0.9
    peak = divmod(int(r.map.argmax()), 32)
    assert peak[0] < 16 and peak[1] < 16
    quadrants = [r.map[:16, :16], r.map[:16, 16:], r.map[16:, :16], r.map[16:, 16:]]
    means = [float(q.mean()) for q in quadrants]
    assert means[0] > 2 * max(means[1:])


def test_gradcam_equals_cam_for_a_gap_network(square_net):
    # With GAP + linear, dScore/dA_k = w_k / (h*w) everywhere, so Grad-CAM's weights are CAM's
    # divided by h*w: Grad-CAM = ReLU(CAM) / (h*w) (Selvaraju et al. 2017, Sec. 3.1).
    x = _squares(1, torch.Generator().manual_seed(2))
    cam = C.class_activation_map(square_net, x, target=1, layer="features.3", method="cam")
    grad = C.class_activation_map(square_net, x, target=1, layer="features.3", method="gradcam")
    torch.testing.assert_close(grad.raw, cam.raw.clamp_min(0) / (32 * 32), rtol=1e-4, atol=1e-7)


def test_tensor_hook_survives_an_in_place_relu_after_the_layer(square_net):
    # features.2 (a conv) is followed by an in-place ReLU that rewrites its output.
    x = _squares(1, torch.Generator().manual_seed(3))
    r = C.class_activation_map(square_net, x, target=1, layer="features.2", method="gradcam")
    conv_in = square_net.features[1](square_net.features[0](x)).detach()
    a = square_net.features[2](conv_in).detach().requires_grad_(True)
    score = square_net.fc(torch.relu(a).mean(dim=(2, 3)))[0, 1]
    (g,) = torch.autograd.grad(score, a)
    expected = torch.einsum("k,khw->hw", g[0].mean(dim=(1, 2)), a[0].detach()).clamp_min(0)
    torch.testing.assert_close(r.raw, expected)


def test_faithfulness_blurring_the_map_hurts_more_than_random(square_net):
    x = _squares(1, torch.Generator().manual_seed(4), at=(20, 18))
    r = C.class_activation_map(square_net, x, target=1, layer="features.3")
    f = C.faithfulness(square_net, x, r, fraction=0.2, trials=5)
    assert f.logit_top_drop > 2 * f.logit_random_drop > 0
    assert f.top_drop >= f.random_drop


def test_cam_refuses_a_net_without_a_gap_head_and_a_bad_class(square_net):
    vggish = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    with pytest.raises(ValueError, match="global-average-pooling"):
        C.class_activation_map(vggish, torch.rand(1, 1, 32, 32), layer="0", method="cam")
    with pytest.raises(ValueError, match="out of range"):
        C.class_activation_map(square_net, torch.rand(1, 1, 32, 32), target=7,
                               layer="features.3")


def test_default_cam_layer_per_family():
    from cnnlab.registry import create_model

    with torch.device("meta"):
        assert C.default_cam_layer(create_model("googlenet")) == "inception5b"  # concatenated
        assert C.default_cam_layer(create_model("resnet20")) == "layer3"
        assert C.default_cam_layer(create_model("resnet50")) == "layer4"


def test_feature_maps_shapes():
    from cnnlab.registry import create_model

    model = create_model("resnet20").eval()
    maps = features.feature_maps(model, torch.rand(1, 3, 32, 32), ["layer1", "layer3"])
    assert maps["layer1"].shape == (16, 32, 32) and maps["layer3"].shape == (64, 8, 8)


def _metrics(folder, rows):
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curves_thin_train_bold_test(tmp_path):
    rows = [{"epoch": e, "train_top1": 50 + e, "test_top1": 45 + e} for e in (1, 2, 3)]
    _metrics(tmp_path / "a", rows)
    _metrics(tmp_path / "b", rows)
    runs = {name: curves.load_metrics(tmp_path / name) for name in "ab"}
    fig = curves.plot_run_curves(runs)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4
    train = [ln for ln in lines if ln.get_label().endswith("(train)")]
    test = [ln for ln in lines if ln.get_label().endswith("(test)")]
    assert all(t.get_linewidth() > 2 * s.get_linewidth() for t in test for s in train)
    assert list(test[0].get_ydata()) == [54, 53, 52]  # error = 100 - top-1


# --- the command line ------------------------------------------------------------------


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(path)
    return path


def test_cli_cam_and_filters_write_png_and_svg(tmp_path, image, capsys):
    assert main(["viz", "cam", "resnet20", str(image), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "c.svg").is_file()
    assert "a random 20%" in capsys.readouterr().out
    assert main(["viz", "filters", "resnet20", "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.svg").is_file()


def test_cli_list_layers_marks_the_inception_default(capsys):
    assert main(["viz", "cam", "--list-layers", "googlenet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "inception5b  1024x7x7  (default)" in out
    assert not any(line.startswith("aux") for line in out)  # aux heads do not run in eval


@pytest.mark.parametrize("argv, message", [
    (["viz", "cam", "resnet20", "IMG", "--layer", "layer9"], "valid: conv1"),
    (["viz", "filters", "resnet20", "--layer", "fc"], "valid: conv1, layer1.0.conv1"),
    (["viz", "features", "resnet20", "IMG", "--layer", "nope"], "valid:"),
    (["viz", "cam", "resnet20", "NOTIMAGE"], "not a readable image"),
    (["viz", "cam", "no_such_net", "IMG"], "neither a checkpoint"),
    (["viz", "curves", "EMPTY"], "holds no metrics.jsonl"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, image, capsys, argv, message):
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    subs = {"IMG": str(image), "NOTIMAGE": str(tmp_path / "bad.png"),
            "EMPTY": str(tmp_path / "empty")}
    assert main([subs.get(a, a) for a in argv] + ["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab: error:") and message in err


def test_viz_erf_is_the_erf_command(capsys):
    argv = ["resnet20", "--layer", "layer1", "--input", "3x32x32", "--samples", "1"]
    torch.manual_seed(0)  # the model's random initialisation
    assert main(["erf", *argv]) == 0
    plain = capsys.readouterr().out
    torch.manual_seed(0)
    assert main(["viz", "erf", *argv]) == 0
    assert capsys.readouterr().out == plain


def test_compare_adds_a_run_at_its_accuracy_macs_and_params(tmp_path, capsys):
    from cnnlab.registry import list_models, model_info
    from cnnlab.viz import compare

    run = tmp_path / "run"
    assert main(["train", "lenet5_modern", "--data", "mnist-sample", "--out", str(run),
                 "--quiet", "--set", "max_steps=2"]) == 0
    point = compare.run_point(run)
    # lenet5_modern on 1x28x28, by hand: conv1 28*28*6*25 + conv2 10*10*16*6*25 + the three
    # linear layers 400*120 + 120*84 + 84*10 = 416,520 MACs; 156 + 2,416 + 48,120 + 10,164 +
    # 850 = 61,706 parameters.
    assert point["gmacs"] * 1e9 == pytest.approx(416_520)
    assert point["params_m"] * 1e6 == pytest.approx(61_706)
    assert point["top1"] == curves.load_metrics(run)[-1]["test_top1"]
    assert main(["viz", "compare", str(run), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp.png").is_file() and (tmp_path / "cmp.svg").is_file()
    fig, rows = compare.compare_figure([run])
    published = [n for n in list_models() if model_info(n).top1 is not None]
    assert sorted(r["model"] for r in rows if r["source"] == "published") == sorted(published)
    assert [r["model"] for r in rows if r["source"] == "run"] == ["run (lenet5_modern)"]
    drawn = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert drawn == len(published) + 1
