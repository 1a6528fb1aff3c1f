"""The analyser: hand-derived values per layer type, branches, totals, registry-wide MACs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.analysis import summarize, zoo
from cnnlab.layers import SqueezeExcite

from zoo_helpers import build_on_meta


def row(summary, name):
    matches = [r for r in summary.layers if r.name == name]
    assert len(matches) == 1, [r.name for r in summary.layers]
    return matches[0]


# One layer on a 1x4x8x8 input, values derived by hand in the comments.
LAYER_TABLE = [
    # (layer, expected output shape, params, MACs, other ops, new activation values)
    (nn.Conv2d(4, 6, 3), (1, 6, 6, 6), 6 * 4 * 9 + 6, 6 * 6 * 6 * 4 * 9, 0, 6 * 6 * 6),
    (nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), (1, 6, 4, 4), 6 * 4 * 9,
     4 * 4 * 6 * 36, 0, 96),
    (nn.Conv2d(4, 8, 3, padding=1, groups=4), (1, 8, 8, 8), 8 * 1 * 9 + 8, 64 * 8 * 9, 0, 512),
    (nn.Conv2d(4, 4, 3, padding=2, dilation=2), (1, 4, 8, 8), 4 * 4 * 9 + 4, 64 * 4 * 36, 0,
     256),
    (nn.BatchNorm2d(4), (1, 4, 8, 8), 8, 0, 2 * 256, 256),
    (nn.ReLU(), (1, 4, 8, 8), 0, 0, 256, 256),
    (nn.ReLU(inplace=True), (1, 4, 8, 8), 0, 0, 256, 0),  # in place: no new memory
    (nn.Sigmoid(), (1, 4, 8, 8), 0, 0, 256, 256),
    (nn.Hardswish(), (1, 4, 8, 8), 0, 0, 256, 256),
    (nn.ReLU6(inplace=True), (1, 4, 8, 8), 0, 0, 256, 0),
    (nn.SiLU(), (1, 4, 8, 8), 0, 0, 256, 256),
    (nn.LeakyReLU(0.1), (1, 4, 8, 8), 0, 0, 256, 256),
    (nn.GroupNorm(2, 4), (1, 4, 8, 8), 8, 0, 4 * 256, 256),  # statistics + scale and shift
    (nn.Softmax(dim=1), (1, 4, 8, 8), 0, 0, 3 * 256, 256),  # exp, sum, divide
    (nn.MaxPool2d(2), (1, 4, 4, 4), 0, 0, 64 * 4, 64),  # 4 compares per output
    (nn.MaxPool2d(3, 2, 1), (1, 4, 4, 4), 0, 0, 64 * 9, 64),
    (nn.AvgPool2d(2), (1, 4, 4, 4), 0, 0, 64 * 4, 64),
    (nn.AdaptiveAvgPool2d(1), (1, 4, 1, 1), 0, 0, 256, 4),  # one add per input value
    (nn.AdaptiveAvgPool2d(2), (1, 4, 2, 2), 0, 0, 256, 16),
    (nn.Dropout(0.5), (1, 4, 8, 8), 0, 0, 0, 0),  # eval: identity
    (nn.Flatten(), (1, 256), 0, 0, 0, 0),  # a view
    (nn.Identity(), (1, 4, 8, 8), 0, 0, 0, 0),
]


@pytest.mark.parametrize(("layer", "shape", "params", "macs", "other", "values"), LAYER_TABLE,
                         ids=[repr(t[0]) for t in LAYER_TABLE])
def test_layer_table(layer, shape, params, macs, other, values):
    s = summarize(nn.Sequential(layer), (4, 8, 8))
    r = row(s, "0")
    assert (r.output_shape, r.params, r.macs, r.other_ops, r.activation_values) == (
        shape, params, macs, other, values)
    assert r.flops == 2 * macs
    assert r.activation_bytes == 4 * values  # float32
    assert s.unaccounted == []


def test_linear_row():
    s = summarize(nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10)), (4, 8, 8))
    r = row(s, "1")
    assert (r.output_shape, r.params, r.macs, r.activation_values) == ((1, 10), 2570, 2560, 10)


class Block(nn.Module):
    """Residual block with an SE gate and a two-branch concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.se = SqueezeExcite(4, 2)
        self.left = nn.Conv2d(4, 2, 1)
        self.right = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.se(self.conv(x))
        return torch.cat([self.left(x), self.right(x)], 1)


def test_functional_ops_get_rows_of_their_own():
    s = summarize(Block(), (4, 8, 8))
    add, mul, cat = row(s, "add"), row(s, "se.mul"), row(s, "cat")
    assert (add.other_ops, add.activation_values) == (256, 256)  # one add per element
    assert (mul.other_ops, mul.activation_values) == (256, 256)  # one gate multiply each
    assert (cat.other_ops, cat.activation_values, cat.output_shape) == (0, 512, (1, 8, 8, 8))
    # SE: avg pool (256 adds), fc1 4->2 (8 MACs), ReLU (2), fc2 2->4 (8 MACs), sigmoid (4)
    assert row(s, "se.fc1").macs == 8 and row(s, "se.fc2").macs == 8
    se_other = sum(r.other_ops for r in s.layers if r.name.startswith("se."))
    assert se_other == 256 + 2 + 4 + 256


def test_totals_add_up_and_training_estimate():
    s = summarize(Block(), (4, 8, 8), batch_size=3)
    assert s.total_params == sum(p.numel() for p in Block().parameters())
    # By hand on 4x8x8 (64 pixels): conv 3x3 4->4, SE 4->2->4 (1x1 convs with bias),
    # left 1x1 4->2, right 3x3 4->6.
    assert s.total_params == (4 * 4 * 9 + 4) + (4 * 2 + 2) + (2 * 4 + 4) + (4 * 2 + 2) + (
        4 * 6 * 9 + 6) == 402
    assert s.total_macs == 64 * 4 * 36 + 4 * 2 + 2 * 4 + 64 * 2 * 4 + 64 * 6 * 36 == 23_568
    assert s.total_flops == 2 * s.total_macs
    # SE avg pool 1 per input (256), ReLU 2, sigmoid 4, gate multiply 256, residual add 256
    assert s.total_other_ops == 256 + 2 + 4 + 256 + 256
    # input 256, conv 256, SE: pool 4, fc1 2, ReLU 2, fc2 4, sigmoid 4, multiply 256;
    # add 256, left 128, right 384, cat 512
    assert s.activation_values == 256 + 256 + (4 + 2 + 2 + 4 + 4 + 256) + 256 + 128 + 384 + 512
    assert row(s, "input").activation_values == 4 * 8 * 8  # per image, whatever the batch
    assert row(s, "cat").output_shape == (3, 8, 8, 8)  # shapes keep the batch
    p = s.total_params * 4
    # SGD with momentum: activations x batch + weights + grads + one momentum buffer
    assert s.training_bytes(5, "sgd") == 5 * s.activation_bytes + 3 * p
    assert s.training_bytes(5, "adam") == 5 * s.activation_bytes + 4 * p
    assert s.training_bytes() == 3 * s.activation_bytes + 3 * p
    with pytest.raises(ValueError, match="optimizer"):
        s.training_bytes(1, "lbfgs")


def test_counts_are_per_image():
    one, four = summarize(Block(), (4, 8, 8)), summarize(Block(), (4, 8, 8), batch_size=4)
    assert (one.total_macs, one.total_other_ops, one.activation_bytes) == (
        four.total_macs, four.total_other_ops, four.activation_bytes)


def test_dtype_sets_bytes():
    s16 = summarize(Block(), (4, 8, 8), dtype=torch.float16)
    s32 = summarize(Block(), (4, 8, 8))
    assert s16.activation_bytes * 2 == s32.activation_bytes
    assert s16.param_bytes * 2 == s32.param_bytes


def test_frozen_shared_and_unused_parameters():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Conv2d(3, 3, 3, padding=1)
            self.frozen = nn.Conv2d(3, 3, 1)
            self.unused = nn.Linear(5, 5)
            self.frozen.requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.frozen(self.shared(self.shared(x)))

    s = summarize(Net(), (3, 8, 8))
    assert row(s, "shared").params == 84 and row(s, "shared (call 2)").params == 0
    assert row(s, "shared (call 2)").macs == row(s, "shared").macs == 64 * 3 * 27
    assert (row(s, "frozen").params_frozen, row(s, "frozen").params_trainable) == (12, 0)
    assert row(s, "unused").kind == "unused" and row(s, "unused").params == 30
    assert s.total_params == 84 + 12 + 30 and s.trainable_params == 84 + 30


def test_user_model_weights_are_untouched():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model, (3, 16, 16))
    assert model.training
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu" and torch.equal(v, before[k]), k


def test_unknown_op_is_reported_not_zero():
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, dim=1)

    s = summarize(nn.Sequential(Odd()), (2, 4, 4))
    assert any("cumsum" in u and "op-count" in u for u in s.unaccounted)
    assert any("cumsum" in u and "receptive field" in u for u in s.unaccounted)
    assert s.receptive_field is None


def test_transposed_conv_receptive_field_is_reported():
    s = summarize(nn.Sequential(nn.ConvTranspose2d(2, 2, 2, stride=2)), (2, 4, 4))
    assert any("transposed" in u for u in s.unaccounted)
    assert row(s, "0").macs > 0  # counted all the same


def test_depth_groups_rows_and_keeps_totals():
    s = summarize("alexnet", depth=1)
    assert [r.name for r in s.rows] == ["input", "features", "avgpool", "classifier"]
    assert sum(r.params for r in s.rows) == s.total_params == 61_100_840
    assert sum(r.macs for r in s.rows) == s.total_macs
    assert s.rows[1].output_shape == (1, 256, 6, 6)
    assert s.rows[1].receptive_field.size == 195


def test_bad_requests_raise_one_clear_error():
    with pytest.raises(ValueError, match="too small"):
        summarize("alexnet", (3, 32, 32))
    with pytest.raises(ValueError, match="too small or the wrong shape at layer '0'"):
        summarize(nn.Sequential(nn.Conv2d(3, 3, 7)), (3, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        summarize("alexnet", (3, 0, 224))
    with pytest.raises(ValueError, match="C, H, W"):
        summarize("alexnet", (224, 224))
    with pytest.raises(ValueError, match="unknown model"):
        summarize("alexnett")
    # more bytes than int64 counts: the input itself, or a wider map inside the model
    with pytest.raises(ValueError, match="input 1x3x99999999999x99999999999 is too large"):
        summarize("alexnet", (3, 99_999_999_999, 99_999_999_999))
    with pytest.raises(ValueError, match="too large at layer '0'"):
        summarize(nn.Sequential(nn.Conv2d(1, 2**20, 1)), (1, 2**30, 2**30))


def test_large_input_costs_no_memory():
    # 4096x4096 would need 4096²·64·4 B = 4 GiB for conv1's output alone if it were real.
    s = summarize("resnet18", (3, 4096, 4096))
    assert row(s, "conv1").output_shape == (1, 64, 2048, 2048)
    assert row(s, "conv1").activation_bytes == 2048 * 2048 * 64 * 4


# -- every registered model ---------------------------------------------------------------

ALL = cnnlab.list_models()


@pytest.mark.parametrize("name", ALL)
def test_macs_equal_flop_counter_for_every_model(name):
    info = cnnlab.model_info(name)
    model = build_on_meta(name).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty((1, *info.input_size), device="meta"))
    s = summarize(model, info.input_size)
    assert s.total_flops == counter.get_total_flops()
    assert s.total_macs * 2 == counter.get_total_flops()
    assert s.total_params == sum(p.numel() for p in model.parameters())
    # The one accepted entry: a deformable conv's input-dependent field (static bound stated).
    assert [u for u in s.unaccounted if "input-dependent sampling" not in u] == []
    # `cnnlab models` and the README show this cached count where the paper declares none
    assert zoo.cached_macs().get(name) == s.total_macs, "run `python scripts/sync_readme.py`"


# -- shapes against a real forward, for random small models -------------------------------

@st.composite
def small_models(draw):
    layers: list[nn.Module] = []
    c, n = draw(st.integers(1, 3)), draw(st.integers(8, 24))
    size = n
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "pool", "bn", "relu", "avg"]))
        if kind == "conv":
            k, s, p, d = (draw(st.integers(1, 5)), draw(st.integers(1, 3)),
                          draw(st.integers(0, 2)), draw(st.integers(1, 2)))
            if size + 2 * p - d * (k - 1) - 1 < 0:
                continue
            out = draw(st.integers(1, 4))
            layers.append(nn.Conv2d(c, out, k, s, p, d))
            c, size = out, (size + 2 * p - d * (k - 1) - 1) // s + 1
        elif kind in ("pool", "avg") and size >= 2:
            layers.append(nn.MaxPool2d(2) if kind == "pool" else nn.AvgPool2d(2, ceil_mode=True))
            size = size // 2 if kind == "pool" else -(-size // 2)
        elif kind == "bn":
            layers.append(nn.BatchNorm2d(c))
        else:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(9 * c, 2)), (
        draw(st.integers(1, 3)), n)


@settings(max_examples=40, deadline=None)
@given(small_models())
def test_shapes_equal_real_forward(model_and_size):
    model, (batch, n) = model_and_size
    c = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    c_in = c.in_channels if isinstance(c, nn.Conv2d) else c.in_features // 9
    real: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(
        lambda _m, _i, o, name=name: real.__setitem__(name, tuple(o.shape)))
        for name, m in model.named_children()]
    model.eval()(torch.randn(batch, c_in, n, n))
    for h in hooks:
        h.remove()
    s = summarize(model, (c_in, n, n), batch_size=batch)
    assert {r.name: r.output_shape for r in s.layers if r.kind == "layer"} == real


# -- the analyser's shortcuts for slow meta kernels agree with PyTorch's ----------------------

FAST_CASES = [
    (torch.ops.aten.native_batch_norm.default, "bn", False),
    (torch.ops.aten._native_batch_norm_legit_no_training.default, "bn_legit", False),
    (torch.ops.aten.relu_.default, "unary", True),
    (torch.ops.aten.relu.default, "unary", False),
    (torch.ops.aten.sigmoid.default, "unary", False),
    (torch.ops.aten.add.Tensor, "binary", False),
    (torch.ops.aten.mul.Tensor, "binary", False),
    (torch.ops.aten.add_.Tensor, "binary", True),
]


@pytest.mark.parametrize(("func", "kind", "inplace"), FAST_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_meta_outputs_equal_pytorch_meta(func, kind, inplace, dtype, channels_last):
    from cnnlab.analysis.summary import _fast_meta

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.empty(2, 3, 5, 4, device="meta", dtype=dtype).to(memory_format=fmt)
    w = torch.empty(3, device="meta")
    args = {"bn": (x, w, w, w, w, False, 0.1, 1e-5), "bn_legit": (x, w, w, w, w, 0.1, 1e-5),
            "unary": (x,), "binary": (x, torch.empty_like(x))}[kind]
    fast, real = _fast_meta(func, args, {}), func(*args)
    assert fast is not None
    if inplace:
        assert fast is x and real is x
    for f, r in zip(fast if isinstance(fast, tuple) else (fast,),
                    real if isinstance(real, tuple) else (real,), strict=True):
        assert (f.shape, f.dtype, f.stride()) == (r.shape, r.dtype, r.stride())


def test_fast_meta_declines_broadcasts_and_comparisons():
    from cnnlab.analysis.summary import _fast_meta

    x = torch.empty(2, 3, 4, 4, device="meta")
    assert _fast_meta(torch.ops.aten.mul.Tensor, (x, torch.empty(2, 3, 1, 1, device="meta")),
                      {}) is None
    assert _fast_meta(torch.ops.aten.eq.Tensor, (x, torch.empty_like(x)), {}) is None
    assert _fast_meta(torch.ops.aten.add.Tensor, (x, 1.5), {}) is None
