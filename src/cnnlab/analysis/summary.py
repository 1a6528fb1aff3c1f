"""`summarize`: the lectures' per-layer table for any model and input, without real compute.

The model runs once on meta tensors (shapes only, no memory, no arithmetic) under a
``TorchDispatchMode`` that sees every aten op. Each op is attributed to the leaf module
running it (or, for functional code such as a residual ``out + identity`` in a block's
``forward``, to a row of its own), and four metrics are kept, each in one place:

- parameters: each module's own tensors, each counted once (shared weights too);
- MACs: ``torch.utils.flop_counter``'s formulas (:mod:`cnnlab.analysis.ops`), FLOP = 2 MAC;
- other ops: BN, activations, pooling, adds, gate multiplies (:mod:`cnnlab.analysis.ops`);
- activation memory: the values a row's output newly allocates (in-place ops and views
  allocate none);
- receptive field: propagated op by op (:mod:`cnnlab.analysis.receptive_field`);
- data flow: each row's ``inputs`` name the rows whose outputs it reads, so residual adds,
  concatenations and gates show as rows with several inputs (the explorer's block diagram).

Counts and memory are **per image** (the traced batch divided by ``batch_size``); output
shapes include the batch. An op with no counting or receptive-field rule is listed in
``Summary.unaccounted`` and its row is flagged, never silently counted as zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.analysis import ops as op_rules
from cnnlab.analysis.receptive_field import NoRule, ReceptiveField, TensorRF, input_rf, propagate
from cnnlab.analysis.receptive_field import module_rule as module_rf_rule

__all__ = ["CONVENTIONS", "OPTIMIZER_STATES", "Row", "Summary", "summarize", "tree_rows"]

CONVENTIONS = (
    "Per image. MACs: multiply-accumulates of conv/linear/matmul ops as "
    "torch.utils.flop_counter counts them (no bias adds); FLOPs = 2 x MACs. Other ops "
    "(separate column): elementwise 1/element (activations, residual adds, SE multiplies), "
    "batch norm 2/element, group/layer norm 4/element, pooling K*K per output, adaptive "
    "pooling and means 1 per input, softmax 3/element; views, copies and concatenation 0. "
    "Activation memory: values each row's output newly allocates "
    "(in-place ops and views: 0), input included. Receptive field: size of one output unit's "
    "field in input pixels (not clipped at the border), jump = pixels between units, "
    "start = centre of the first unit; 'global' when every unit sees the whole input."
)

# Copies of the trainable parameters an optimizer keeps (momentum buffer; Adam's m and v).
OPTIMIZER_STATES = {"sgd": 1, "sgd-nomomentum": 0, "adam": 2, "adamw": 2, "rmsprop": 1}

_METADATA_OPS = {
    torch.ops.aten.size.default, torch.ops.aten.sym_size.default, torch.ops.aten.stride.default,
    torch.ops.aten.sym_stride.default, torch.ops.aten.dim.default, torch.ops.aten.numel.default,
    torch.ops.aten.sym_numel.default, torch.ops.aten.is_contiguous.default,
    torch.ops.aten.storage_offset.default, torch.ops.prim.layout.default,
    torch.ops.prim.device.default,
}


@dataclass
class Row:
    """One leaf layer (or functional op, input, unused module) of the table."""

    name: str
    type: str
    kind: str  # "input" | "layer" | "op" | "block" | "params" | "unused" | "module"
    output_shape: tuple[int, ...] | None = None
    input_shape: tuple[int, ...] | None = None  # of the first tensor the layer takes
    kernel_size: tuple[int, ...] | None = None  # conv and pooling layers
    stride: tuple[int, ...] | None = None
    params_trainable: int = 0
    params_frozen: int = 0
    flops: int = 0  # per image, 2 x MACs
    other_ops: int = 0  # per image
    activation_values: int = 0  # per image
    activation_bytes: int = 0  # per image
    receptive_field: ReceptiveField | None = None
    notes: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # rows whose outputs this row reads

    @property
    def params(self) -> int:
        return self.params_trainable + self.params_frozen

    @property
    def macs(self) -> int:
        return self.flops // 2


@dataclass(repr=False)
class Summary:
    """The analyser's result: rows plus totals. Render it with :mod:`cnnlab.analysis.render`;
    ``print(summary)`` shows the table that fits the terminal."""

    model: str
    input_size: tuple[int, int, int]
    batch_size: int
    dtype: torch.dtype
    rows: list[Row]
    layers: list[Row]  # always one row per leaf layer/op, whatever ``depth``
    receptive_field: ReceptiveField | None  # of forward_features' output
    module_outputs: dict[str, tuple[tuple[int, ...], ReceptiveField | None]]
    stages: list[dict[str, Any]]
    unaccounted: list[str]
    depth: int | None = None
    conventions: str = CONVENTIONS
    module_types: dict[str, str] = field(default_factory=dict)  # qualified name -> class name

    def __str__(self) -> str:
        import shutil

        from cnnlab.analysis.render import fitted_text

        return fitted_text(self, shutil.get_terminal_size().columns)

    __repr__ = __str__

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(r.params_trainable for r in self.layers)

    @property
    def total_flops(self) -> int:
        return sum(r.flops for r in self.layers)

    @property
    def total_macs(self) -> int:
        return self.total_flops // 2

    @property
    def total_other_ops(self) -> int:
        return sum(r.other_ops for r in self.layers)

    @property
    def activation_values(self) -> int:
        """Forward activation values per image (the input and every newly allocated output)."""
        return sum(r.activation_values for r in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(r.activation_bytes for r in self.layers)

    @property
    def first_global(self) -> str | None:
        """The first module (else layer or op) whose every unit sees the whole input: a
        transformer's first attention, an SE gate, a global pool; or None."""
        modules = ((name, rf) for name, (_, rf) in self.module_outputs.items())
        rows = ((r.name, r.receptive_field) for r in self.layers)
        for candidates in (modules, rows):
            name = next((n for n, rf in candidates if rf is not None and rf.covers_input), None)
            if name is not None:
                return name
        return None

    @property
    def param_bytes(self) -> int:
        return self.total_params * self.dtype.itemsize

    def training_bytes(self, batch_size: int | None = None, optimizer: str = "sgd") -> int:
        """Estimated training memory: activations kept for backward (every forward output,
        for ``batch_size`` images) + parameters + gradients + optimizer state.

        Optimizer state per trainable parameter: ``OPTIMIZER_STATES`` (SGD momentum 1, Adam 2).
        """
        batch = self.batch_size if batch_size is None else batch_size
        if batch < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch}")
        if optimizer not in OPTIMIZER_STATES:
            raise ValueError(f"unknown optimizer {optimizer!r}; one of {sorted(OPTIMIZER_STATES)}")
        trainable = self.trainable_params * self.dtype.itemsize
        states = OPTIMIZER_STATES[optimizer] * trainable
        return batch * self.activation_bytes + self.param_bytes + trainable + states


_UNKNOWN = object()  # a receptive field lost to an op with no rule


@dataclass
class _Frame:
    name: str
    row: Row | None  # leaf modules own a row


class _Tracer(TorchDispatchMode):
    """Follows every aten op of one meta forward, filling rows."""

    def __init__(self, batch: int, input_hw: tuple[int, int]) -> None:
        super().__init__()
        self.batch, self.input_hw = batch, input_hw
        self.rows: list[Row] = []
        self.stack: list[_Frame] = []
        self.rf: dict[int, tuple[torch.Tensor, Any]] = {}
        self.owner: dict[int, tuple[torch.Tensor, Row]] = {}
        self.producer: dict[int, tuple[torch.Tensor, Row]] = {}  # the row a tensor came from
        self.unaccounted: list[str] = []
        self.op_names: dict[str, int] = {}
        self.last_spatial: ReceptiveField | None = None
        self.cache: dict[Any, Any] = {}
        # Fields set by a module rule (receptive_field.module_rule), one per module call in
        # progress; while any is open, the ops inside it propagate none.
        self.module_rules: list[TensorRF | None] = []

    # -- receptive fields of tensors -------------------------------------------------
    def rf_of(self, t: torch.Tensor) -> Any:
        entry = self.rf.get(id(t))
        return None if entry is None or entry[0] is not t else entry[1]

    def set_rf(self, t: torch.Tensor, rf: Any) -> None:
        self.rf[id(t)] = (t, rf)

    def public_rf(self, t: Any) -> ReceptiveField | None:
        rf = self.rf_of(t) if isinstance(t, torch.Tensor) else None
        if not isinstance(rf, TensorRF):
            return None
        return ReceptiveField.of(rf, tuple(t.shape), self.input_hw)

    # -- data flow -----------------------------------------------------------------
    def producer_of(self, t: torch.Tensor) -> Row | None:
        entry = self.producer.get(id(t))
        return None if entry is None or entry[0] is not t else entry[1]

    def link(self, row: Row, inputs: list[torch.Tensor], outs: list[torch.Tensor]) -> None:
        """Record which rows ``row`` reads, and that it produced ``outs``."""
        for t in inputs:
            source = self.producer_of(t)
            if source is not None and source is not row and source.name not in row.inputs:
                row.inputs.append(source.name)
        for t in outs:
            self.producer[id(t)] = (t, row)

    # -- rows ----------------------------------------------------------------------
    def add_row(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def finish_row(self, row: Row, out: Any) -> None:
        t = out[0] if isinstance(out, (tuple, list)) and out else out
        if not isinstance(t, torch.Tensor):
            return
        row.output_shape = tuple(t.shape)
        owner = self.owner.get(id(t))
        if owner is not None and owner[0] is t and owner[1] is row:
            row.activation_values = t.numel() // self.batch
            row.activation_bytes = row.activation_values * t.element_size()
        elif row.kind == "layer":
            row.notes.append("in-place or view: no new memory")
        rf = self.rf_of(t)
        if rf is _UNKNOWN:
            row.notes.append("receptive field unknown (see unaccounted)")
            self.last_spatial = None
        row.receptive_field = self.public_rf(t)
        if isinstance(rf, TensorRF) and (rf.spatial or rf.channels_last):
            self.last_spatial = row.receptive_field

    def op_row(self, func: Any) -> Row:
        parent = self.stack[-1].name if self.stack else ""
        op = func._overloadpacket.__name__.rstrip("_")
        base = f"{parent}.{op}" if parent else op
        n = self.op_names[base] = self.op_names.get(base, 0) + 1
        name = base if n == 1 else f"{base}#{n}"
        return self.add_row(Row(name=name, type=op, kind="op"))

    # -- the dispatch hook ---------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _METADATA_OPS:
            return func(*args, **kwargs)
        # FlopCounterMode decomposes every op it has no formula for, in case a matmul hides
        # inside; we do the same except for ops our rules know to hold none (BN, pointwise,
        # pooling), whose decompositions are slow and add nothing.
        if not op_rules.has_rule(func):
            with self:
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = self._run(func, args, kwargs)
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out])
                if isinstance(o, torch.Tensor)]
        flops = op_rules.mac_flops(func, args, kwargs, out) or 0
        other = op_rules.other_ops(func, args, kwargs, out)
        rf = self._propagate(func, args, kwargs, out)

        frame = self.stack[-1] if self.stack else None
        allocates = bool(outs) and not func.is_view and not func._schema.is_mutable
        row = frame.row if frame is not None else None
        inputs = [a for a in _flatten(args) + _flatten(list(kwargs.values()))
                  if isinstance(a, torch.Tensor)]
        if row is None:
            if func.is_view or (rf is None and not flops and not other):
                self._assign(outs, rf)
                # reshapes and parameter-only ops are not rows of their own: their outputs
                # come from the row their input came from
                source = next((s for t in inputs if (s := self.producer_of(t))), None)
                if source is not None:
                    for t in outs:
                        self.producer[id(t)] = (t, source)
                return out
            row = self.op_row(func)
            row.output_shape = tuple(outs[0].shape) if outs else None
            first = next((a for a in _flatten(args) if isinstance(a, torch.Tensor)), None)
            row.input_shape = None if first is None else tuple(first.shape)
        self.link(row, inputs, outs)
        row.flops += flops // self.batch
        if other is None:
            row.notes.append(f"no op-count rule for {func}")
            self.unaccounted.append(f"{row.name}: {func} (no op-count rule; not counted)")
        else:
            row.other_ops += other // self.batch
        if allocates or (func.is_view and any(self._owned_by(t, row) for t in inputs)):
            # a view of what this row itself allocated (a linear layer's N·H·W x C result
            # viewed back as N x H x W x C) is still that row's new memory
            for t in outs:
                self.owner[id(t)] = (t, row)
        self._assign(outs, rf)
        if row.kind == "op":
            self.finish_row(row, out)
        return out

    def _run(self, func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        """Run an op on meta tensors, reusing the output shapes of an identical earlier call:
        PyTorch's meta kernels for BN and elementwise ops are Python and dominate the time,
        and deep nets repeat the same call many times. Views are always run (they alias)."""
        fast = _fast_meta(func, args, kwargs)
        if fast is not None:
            return fast
        key = None if func.is_view else _signature((func, args, kwargs))
        spec = self.cache.get(key) if key is not None else None
        if spec is not None:
            return _rebuild(spec, args)
        out = func(*args, **kwargs)
        if key is not None:
            spec = _describe(out, args)
            if spec is not None:
                self.cache[key] = spec
        return out

    def _owned_by(self, t: torch.Tensor, row: Row) -> bool:
        entry = self.owner.get(id(t))
        return entry is not None and entry[0] is t and entry[1] is row

    def _assign(self, outs: list[torch.Tensor], rf: Any) -> None:
        for t in outs:
            if rf is not None:
                self.set_rf(t, rf)

    def _propagate(self, func: Any, args: Any, kwargs: dict[str, Any], out: Any) -> Any:
        if any(r is not None for r in self.module_rules):
            return None
        tensors = [a for a in _flatten(args) + _flatten(list(kwargs.values()))
                   if isinstance(a, torch.Tensor)]
        rfs = [self.rf_of(t) for t in tensors]
        if any(r is _UNKNOWN for r in rfs):
            return _UNKNOWN
        try:
            return propagate(func, args, kwargs, out, self.rf_of)
        except NoRule as why:
            where = self.stack[-1].name if self.stack else "(top level)"
            self.unaccounted.append(f"{where}: {func} ({why}; receptive field lost)")
            return _UNKNOWN


_BATCH_NORMS = {torch.ops.aten.native_batch_norm.default,
                torch.ops.aten._native_batch_norm_legit_no_training.default}


_A = torch.ops.aten
# Elementwise ops whose output has the input's shape, strides and (floating) dtype.
_SAME_DTYPE = {_A.add, _A.sub, _A.mul, _A.div, _A.relu, _A.sigmoid, _A.tanh, _A.silu, _A.gelu,
               _A.hardswish, _A.hardsigmoid, _A.mish, _A.elu, _A.leaky_relu}


def _fast_meta(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    """Outputs of the commonest ops built directly, where PyTorch's meta kernels are slow
    Python (checked against them in tests/test_analysis_summary.py); None otherwise."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.device.type != "meta" or kwargs:
        return None
    if func in _BATCH_NORMS:
        stats = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        c = x.shape[1]
        return (torch.empty_like(x), torch.empty(c, dtype=stats, device="meta"),
                torch.empty(c, dtype=stats, device="meta"))
    if torch.Tag.pointwise not in func.tags:
        return None
    others = [a for a in args[1:] if isinstance(a, torch.Tensor)]
    if any(o.shape != x.shape or o.dtype != x.dtype or o.stride() != x.stride()
           for o in others) or any(isinstance(a, (float, complex)) for a in args[1:]):
        return None  # broadcasting or type promotion: let PyTorch decide
    if torch.Tag.inplace in func.tags:
        return x
    if func._overloadpacket in _SAME_DTYPE and x.is_floating_point():
        return torch.empty_like(x)
    return None


_HASHABLE = (int, float, bool, str, type(None), torch.dtype, torch.memory_format, torch.layout,
             torch.device)


def _signature(obj: Any) -> Any:
    """A hashable key of an op call (tensors by shape, strides and dtype), or None."""
    if isinstance(obj, torch.Tensor):
        return ("T", tuple(obj.shape), obj.stride(), obj.dtype, obj.device.type)
    if isinstance(obj, (list, tuple)):
        parts = tuple(_signature(o) for o in obj)
        return None if any(p is None and o is not None for p, o in zip(parts, obj, strict=True)) \
            else parts
    if isinstance(obj, dict):
        return _signature(tuple(sorted(obj.items())))
    if isinstance(obj, _HASHABLE) or callable(obj):
        return obj
    return None


def _describe(out: Any, args: Any) -> Any:
    if isinstance(out, torch.Tensor):
        if args and out is args[0]:
            return ("self",)
        if out.device.type != "meta":
            return None
        return ("new", tuple(out.shape), out.stride(), out.dtype)
    if isinstance(out, (tuple, list)) and out:
        parts = [_describe(o, args) for o in out]
        return None if any(p is None for p in parts) else ("seq", type(out), parts)
    return None


def _rebuild(spec: Any, args: Any) -> Any:
    if spec[0] == "self":
        return args[0]
    if spec[0] == "new":
        return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device="meta")
    return spec[1](_rebuild(p, args) for p in spec[2])


def _flatten(items: Any) -> list[Any]:
    flat: list[Any] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _check_request(input_size: Any, batch_size: int | None) -> tuple[int, int, int, int]:
    """(batch, C, H, W) from a (C, H, W) or batch-first (N, C, H, W) size."""
    size = tuple(input_size)
    if len(size) not in (3, 4) or not all(isinstance(v, int) for v in size):
        raise ValueError(f"input_size must be (C, H, W) or (N, C, H, W) integers, "
                         f"got {input_size!r}")
    if min(size) < 1:
        raise ValueError(f"input_size must be positive, got {'x'.join(map(str, size))}")
    if len(size) == 4:
        if batch_size is not None and batch_size != size[0]:
            raise ValueError(f"input_size {size} is batch-first with batch {size[0]}, "
                             f"but batch_size is {batch_size}; give one of them")
        batch_size, size = size[0], size[1:]
    batch_size = 1 if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return (batch_size, *size)  # type: ignore[return-value]


def _first_shape(args: Any) -> tuple[int, ...] | None:
    first = next((a for a in _flatten(list(args)) if isinstance(a, torch.Tensor)), None)
    return None if first is None else tuple(first.shape)


def _pair(module: nn.Module, attr: str) -> tuple[int, ...] | None:
    """A conv's or pool's kernel_size/stride as a tuple (pools store a bare int; a max pool's
    stride defaults to its kernel size)."""
    value = getattr(module, attr, None)
    if isinstance(value, int):
        value = (value, value)
    if not isinstance(value, tuple) or not all(isinstance(v, int) for v in value):
        return None
    return value


def _default_input(model: nn.Module) -> tuple[int, int, int]:
    """A model's own input size: its registry entry's (channels as built), else an error."""
    from cnnlab.registry import list_models, model_info

    name = getattr(model, "model_name", None)
    if name not in list_models():
        raise ValueError(f"{name or type(model).__name__} is not a registered model: "
                         f"give input_size, e.g. (3, 224, 224)")
    _, h, w = model_info(name).input_size
    return getattr(model, "in_chans", model_info(name).input_size[0]), h, w


def _meta_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Meta copies of every parameter and buffer, floating ones cast to ``dtype``."""
    state = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + list(
            model.named_buffers(remove_duplicate=False)):
        new_dtype = dtype if t.is_floating_point() else t.dtype
        meta = torch.empty_like(t, device="meta", dtype=new_dtype)
        state[name] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return state


class _Run(nn.Module):
    """Runs the model's own forward, keeping what ``forward_features`` returns (an instance
    attribute wraps the method for the duration of the call)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.features: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> Any:
        original = getattr(self.model, "forward_features", None)
        if not callable(original):
            return self.model(x)

        def keep(inp: torch.Tensor) -> torch.Tensor:
            self.features = original(inp)
            return self.features

        self.model.forward_features = keep  # type: ignore[method-assign,assignment]
        try:
            return self.model(x)
        finally:
            del self.model.forward_features


def summarize(
    model_or_name: nn.Module | str,
    input_size: tuple[int, ...] | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    depth: int | None = None,
) -> Summary:
    """Analyse a registered model (by name) or any ``nn.Module`` at ``input_size``.

    ``input_size`` is (C, H, W), or batch-first (N, C, H, W) as torchinfo takes it; by
    default a registered model's own (``model_info(name).input_size``; a module from
    ``create_model`` keeps the channels it was built with). ``batch_size`` defaults to 1.
    Nothing is computed and no activation memory is allocated: the forward runs on meta
    tensors. A user model's own tensors are not touched (meta copies stand in for them).
    ``depth`` groups the rows by module path (``depth=1``: ``features``, ``classifier``).
    """
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if isinstance(model_or_name, str):
        from cnnlab.registry import create_model

        with torch.device("meta"):
            model = create_model(model_or_name)
    else:
        model = model_or_name
    name = getattr(model, "model_name", type(model).__name__)
    if input_size is None:
        input_size = _default_input(model)
    batch_size, c, h, w = _check_request(input_size, batch_size)

    tracer = _Tracer(batch_size, (h, w))
    try:
        x = torch.empty(batch_size, c, h, w, device="meta", dtype=dtype)
    except RuntimeError as exc:  # more bytes than an int64 counts, even on meta
        raise ValueError(f"{name}: input {batch_size}x{c}x{h}x{w} is too large: "
                         f"{str(exc).splitlines()[0]}") from None
    tracer.set_rf(x, input_rf())
    input_row = tracer.add_row(Row("input", "Input", "input"))
    tracer.owner[id(x)] = (x, input_row)
    tracer.producer[id(x)] = (x, input_row)
    tracer.finish_row(input_row, x)

    run = _Run(model)
    counted: set[int] = set()
    names = dict(model.named_modules(remove_duplicate=False))
    called: dict[int, int] = {}
    module_outputs: dict[str, tuple[tuple[int, ...], ReceptiveField | None]] = {}

    # Parameters by owning module, taken before functional_call swaps in meta copies;
    # a tensor shared by several modules is counted once, at its first use.
    own_params = {
        mod_name: [(id(p), p.numel(), p.requires_grad) for p in module.parameters(recurse=False)]
        for mod_name, module in names.items()
    }

    def count(row: Row, params: list[tuple[int, int, bool]]) -> None:
        for pid, numel, trainable in params:
            counted.add(pid)
            if trainable:
                row.params_trainable += numel
            else:
                row.params_frozen += numel

    def pre_hook(mod_name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: Any) -> None:
            own = [p for p in own_params[mod_name] if p[0] not in counted]
            is_leaf = next(module.children(), None) is None
            row = None
            if is_leaf or own:
                n = called[id(module)] = called.get(id(module), 0) + 1
                label = mod_name if n == 1 else f"{mod_name} (call {n})"
                row = tracer.add_row(
                    Row(label, type(module).__name__, "layer" if is_leaf else "params",
                        input_shape=_first_shape(args), kernel_size=_pair(module, "kernel_size"),
                        stride=_pair(module, "stride")))
                count(row, own)
            tracer.stack.append(_Frame(mod_name, row if is_leaf else None))
            first = next((a for a in _flatten(list(args)) if isinstance(a, torch.Tensor)), None)
            rf_in = None if first is None else tracer.rf_of(first)
            tracer.module_rules.append(
                module_rf_rule(module, rf_in) if isinstance(rf_in, TensorRF) else None)

        return hook

    def post_hook(mod_name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, _args: Any, out: Any) -> None:
            frame = tracer.stack.pop()
            t = out[0] if isinstance(out, (tuple, list)) and out else out
            ruled = tracer.module_rules.pop()
            if ruled is not None and isinstance(t, torch.Tensor):
                tracer.set_rf(t, ruled)
            if frame.row is not None:
                tracer.finish_row(frame.row, out)
            if isinstance(t, torch.Tensor):
                module_outputs[mod_name] = (tuple(t.shape), tracer.public_rf(t))

        return hook

    handles = []
    for mod_name, module in names.items():
        if mod_name == "":
            continue  # the root is run through _Run, outside the hooks
        handles.append(module.register_forward_pre_hook(pre_hook(mod_name)))
        handles.append(module.register_forward_hook(post_hook(mod_name)))
    was_training = model.training
    model.eval()
    state = {f"model.{k}": v for k, v in _meta_state(model, dtype).items()}
    try:
        with torch.no_grad(), tracer:
            torch.func.functional_call(run, state, (x,), strict=False)
    except RuntimeError as exc:
        where = tracer.stack[-1].name if tracer.stack else "the model"
        reason = str(exc).splitlines()[0]
        if "overflow" in reason:
            raise ValueError(f"{name}: input {c}x{h}x{w} is too large at layer {where!r}: "
                             f"{reason}") from None
        if "too small" in reason or "size" in reason.lower():
            raise ValueError(
                f"{name}: input {c}x{h}x{w} is too small or the wrong shape at layer "
                f"{where!r}: {reason}"
            ) from None
        raise ValueError(f"{name}: forward failed at layer {where!r}: {reason}") from None
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    # Modules whose parameters the forward never used (e.g. GoogLeNet's auxiliary heads
    # in eval mode) still count towards the parameters.
    for mod_name, module in names.items():
        own = [p for p in own_params[mod_name] if p[0] not in counted]
        if own:
            count(tracer.add_row(Row(mod_name, type(module).__name__, "unused",
                                     notes=["not run by the forward"])), own)

    # The map before the head: what forward_features returned, else (a forward that does
    # not call it) the last stage's output, else the last spatial map of the forward.
    stages = list(getattr(model, "feature_info", []))
    if run.features is not None:
        features_rf = tracer.public_rf(run.features)
    elif stages and stages[-1]["module"] in module_outputs:
        features_rf = module_outputs[stages[-1]["module"]][1]
    else:
        features_rf = tracer.last_spatial
    layers = tracer.rows
    summary = Summary(
        model=name, input_size=(c, h, w), batch_size=batch_size, dtype=dtype,
        rows=layers, layers=layers, receptive_field=features_rf,
        module_outputs=module_outputs, stages=stages,
        unaccounted=tracer.unaccounted, depth=depth,
        module_types={n: type(m).__name__ for n, m in names.items()},
    )
    if depth is not None:
        summary.rows = group_rows(summary, depth, summary.module_types)
    return summary


def group_rows(summary: Summary, depth: int, types: dict[str, str]) -> list[Row]:
    """Sum the leaf rows into blocks named by the first ``depth`` parts of their path."""
    grouped: list[Row] = []
    by_name: dict[str, Row] = {}
    for row in summary.layers:
        parts = row.name.split(" ")[0].split(".")
        if row.kind == "input" or len(parts) <= depth:
            grouped.append(row)
            continue
        key = ".".join(parts[:depth])
        block = by_name.get(key)
        if block is None:
            block = by_name[key] = Row(key, types.get(key, "?"), "block")
            grouped.append(block)
        _add_to_block(block, row, summary.module_outputs.get(key))
    return grouped


def _add_to_block(block: Row, row: Row, shape_rf: Any) -> None:
    if block.input_shape is None:
        block.input_shape = row.input_shape
    block.params_trainable += row.params_trainable
    block.params_frozen += row.params_frozen
    block.flops += row.flops
    block.other_ops += row.other_ops
    block.activation_values += row.activation_values
    block.activation_bytes += row.activation_bytes
    block.notes += [n for n in row.notes if n not in block.notes and "in-place" not in n]
    if shape_rf is not None:
        block.output_shape, block.receptive_field = shape_rf
    elif row.output_shape is not None:
        block.output_shape, block.receptive_field = row.output_shape, row.receptive_field


def tree_rows(summary: Summary) -> list[tuple[int, Row]]:
    """The rows as a tree of modules, as (level, row) in order of first use.

    A module shallower than ``summary.depth`` with children is a ``"module"`` row with no
    counts of its own (its children carry them, so every column still adds up); at
    ``depth`` a module is one block row with its subtree's sums; leaves are themselves.
    """
    out: list[tuple[int, Row]] = []
    nodes: dict[str, Row] = {}
    for row in summary.layers:
        path = row.name.split(" ")[0]
        parts = [row.name] if row.kind == "input" else path.split(".")
        limit = len(parts) if summary.depth is None else min(len(parts), summary.depth)
        for level in range(1, limit):  # the enclosing modules, once each
            key = ".".join(parts[:level])
            if key not in nodes:
                shape = summary.module_outputs.get(key, (None, None))
                nodes[key] = Row(key, summary.module_types.get(key, "?"), "module",
                                 output_shape=shape[0], receptive_field=shape[1])
                out.append((level - 1, nodes[key]))
        if limit == len(parts):  # a copy: a deeper row may later add to it
            leaf = dataclasses.replace(row, notes=list(row.notes))
            nodes.setdefault(path, leaf)
            out.append((limit - 1, leaf))
            continue
        key = ".".join(parts[:limit])
        block = nodes.get(key)
        if block is None:
            block = nodes[key] = Row(key, summary.module_types.get(key, "?"), "block")
            out.append((limit - 1, block))
        _add_to_block(block, row, summary.module_outputs.get(key))
    return out
