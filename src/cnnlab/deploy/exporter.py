"""Export a model to ONNX, TorchScript, safetensors or a PT2 archive, and prove it still
computes the same thing.

Every export is checked before it is kept: the file is written next to its target, loaded back
by the runtime that will serve it (ONNX Runtime for ONNX), run on a batch of a different size
than the one it was exported with (so the dynamic batch axis is exercised), and compared with
eager PyTorch; only then is it renamed into place. ONNX uses the TorchScript-based exporter
first (fast, and it covers the whole zoo once the adaptive-pool trap below is handled) and falls
back to the dynamo exporter; the result records which one wrote the file.

Known traps and what is done about them:

- LRN (AlexNet-2012, ZFNet, VGG-A-LRN, GoogLeNet-paper): both exporters lower
  ``F.local_response_norm`` to pad/avg-pool ops that ONNX Runtime runs exactly; checked.
- adaptive average pools whose output size does not divide the input (VGG's 7x7 head below
  224x224): the TorchScript exporter refuses them, so each such pool is replaced, for the fixed
  export size, by its exact linear form (``P_h @ x @ P_w^T`` with the pool's averaging matrices).
- ceil_mode pools (GoogLeNet, SqueezeNet): exported as ONNX ``ceil_mode``; checked at odd sizes.
- auxiliary heads (GoogLeNet, Inception-v3): the export is of the eval-mode model, which has one
  output; the heads' weights are not part of the graph.
- fixed-size models (LeNet-5): any other ``input_size`` is refused up front.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["FORMATS", "ExportResult", "export", "resolve_input_size"]

FORMATS = ("onnx", "torchscript", "safetensors", "pt2")
EXPORT_BATCH = 2  # the example batch the graph is traced with
CHECK_BATCH = 3  # a different batch for the check, so a baked-in batch size cannot pass
RTOL = 1e-4  # max |difference| allowed, relative to the range of the eager output


@dataclass
class ExportResult:
    """One verified export: what was written, by which exporter, and how close it is."""

    path: str
    format: str
    exporter: str
    input_size: tuple[int, int, int]
    max_abs_diff: float
    output_range: float
    top1_agree: bool
    check_batch: int
    notes: tuple[str, ...] = ()
    runtime_ms: float | None = None  # the exported runtime's time for the check batch
    eager_ms: float | None = None

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / self.output_range if self.output_range else self.max_abs_diff

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "relative_diff": self.relative_diff}


def _name(model: nn.Module) -> str:
    return getattr(model, "model_name", type(model).__name__)


def resolve_input_size(
    model: nn.Module, input_size: tuple[int, ...] | None = None
) -> tuple[int, int, int]:
    """(C, H, W) to export at: the model's fixed size, else ``input_size``, else its paper's."""
    in_chans = getattr(model, "in_chans", None)
    fixed = getattr(model, "fixed_input_size", None)
    if fixed is not None:
        want = (in_chans, *fixed)
        if input_size is not None and tuple(input_size) != want:
            raise ValueError(
                f"{_name(model)} takes exactly {'x'.join(map(str, want))} inputs (fixed size), "
                f"not {'x'.join(map(str, input_size))}; leave the input size out"
            )
        return want  # type: ignore[return-value]
    if input_size is not None:
        if len(input_size) != 3:
            raise ValueError(f"input_size must be (C, H, W), got {tuple(input_size)}")
        return tuple(int(v) for v in input_size)  # type: ignore[return-value]
    name = getattr(model, "model_name", None)
    if name is not None:
        from cnnlab.registry import model_info

        return (in_chans, *model_info(name).input_size[1:])  # type: ignore[return-value]
    raise ValueError(f"{_name(model)}: pass input_size=(C, H, W)")


class AdaptiveAvgPoolAsMatmul(nn.Module):
    """``AdaptiveAvgPool2d`` at one fixed input size, written as ``P_h @ x @ P_w^T``.

    Row i of ``P_h`` averages input rows floor(i*H/h) .. ceil((i+1)*H/h)-1, exactly PyTorch's
    adaptive windows, so the result equals the pool for that input size (to rounding).
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("rows", self._matrix(in_hw[0], out_hw[0]), persistent=False)
        self.register_buffer("cols", self._matrix(in_hw[1], out_hw[1]), persistent=False)

    @staticmethod
    def _matrix(size_in: int, size_out: int) -> torch.Tensor:
        matrix = torch.zeros(size_out, size_in)
        for i in range(size_out):
            start, end = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
            matrix[i, start:end] = 1.0 / (end - start)
        return matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows.to(x.dtype) @ x @ self.cols.to(x.dtype).T


def _pairs(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _rewrite_adaptive_pools(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Replace each adaptive average pool whose output does not divide its input (at this
    input size) by its exact matmul form; return the names replaced."""
    seen: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.AdaptiveAvgPool2d):
            def record(_m: nn.Module, inputs: tuple[torch.Tensor, ...], name: str = name) -> None:
                seen[name] = tuple(inputs[0].shape[-2:])  # type: ignore[assignment]

            hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    replaced = []
    for name, in_hw in seen.items():
        pool = model.get_submodule(name)
        wanted = _pairs(pool.output_size)
        out_hw = tuple(o if o is not None else i for o, i in zip(wanted, in_hw, strict=True))
        if all(i % o == 0 for i, o in zip(in_hw, out_hw, strict=True)):
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                AdaptiveAvgPoolAsMatmul(in_hw, out_hw))
        replaced.append(name)
    return replaced


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    fn()  # warm-up: first runs allocate and plan
    start = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - start) * 1e3


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, exporter: str) -> str:
    """Write ONNX with a dynamic batch axis; return the exporter that succeeded."""
    tried = ("torchscript", "dynamo") if exporter == "auto" else (exporter,)
    errors = []
    for which in tried:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notes
                if which == "torchscript":
                    torch.onnx.export(
                        model, (example,), str(path), dynamo=False, input_names=["input"],
                        output_names=["logits"], opset_version=17,
                        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    )
                else:
                    torch.onnx.export(
                        model, (example,), str(path), dynamo=True, input_names=["input"],
                        output_names=["logits"], external_data=False,
                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                    )
            return which
        except Exception as exc:  # each exporter raises its own kinds; try the next, then report
            errors.append(f"{which}: {str(exc).splitlines()[0] if str(exc) else type(exc)}")
    raise ValueError(f"{_name(model)}: ONNX export failed ({'; '.join(errors)})")


def _run_onnx(path: Path, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ValueError(
            "checking an ONNX export needs onnxruntime: pip install 'cnnlab[deploy]'"
        ) from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: torch.from_numpy(session.run(None, feed)[0])


def _write_and_load(fmt: str, model: nn.Module, example: torch.Tensor, tmp: Path,
                    exporter: str) -> tuple[str, Callable[[torch.Tensor], Callable[[], Any]]]:
    """Write ``tmp`` in ``fmt``; return the exporter used and a loader that runs the file."""
    if fmt == "onnx":
        used = _export_onnx(model, example, tmp, exporter)
        return used, lambda x: _run_onnx(tmp, x)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(tmp))
        loaded = torch.jit.load(str(tmp))
        return "torch.jit.trace", lambda x: (lambda: loaded(x))
    if fmt == "pt2":
        program = torch.export.export(
            model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},)
        )
        torch.export.save(program, str(tmp))
        loaded_pt2 = torch.export.load(str(tmp)).module()
        return "torch.export", lambda x: (lambda: loaded_pt2(x))
    from safetensors.torch import load_model, save_model

    save_model(model, str(tmp), metadata={"model": _name(model)})

    def from_weights(x: torch.Tensor) -> Callable[[], torch.Tensor]:
        # Zeroed first, so the check passes only if every tensor really comes from the file.
        rebuilt = copy.deepcopy(model)
        with torch.no_grad():
            for tensor in rebuilt.state_dict().values():
                tensor.zero_()
        load_model(rebuilt, str(tmp))
        return lambda: rebuilt(x)

    return "safetensors.torch.save_model", from_weights


def export(
    model: nn.Module,
    path: str | os.PathLike,
    format: str = "onnx",
    input_size: tuple[int, int, int] | None = None,
    *,
    exporter: str = "auto",
) -> ExportResult:
    """Export ``model`` (in eval mode) to ``path`` and check the file against eager PyTorch.

    ``format``: "onnx" (dynamic batch axis, run by ONNX Runtime), "torchscript", "safetensors"
    (the weights) or "pt2" (``torch.export``). ``exporter`` (ONNX only): "auto", "torchscript"
    or "dynamo". Raises ValueError, and leaves nothing at ``path``, when the export fails or its
    output differs from PyTorch's by more than 1e-4 of the output range, or its top-1 differs.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ValueError(f"exporter must be auto, torchscript or dynamo, got {exporter!r}")
    size = resolve_input_size(model, input_size)
    model = copy.deepcopy(model).eval()
    param = next(model.parameters())
    example = torch.randn(EXPORT_BATCH, *size, dtype=param.dtype, device=param.device)
    notes = []
    if format == "onnx":
        replaced = _rewrite_adaptive_pools(model, example)
        if replaced:
            notes.append(f"adaptive pools as exact matmuls at {size[1]}x{size[2]}: "
                         + ", ".join(replaced))
    if any("aux" in n.lower() for n, _ in model.named_children()):
        notes.append("eval-mode graph: auxiliary heads are not exported")

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    try:
        used, load = _write_and_load(format, model, example, tmp, exporter)
        check = torch.randn(CHECK_BATCH, *size, dtype=param.dtype, device=param.device)
        with torch.no_grad():
            expected, eager_ms = _timed(lambda: model(check))
            if not torch.isfinite(expected).all():
                raise ValueError(
                    f"{_name(model)}: PyTorch's own output is not finite on a random batch "
                    "(its weights overflow, e.g. untrained BN statistics), so the export "
                    "cannot be checked; export trained or BN-calibrated weights"
                )
            got, runtime_ms = _timed(load(check))
        if format == "safetensors":
            runtime_ms = eager_ms = None
        result = _compare(target, format, used, size, expected, got, tuple(notes))
        if not _passes(result) and param.dtype == torch.float32:
            # Two float32 runtimes each carry their own rounding error; in a deep net their
            # difference can reach the bound although both are as close to the exact result
            # as float32 allows. Then the file is judged against PyTorch in float64.
            exact = _float64_reference(model, check)
            own = (expected.double() - exact).abs().max().item()
            result = _compare(target, format, used, size, exact, got, (
                *notes, f"checked against float64 PyTorch (float32 PyTorch is itself "
                f"{own / (exact.max() - exact.min()).item():.1e} of the range from it)"))
        result.runtime_ms, result.eager_ms = runtime_ms, eager_ms
        if not _passes(result):
            raise ValueError(
                f"{_name(model)}: the {format} export ({used}) differs from PyTorch: max abs "
                f"difference {result.max_abs_diff:.3g} = {result.relative_diff:.2g} of the output "
                f"range (allowed {RTOL}), top-1 agreement {result.top1_agree}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _passes(result: ExportResult) -> bool:
    return result.relative_diff <= RTOL and result.top1_agree


@torch.no_grad()
def _float64_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return copy.deepcopy(model).double()(x.double())


def _compare(target: Path, fmt: str, used: str, size: tuple[int, int, int],
             expected: torch.Tensor, got: torch.Tensor, notes: tuple[str, ...]) -> ExportResult:
    if got.shape != expected.shape:
        raise ValueError(f"the {fmt} export returns shape {tuple(got.shape)}, "
                         f"PyTorch {tuple(expected.shape)}")
    expected, got = expected.double(), got.double()
    return ExportResult(
        path=str(target), format=fmt, exporter=used, input_size=size,
        max_abs_diff=(got - expected).abs().max().item(),
        output_range=(expected.max() - expected.min()).item(),
        top1_agree=bool((got.argmax(1) == expected.argmax(1)).all()),
        check_batch=expected.shape[0], notes=notes,
    )
