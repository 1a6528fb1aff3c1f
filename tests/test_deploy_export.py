"""Export checked by a real runtime: ONNX Runtime for ONNX, the loaded file for the others."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cnnlab
import cnnlab.deploy.exporter as export_module
from cnnlab.cli import main
from cnnlab.deploy import export
from cnnlab.deploy.exporter import AdaptiveAvgPoolAsMatmul
from cnnlab.deploy.fuse import calibrate_bn

from zoo_helpers import HEAVY_PARAMS, heavy_param, small_build

ort = pytest.importorskip("onnxruntime", reason="pip install 'cnnlab[deploy]'")
onnx = pytest.importorskip("onnx")

ALL = cnnlab.list_models()
# Untrained, BN keeps its initial statistics (mean 0, var 1) in eval mode, so the residual stream
# of these very deep nets grows block after block: resnet1202 reaches NaN, se_resnet152 logits of
# ~1e3 where two correct float32 runtimes differ by percents. No deployed net looks like that:
# their BN statistics are first set from a batch, as training would have.
OVERFLOW_UNTRAINED = {"resnet1202", "se_resnet152"}


def export_hw(model: nn.Module, name: str) -> tuple[int, int, int] | None:
    """Small export sizes: the paper's for CIFAR/MNIST and fixed-size nets, else 64x64 (or the
    model's minimum, if larger), which puts VGG's and AlexNet's heads on the adaptive-pool trap."""
    if model.fixed_input_size is not None or cnnlab.model_info(name).dataset != "imagenet":
        return None
    mh, mw = model.min_input_size
    return (model.in_chans, max(mh, 64), max(mw, 64))


def run_ort(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def assert_dynamic_batch(path) -> None:
    graph = onnx.load(str(path), load_external_data=False).graph
    for value in (graph.input[0], graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param, f"{value.name}: batch is fixed"


@pytest.mark.export_registry
@pytest.mark.parametrize("name", [heavy_param(n) for n in ALL])
def test_every_model_exports_to_onnx_and_ort_agrees(name, tmp_path):
    model = cnnlab.create_model(name, **small_build(name)).eval()
    size = export_hw(model, name)
    if name in OVERFLOW_UNTRAINED:
        calibrate_bn(model, torch.randn(4, *(size or cnnlab.model_info(name).input_size)))
    result = export(model, tmp_path / f"{name}.onnx", input_size=size)
    assert result.exporter in ("torchscript", "dynamo")
    assert result.relative_diff <= 1e-4 and result.top1_agree
    assert_dynamic_batch(result.path)
    # Independently of export's own check: another batch size, read back by a fresh session.
    x = torch.randn(5, *result.input_size)
    with torch.no_grad():
        want = model(x).numpy()
    got = run_ort(result.path, x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * (want.max() - want.min())
    assert (got.argmax(1) == want.argmax(1)).all()


class _Tiny(nn.Module):
    """A small stand-in for a trap's layer between a conv and a linear head."""

    def __init__(self, layer: nn.Module, pooled: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)  # 5 channels: an odd count for LRN's window
        self.layer = layer
        self.head = nn.Linear(5 * pooled * pooled, 4)

    def forward(self, x):
        return self.head(torch.flatten(self.layer(torch.relu(self.conv(x))), 1))


def test_lrn_exports_and_matches(tmp_path):
    model = _Tiny(nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0), pooled=9).eval()
    result = export(model, tmp_path / "lrn.onnx", input_size=(3, 9, 9))
    x = torch.randn(4, 3, 9, 9) * 10  # large values, so LRN's denominator really matters
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(run_ort(result.path, x) - want).max() <= 1e-4 * np.ptp(want)


@pytest.mark.parametrize("size", [5, 10, 13])
def test_adaptive_pool_that_does_not_divide_is_rewritten_exactly(size, tmp_path):
    model = _Tiny(nn.AdaptiveAvgPool2d(7), pooled=7).eval()
    result = export(model, tmp_path / "pool.onnx", input_size=(3, size, size),
                    exporter="torchscript")
    assert any("layer" in note for note in result.notes)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(run_ort(result.path, x) - want).max() <= 1e-4 * np.ptp(want)


def test_adaptive_pool_matrix_windows_by_hand():
    # 2 -> 3: windows [0,1), [0,2), [1,2) (floor(i*2/3) .. ceil((i+1)*2/3)).
    pool = AdaptiveAvgPoolAsMatmul((2, 2), (3, 3))
    assert pool.rows.tolist() == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    x = torch.randn(2, 3, 11, 6, dtype=torch.float64)
    ours = AdaptiveAvgPoolAsMatmul((11, 6), (7, 4)).double()(x)
    assert torch.allclose(ours, F.adaptive_avg_pool2d(x, (7, 4)), atol=1e-12)


@pytest.mark.parametrize("size", [7, 8, 14, 15])
def test_ceil_mode_pools_match_at_odd_and_even_sizes(size, tmp_path):
    layer = nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(3, 2, 1, ceil_mode=True))
    pooled = math.ceil((math.ceil((size - 3) / 2) + 1 + 2 - 3) / 2) + 1
    model = _Tiny(layer, pooled=pooled).eval()
    result = export(model, tmp_path / "ceil.onnx", input_size=(3, size, size))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(run_ort(result.path, x) - want).max() <= 1e-4 * np.ptp(want)


def test_aux_heads_are_left_out_of_the_eval_graph(tmp_path):
    model = cnnlab.create_model("googlenet", aux_logits=True).train()  # left in training mode
    result = export(model, tmp_path / "g.onnx", input_size=(3, 64, 64))
    assert any("auxiliary" in note for note in result.notes)
    graph = onnx.load(result.path).graph
    assert len(graph.output) == 1
    assert model.training  # the caller's model is not switched to eval


def test_fixed_size_model_refuses_another_size(tmp_path):
    model = cnnlab.create_model("lenet5")
    with pytest.raises(ValueError, match=r"lenet5 takes exactly 1x32x32"):
        export(model, tmp_path / "l.onnx", input_size=(1, 64, 64))
    assert not (tmp_path / "l.onnx").exists()
    assert export(model, tmp_path / "l.onnx").input_size == (1, 32, 32)


def test_dynamo_exporter_is_recorded(tmp_path):
    result = export(cnnlab.create_model("lenet5"), tmp_path / "d.onnx", exporter="dynamo")
    assert result.exporter == "dynamo" and result.relative_diff <= 1e-4
    assert_dynamic_batch(result.path)


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "safetensors"])
def test_other_formats_reload_and_agree(fmt, tmp_path):
    model = cnnlab.create_model("resnet20")
    result = export(model, tmp_path / f"r.{fmt}", fmt)
    assert result.max_abs_diff <= 1e-5 * result.output_range and result.top1_agree
    assert (tmp_path / f"r.{fmt}").stat().st_size > 4 * 270_000  # resnet20's 0.27M fp32 params
    assert [p.name for p in tmp_path.iterdir()] == [f"r.{fmt}"]  # no partial file left


def test_failed_check_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "RTOL", -1.0)  # no export can be this close
    with pytest.raises(ValueError, match="differs from PyTorch"):
        export(cnnlab.create_model("resnet20"), tmp_path / "r.onnx")
    assert list(tmp_path.iterdir()) == []


def test_non_finite_output_is_refused_with_the_reason(tmp_path):
    model = cnnlab.create_model("resnet20").eval()
    with torch.no_grad():
        model.fc.bias.fill_(float("inf"))
    with pytest.raises(ValueError, match="not finite"):
        export(model, tmp_path / "r.onnx")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="onnx, torchscript, safetensors, pt2"):
        export(cnnlab.create_model("resnet20"), tmp_path / "r.x", "tflite")


def test_cli_exports_a_checkpoint_and_reports(tmp_path, capsys):
    model = cnnlab.create_model("resnet20", num_classes=7)
    ckpt = {"model": model.state_dict(), "model_name": "resnet20", "config": {},
            "run": {"num_classes": 7}}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    out = tmp_path / "r.onnx"
    assert main(["export", str(tmp_path / "ckpt.pt"), "--out", str(out), "--fuse"]) == 0
    text = capsys.readouterr().out
    assert "folded 19 of 19" in text and "top-1 agrees: True" in text
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model.eval()(x).numpy()
    assert np.abs(run_ort(out, x) - want).max() <= 1e-4 * np.ptp(want)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["export", "lenet5", "--input", "1x64x64", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1x32x32" in err


def test_docs_table_covers_every_model_within_tolerance():
    """docs/deploy.md's table (scripts/deploy_table.py) names every registered model, the
    exporter that wrote it and a difference within the export check's bound."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    block = doc.split("<!-- deploy-table:start -->")[1].split("<!-- deploy-table:end -->")[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 4 and cells[0] in ALL:
            rows[cells[0]] = cells
    assert sorted(rows) == sorted(ALL), "rerun: PYTHONPATH=src python scripts/deploy_table.py"
    for name, cells in rows.items():
        if cells[2] == "not measured":  # only the heavy models' real-valued checks are opt-in
            assert cnnlab.model_info(name).params > HEAVY_PARAMS, (name, cells)
            continue
        assert cells[2] in ("torchscript", "dynamo"), (name, cells)
        relative = float(cells[3].split("(")[1].rstrip(")"))
        assert relative <= 1e-4, (name, cells)
