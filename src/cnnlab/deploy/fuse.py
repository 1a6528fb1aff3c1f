"""BatchNorm folding: at test time BN is a per-channel affine map, so it folds into the conv
or linear layer that feeds it (the lectures: "during test, batch normalization becomes a linear
operation, which can be fused with the previous conv or FC layers").

Which layer feeds which BN is found by running the model once on a small input and watching
every aten op (a ``TorchDispatchMode``) together with module hooks — not by a fixed graph — so
branches, residual and dense blocks, SE gates and grouped convs need no special cases. A BN is
folded only when its input is exactly the output of one conv/linear and nothing else reads that
output; otherwise it stays in place and the report says why (pre-activation and DenseNet blocks,
where BN-ReLU comes before the conv; a BN after a concatenation or a residual sum).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cnnlab.analysis import summary as summary_module

__all__ = ["FusionReport", "calibrate_bn", "fold_bn_into", "fuse_bn", "optimize_for_inference"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FOLD_TARGETS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

# Ops that read only a tensor's shape, never its values, are not "uses" of an output: the
# analyser's list of them.
_METADATA_OPS = summary_module._METADATA_OPS

# How a BN's input was produced, in words a reader of the report recognises.
_PRODUCER_WORDS = {
    "cat": "a concatenation",
    "add": "a sum (residual or dense merge)",
    "relu": "an activation (pre-activation order: BN-ReLU comes before the conv)",
    "max_pool2d": "a pooling layer",
    "max_pool2d_with_indices": "a pooling layer",
    "avg_pool2d": "a pooling layer",
}


@dataclass
class FusionReport:
    """What :func:`fuse_bn` did: each BN either folded into a layer or left, with the reason."""

    folded: list[tuple[str, str]] = field(default_factory=list)  # (bn, conv or linear)
    left: list[tuple[str, str]] = field(default_factory=list)  # (bn, reason)

    @property
    def bn_count(self) -> int:
        return len(self.folded) + len(self.left)

    def render(self) -> str:
        lines = [f"folded {len(self.folded)} of {self.bn_count} BatchNorm layers"]
        lines += [f"  {bn} -> {target}" for bn, target in self.folded]
        if self.left:
            lines.append(f"left {len(self.left)}:")
            lines += [f"  {bn}: {reason}" for bn, reason in self.left]
        return "\n".join(lines)


class _Trace(TorchDispatchMode):
    """Records, for every tensor the forward creates, which op made it and how often it is read."""

    def __init__(self) -> None:
        super().__init__()
        self.producer: dict[int, str] = {}  # id(tensor) -> aten op name
        self.reads: Counter[int] = Counter()
        self._alive: list[torch.Tensor] = []  # keeps ids unique for the trace's lifetime

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if func in _METADATA_OPS:
            return out
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        for t in {id(t): t for t in inputs}.values():
            self.reads[id(t)] += 1
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.producer[id(t)] = func.overloadpacket.__name__
                self._alive.append(t)
        self._alive.extend(inputs)
        return out


def _default_input(model: nn.Module) -> torch.Tensor:
    size = getattr(model, "fixed_input_size", None) or getattr(model, "min_input_size", None)
    in_chans = getattr(model, "in_chans", None)
    if size is None or in_chans is None:
        raise ValueError(
            f"{type(model).__name__}: pass example_input (a batch the model accepts); "
            "only cnnlab models declare their input size"
        )
    param = next(model.parameters())
    return torch.zeros(1, in_chans, *size, dtype=param.dtype, device=param.device)


def _trace_pairs(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, str], dict[str, str]]:
    """Run ``model`` once; return {bn: layer that feeds it} and {bn: why it cannot fold}."""
    names = {m: n for n, m in model.named_modules()}
    layer_out: dict[int, tuple[str, int]] = {}  # id(output) -> (conv/linear name, version)
    calls: Counter[str] = Counter()
    bn_input: dict[str, tuple[torch.Tensor, int]] = {}
    keep: list[torch.Tensor] = []

    def after_layer(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        calls[names[module]] += 1
        layer_out[id(output)] = (names[module], output._version)
        keep.append(output)

    def before_bn(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        calls[names[module]] += 1
        bn_input[names[module]] = (inputs[0], inputs[0]._version)

    hooks = []
    for module in names:
        if isinstance(module, _FOLD_TARGETS):
            hooks.append(module.register_forward_hook(after_layer))
        elif isinstance(module, _BATCH_NORMS):
            hooks.append(module.register_forward_pre_hook(before_bn))
    trace = _Trace()
    try:
        with torch.no_grad(), trace:
            model(example)
    finally:
        for hook in hooks:
            hook.remove()

    pairs: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for bn, (x, version_read) in bn_input.items():
        source, version = layer_out.get(id(x), (None, None))
        if version is not None and version_read != version:
            source = None  # an in-place op (e.g. ReLU(inplace=True)) changed it after the layer
        if calls[bn] > 1:
            reasons[bn] = f"runs {calls[bn]} times in one forward (a shared module)"
        elif source is None:
            op = trace.producer.get(id(x))
            what = _PRODUCER_WORDS.get(op.rstrip("_"), f"the op {op}") if op else "the model input"
            reasons[bn] = f"its input comes from {what}, not from a conv or linear layer"
        elif calls[source] > 1:
            reasons[bn] = f"{source} runs {calls[source]} times in one forward (shared weights)"
        elif trace.reads[id(x)] > 1:
            reasons[bn] = (
                f"the output of {source} is also read elsewhere ({trace.reads[id(x)] - 1} "
                "other uses, e.g. a shortcut), so folding would change those"
            )
        else:
            pairs[bn] = source
    return pairs, reasons


@torch.no_grad()
def fold_bn_into(layer: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode ``bn`` into ``layer`` (a conv or linear), in place: y = s*(Wx+b-mu)+beta
    with s = gamma/sqrt(var+eps) becomes W' = s*W, b' = s*(b-mu)+beta."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    weight = layer.weight
    if weight.shape[0] != scale.numel():
        raise ValueError(f"{bn.num_features} BN channels, but the layer has {weight.shape[0]}")
    bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
    new_bias = bias * scale + shift
    weight.mul_(scale.reshape(-1, *([1] * (weight.dim() - 1))).to(weight.dtype))
    layer.bias = nn.Parameter(new_bias.to(weight.dtype), requires_grad=weight.requires_grad)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def fuse_bn(
    model: nn.Module, example_input: torch.Tensor | None = None
) -> tuple[nn.Module, FusionReport]:
    """Fold every BatchNorm that follows a conv or linear layer into it.

    Returns a new model in eval mode (``model`` is left unchanged) and a :class:`FusionReport`:
    each folded BN is replaced by ``nn.Identity`` (so other module names stay stable); each BN
    that cannot be folded stays, with the reason. ``example_input`` defaults to one zero image
    of the model's smallest accepted size; any input the model accepts gives the same result.
    """
    fused = copy.deepcopy(model).eval()
    example = _default_input(fused) if example_input is None else example_input
    pairs, reasons = _trace_pairs(fused, example)
    report = FusionReport()
    all_bns = [n for n, m in fused.named_modules() if isinstance(m, _BATCH_NORMS)]
    for bn_name in all_bns:
        bn = fused.get_submodule(bn_name)
        if bn_name in pairs:
            if bn.running_mean is None:
                report.left.append((bn_name, "keeps no running statistics"))
                continue
            fold_bn_into(fused.get_submodule(pairs[bn_name]), bn)
            _set_module(fused, bn_name, nn.Identity())
            report.folded.append((bn_name, pairs[bn_name]))
        else:
            reason = reasons.get(
                bn_name, "does not run in the eval-mode forward (e.g. a training-only auxiliary "
                "head)"
            )
            report.left.append((bn_name, reason))
    return fused, report


@torch.no_grad()
def calibrate_bn(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """Set every BN's running statistics from ``batch``, as training would have; in place.

    Untrained, BN keeps its initial statistics (mean 0, var 1) in eval mode, so the residual
    stream of a very deep net grows block after block (resnet1202 overflows to NaN). Only the
    BN layers run in training mode here, so auxiliary heads and dropout stay off.
    """
    was_training = model.training
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, _BATCH_NORMS)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average of the batches seen
        m.train()
    model(batch)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    return model.train(was_training)


def _match_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    x = args[0]
    dtype = getattr(module, "_inference_dtype", None)
    if dtype is not None and x.is_floating_point():
        x = x.to(dtype)
    if getattr(module, "_inference_channels_last", False) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return (x, *args[1:])


def optimize_for_inference(
    model: nn.Module,
    channels_last: bool = True,
    compile: bool = False,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The model ready to serve: eval mode, BN folded, optionally channels-last, cast, compiled.

    The result takes the same inputs as ``model``: a forward pre-hook converts each input to the
    memory format and dtype chosen here. The fusion report is kept as ``fusion_report``.
    """
    fused, report = fuse_bn(model)
    if dtype is not None:
        fused = fused.to(dtype)
        fused._inference_dtype = dtype
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
        fused._inference_channels_last = True
    if dtype is not None or channels_last:
        fused.register_forward_pre_hook(_match_input)
    fused.fusion_report = report
    if compile:
        return torch.compile(fused)
    return fused
