"""Receptive field of every tensor, propagated op by op through any graph.

Each tensor derived from the input carries, per image axis (H, W), the input interval
``[lo, hi]`` seen by its *first* unit and the ``jump`` between neighbouring units
(Araujo et al., "Computing receptive fields of convolutional neural networks", Distill
2019). A convolution or pooling window (K, S, P, D) maps it to
``lo - P·j``, ``hi + ((K-1)·D - P)·j``, ``j·S``; an op that joins several tensors
(residual add, concatenation, SE gate multiply) takes the union of their intervals, i.e.
the maximum over incoming paths; a global reduction (adaptive pool to 1, mean over H, W,
flatten before a linear layer) unions every unit along the axis, and a normalisation by
statistics over the map (group/layer/instance norm) adds that union to every unit, while a
norm over the channels of each position (ConvNeXt's LayerNorm) adds nothing. The map may
also sit channels-last (N x H x W x C, after a permute) or with its positions folded into the
rows of a matrix ((N·H·W) x C, for a linear layer applied at every position); both are
followed, so a per-position linear layer keeps the field. An op with no rule here raises
:class:`NoRule` so the caller can report it rather than guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from cnnlab.analysis.ops import is_elementwise

aten = torch.ops.aten

__all__ = ["Axis", "NoRule", "ReceptiveField", "TensorRF", "input_rf", "propagate"]


class NoRule(Exception):
    """An op takes a tensor derived from the input but has no receptive-field rule."""


@dataclass(frozen=True)
class Axis:
    """``[lo, hi]``: what the first unit sees (unit i sees it shifted by i·jump);
    ``[clo, chi]``: a part every unit sees alike, from a broadcast input such as an SE gate
    (empty when clo > chi)."""

    lo: float
    hi: float
    jump: float
    clo: float = math.inf
    chi: float = -math.inf

    def window(self, k: int, s: int, p: int, d: int = 1) -> Axis:
        return Axis(self.lo - p * self.jump, self.hi + ((k - 1) * d - p) * self.jump,
                    self.jump * s, self.clo, self.chi)

    def shift(self, units: float) -> Axis:
        return Axis(self.lo + units * self.jump, self.hi + units * self.jump, self.jump,
                    self.clo, self.chi)

    def collapse(self, units: int) -> Axis:
        """One unit that sees what all ``units`` units along this axis see."""
        return Axis(min(self.lo, self.clo), max(self.hi + (units - 1) * self.jump, self.chi),
                    self.jump * units)

    def whole(self) -> tuple[float, float]:
        """What unit 0 sees, the shared part included."""
        return min(self.lo, self.clo), max(self.hi, self.chi)


@dataclass(frozen=True)
class TensorRF:
    """``axes``: (H, W) intervals; ``spatial``: the tensor holds that map, in the dims ``hw``
    counted from the end: (-2, -1) for N x C x H x W, (-3, -2) channels-last. ``rows``: the
    map's (H, W) sizes when its positions are folded into the single dim ``hw[0] == hw[1]``
    (the (N·H·W) x C matrix of a per-position linear layer)."""

    axes: tuple[Axis, Axis]
    spatial: bool
    hw: tuple[int, int] = (-2, -1)
    rows: tuple[int, int] | None = None

    @property
    def channels_first(self) -> bool:
        return self.hw == (-2, -1) and self.rows is None

    def dims(self, ndim: int) -> tuple[int, int]:
        """The (non-negative) dims of H and W in a tensor of ``ndim`` dims."""
        return self.hw[0] % ndim, self.hw[1] % ndim

    def map_size(self, shape: Sequence[int]) -> tuple[int, int] | None:
        """Units along H and W in a tensor of ``shape`` (None: it is too small to hold them)."""
        if len(shape) < -min(self.hw):
            return None
        return self.rows if self.rows is not None else (shape[self.hw[0]], shape[self.hw[1]])


def input_rf() -> TensorRF:
    return TensorRF((Axis(0, 0, 1), Axis(0, 0, 1)), True)


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of a layer's output w.r.t. the model input, per axis (H, W).

    ``size``: input pixels one unit sees (unclipped by the image border, the usual
    convention); ``jump``: input pixels between neighbouring units; ``start``: input
    coordinate of the first unit's centre; ``covers_input``: every unit sees the whole
    input ("global"). ``local_size``: the conventional field of the conv/pool chain alone,
    without what a broadcast input (an SE gate's global average) adds to every unit; equal to
    ``size`` in a net without such gates. ``size``, ``local_size``, ``jump`` and ``start`` are
    numbers when both axes agree and (H, W) pairs otherwise.
    """

    sizes: tuple[float, float]
    jumps: tuple[float, float]
    starts: tuple[float, float]
    covers_input: bool
    local_sizes: tuple[float, float] | None = None  # None: equal to sizes

    @staticmethod
    def _one(pair: tuple[float, float]) -> Any:
        clean = tuple(int(v) if float(v).is_integer() else v for v in pair)
        return clean[0] if clean[0] == clean[1] else clean

    @property
    def size(self) -> Any:
        return self._one(self.sizes)

    @property
    def local_size(self) -> Any:
        return self._one(self.sizes if self.local_sizes is None else self.local_sizes)

    @property
    def jump(self) -> Any:
        return self._one(self.jumps)

    @property
    def start(self) -> Any:
        return self._one(self.starts)

    @classmethod
    def of(cls, rf: TensorRF, shape: Sequence[int], input_hw: Sequence[int]) -> ReceptiveField:
        units = (rf.map_size(shape) if rf.spatial else None) or (1, 1)
        # Unit i sees [lo + i·jump, hi + i·jump] plus the shared part: the last unit is the
        # one furthest from the input's start, the first the one furthest from its end.
        covers = all(
            min(a.lo + (u - 1) * a.jump, a.clo) <= 0 and max(a.hi, a.chi) >= n - 1
            for a, u, n in zip(rf.axes, units, input_hw, strict=True)
        )
        spans = [a.whole() for a in rf.axes]
        return cls(
            sizes=tuple(hi - lo + 1 for lo, hi in spans),  # type: ignore[arg-type]
            jumps=tuple(a.jump for a in rf.axes),  # type: ignore[arg-type]
            starts=tuple((lo + hi) / 2 for lo, hi in spans),  # type: ignore[arg-type]
            covers_input=covers,
            local_sizes=tuple(a.hi - a.lo + 1 for a in rf.axes),  # type: ignore[arg-type]
        )


def _union(known: Sequence[tuple[torch.Tensor, TensorRF]], out_shape: Sequence[int],
           spatial: bool) -> TensorRF:
    """The maximum over incoming paths. An input broadcast over the map (an SE gate of
    shape N x C x 1 x 1 times an N x C x H x W map) adds what it sees to *every* unit."""
    aligned: list[TensorRF] = []
    broadcast: list[TensorRF] = []
    for t, r in known:
        is_broadcast = (spatial and r.spatial and t.dim() >= 2
                        and r.map_size(t.shape) != r.map_size(out_shape))
        (broadcast if is_broadcast else aligned).append(r)
    if not aligned:
        aligned, broadcast = broadcast, []
    axes = []
    for i in range(2):
        group = [r.axes[i] for r in aligned]
        shared = [r.axes[i].whole() for r in broadcast] + [(a.clo, a.chi) for a in group]
        axes.append(Axis(
            min(a.lo for a in group), max(a.hi for a in group), max(a.jump for a in group),
            min(lo for lo, _ in shared), max(hi for _, hi in shared),
        ))
    layout = next((r for r in aligned if r.spatial), None)
    if not spatial or layout is None:
        return TensorRF(tuple(axes), spatial)  # type: ignore[arg-type]
    return TensorRF(tuple(axes), True, layout.hw, layout.rows)  # type: ignore[arg-type]


def _pair(v: Any, default: int) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return default, default
    if isinstance(v, int):
        return v, v
    v = list(v)
    return (v[-2], v[-1]) if len(v) >= 2 else (v[0], v[0])


def _window(rf: TensorRF, k: Any, s: Any, p: Any, d: Any = 1) -> TensorRF:
    kh, kw = _pair(k, 1)
    sh, sw = _pair(s, 0)
    sh, sw = (sh or kh), (sw or kw)  # an empty stride means "= kernel" (pooling)
    ph, pw = _pair(p, 0)
    dh, dw = _pair(d, 1)
    h, w = rf.axes
    return TensorRF((h.window(kh, sh, ph, dh), w.window(kw, sw, pw, dw)), True)


def _adaptive(rf: TensorRF, in_hw: Sequence[int], out_hw: Sequence[int]) -> TensorRF:
    """Adaptive pooling: bin i spans [floor(i·n/o), ceil((i+1)·n/o)); the widest bin is
    taken (bins differ by one pixel when n is not a multiple of o) and the jump is n/o."""
    axes = []
    for a, n, o in zip(rf.axes, in_hw, out_hw, strict=True):
        widest = max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o))
        axes.append(Axis(a.lo, a.hi + (widest - 1) * a.jump, a.jump * n / o, a.clo, a.chi))
    return TensorRF(tuple(axes), True)  # type: ignore[arg-type]


def _collapse(rf: TensorRF, shape: Sequence[int], dims: Sequence[int], keeps: bool) -> TensorRF:
    """Reduce over ``dims`` of a tensor of ``shape``; H and W are the dims ``rf.hw``."""
    if not rf.spatial:
        return rf
    nd = len(shape)
    reduced = {d % nd for d in dims}
    h, w = rf.dims(nd)
    units = rf.map_size(shape)
    axes = list(rf.axes)
    for i, dim in ((0, h), (1, w)):
        if dim in reduced:
            axes[i] = axes[i].collapse(units[i])
    if not reduced & {h, w}:  # the map survives; dims dropped after it shift its place
        after = 0 if keeps else len([d for d in reduced if d > w])
        return replace(rf, axes=tuple(axes), hw=(rf.hw[0] + after, rf.hw[1] + after))
    if keeps and rf.rows is None:
        return replace(rf, axes=tuple(axes))
    return TensorRF(tuple(axes), False)  # type: ignore[arg-type]


# Ops that leave the map where it is: elementwise functions, normalisation over channels,
# dropout, copies. Any op tagged pointwise is also in this group.
_PASS = {
    aten.native_batch_norm, aten._native_batch_norm_legit,
    aten._native_batch_norm_legit_no_training,
    aten.cudnn_batch_norm, aten.native_dropout, aten.bernoulli, aten.clone, aten.contiguous,
    aten._to_copy, aten.detach, aten.alias, aten.lift_fresh, aten.softmax, aten._softmax,
    aten._log_softmax, aten.log_softmax, aten.channel_shuffle, aten.hardtanh_, aten.hardtanh,
    aten.dropout,
}
_BATCH_NORM = {aten.native_batch_norm, aten._native_batch_norm_legit, aten.cudnn_batch_norm}
_FACTORY = {aten.new_zeros, aten.new_ones, aten.new_full, aten.new_empty, aten.zeros_like,
            aten.ones_like, aten.empty_like, aten.full_like}
_MATMUL = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.matmul, aten.linear}
_WINDOW = {
    aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d, aten.max_pool3d_with_indices,
    aten.avg_pool3d, aten.max_pool3d,
}
_ADAPTIVE = {aten._adaptive_avg_pool2d, aten.adaptive_avg_pool2d, aten.adaptive_max_pool2d}
_REDUCE = {aten.mean, aten.sum, aten.amax, aten.amin, aten.max, aten.min, aten.var, aten.std}
# Ops on the last two dims of an N x C x H x W map: no rule for a channels-last one.
_CHANNELS_FIRST = {aten.convolution, aten._convolution, aten.constant_pad_nd,
                   aten.native_group_norm, *_WINDOW, *_ADAPTIVE, *_BATCH_NORM}
_RESHAPE = {aten.view, aten._unsafe_view, aten.reshape, aten.flatten, aten.unsqueeze, aten.squeeze,
            aten.expand}
_SPLIT = {aten.split, aten.split_with_sizes, aten.chunk, aten.unbind, aten.slice, aten.select,
          aten.narrow}


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


def propagate(
    func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any,
    rf_of: Callable[[torch.Tensor], TensorRF | None],
) -> TensorRF | None:
    """The receptive field of ``out`` (every tensor output shares it), or None when no
    input carries one. Raises NoRule for an op that touches the input's descendants but
    has no rule."""
    tensors = [a for a in _flat(args) + _flat(list(kwargs.values())) if isinstance(a, torch.Tensor)]
    known = [(t, r) for t in tensors if (r := rf_of(t)) is not None]
    if not known:
        return None
    packet = func._overloadpacket
    first_t, first = known[0]
    outs = [o for o in _flat([out]) if isinstance(o, torch.Tensor)]
    out_shape = _shape(outs[0]) if outs else ()
    out_spatial = any(r.spatial and len(out_shape) >= (2 if r.rows else 3) for _, r in known)

    if packet in _CHANNELS_FIRST and first.spatial and not first.channels_first:
        raise NoRule(f"{packet.__name__} of a channels-last or folded map")
    if packet in (aten.convolution, aten._convolution):
        if args[6]:  # transposed: the field grows *and* the jump shrinks; not modelled
            raise NoRule("transposed convolution")
        if first_t.dim() != 4:
            raise NoRule(f"{first_t.dim() - 2}-D convolution")
        return _window(first, args[1].shape[-2:], args[3], args[4], args[5])
    if packet in _WINDOW:
        k = args[1]
        s = args[2] if len(args) > 2 else kwargs.get("stride")
        p = args[3] if len(args) > 3 else kwargs.get("padding", 0)
        d = args[4] if len(args) > 4 and packet not in (aten.avg_pool2d, aten.avg_pool3d) else 1
        return _window(first, k, s, p, d)
    if packet in _ADAPTIVE:
        return _adaptive(first, _shape(first_t)[-2:], out_shape[-2:])
    if packet is aten.constant_pad_nd:
        pad = list(args[1]) + [0, 0, 0, 0]
        left, top = pad[0], pad[2]
        h, w = first.axes
        return TensorRF((h.shift(-top), w.shift(-left)), first.spatial)
    if packet in _REDUCE:
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None or isinstance(dims, (list, tuple)) and len(dims) == 0:
            dims = range(first_t.dim())  # a full reduction
        dims = dims if isinstance(dims, (list, tuple, range)) else [dims]
        keep = args[2] if len(args) > 2 and isinstance(args[2], bool) else kwargs.get(
            "keepdim", False)
        return _collapse(first, _shape(first_t), dims, bool(keep))
    if packet in _RESHAPE or packet in (aten.t, aten.transpose, aten.permute):
        return _reshape(first, _shape(first_t), out_shape, packet, args)
    if packet in _SPLIT:
        return _split(first, first_t, packet, args, kwargs)
    if packet in (aten.cat, aten.stack):
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        nd = len(out_shape)
        if out_spatial and packet is aten.cat and dim % nd in first.dims(nd):
            raise NoRule("concatenation along H or W")
        return _union(known, out_shape, out_spatial)
    if packet in _MATMUL:
        per_position = _per_position_product(packet, args, rf_of)
        if per_position is not None:
            return per_position
        if any(r.spatial for _, r in known):
            raise NoRule("matrix product of a spatial map")
        return _union(known, out_shape, False)
    if packet in _BATCH_NORM and _uses_batch_stats(func, args, kwargs):
        # training-mode BN, InstanceNorm, BN without running stats: statistics over the map
        return _whole_map(first, _shape(first_t), axes=(0, 1))
    if packet is aten.native_group_norm:  # statistics over the whole map of each group
        return _whole_map(first, _shape(first_t), axes=(0, 1))
    if packet is aten.native_layer_norm:  # statistics over the last len(normalized_shape) dims
        nd = first_t.dim()
        normalised = range(nd - len(args[1]), nd)
        if not first.spatial:
            return first
        axes = tuple(i for i, d in enumerate(first.dims(nd)) if d in normalised)
        if axes and first.rows is not None:
            raise NoRule("layer norm over a folded map")
        # over the channels of each position only (channels-last): the field is unchanged
        return _whole_map(first, _shape(first_t), axes=axes)
    if packet is aten.gather and rf_of(args[2]) is not None:
        # Positions computed from the input (deformable convolution's sampling): unbounded
        # offsets can reach any pixel, so the only static bound is the whole input.
        raise NoRule("input-dependent sampling positions (deformable convolution); "
                     "static bound: the whole input")
    if packet in _FACTORY:
        return None  # a new tensor of zeros/ones: it depends on no input position
    if packet in _PASS or is_elementwise(func) or packet is aten.copy_:
        return _union(known, out_shape, out_spatial)
    raise NoRule("no receptive-field rule")


def _per_position_product(packet: Any, args: Sequence[Any],
                          rf_of: Callable[[torch.Tensor], TensorRF | None]) -> TensorRF | None:
    """A linear layer at every position: ``x @ W`` (mm, addmm, linear) where only ``x``
    derives from the input and its map is not in the contracted (last) dim, e.g. the
    (N·H·W) x C rows of a channels-last map. Each output row then sees what its row saw."""
    if packet is aten.addmm:  # addmm(bias, x, W)
        x, weights = args[1], (args[0], args[2])
    elif packet in (aten.mm, aten.linear):  # mm(x, W), linear(x, W, bias)
        x, weights = args[0], tuple(args[1:3])
    else:
        return None
    rf = rf_of(x)
    if rf is None or not rf.spatial or -1 in rf.hw:
        return None
    if any(isinstance(t, torch.Tensor) and rf_of(t) is not None for t in weights):
        return None  # the weights depend on the input too (attention): not this rule
    return rf


def _uses_batch_stats(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """Whether a batch-norm op normalises with the input's own statistics (``training``)."""
    names = [a.name for a in func._schema.arguments]
    if "training" not in names:
        return False  # _native_batch_norm_legit_no_training: running statistics
    i = names.index("training")
    return bool(args[i] if len(args) > i else kwargs.get("training", False))


def _whole_map(rf: TensorRF, shape: Sequence[int], axes: Sequence[int]) -> TensorRF:
    """Per-sample statistics over the map (group and layer norm): along each of ``axes``
    (0 = H, 1 = W) every unit also sees what all units see, like a broadcast SE gate."""
    if not rf.spatial:
        return rf
    units = rf.map_size(shape)
    new = list(rf.axes)
    for i in axes:
        a = rf.axes[i]
        whole = a.collapse(units[i])
        new[i] = Axis(a.lo, a.hi, a.jump, whole.lo, whole.hi)
    return replace(rf, axes=tuple(new))


def _reshape(rf: TensorRF, in_shape: Sequence[int], out_shape: Sequence[int],
             packet: Any, args: Sequence[Any]) -> TensorRF:
    if not rf.spatial:
        return rf
    nd, out_nd = len(in_shape), len(out_shape)
    h, w = rf.dims(nd)
    if packet in (aten.transpose, aten.permute, aten.t):
        order = list(range(nd))  # order[i]: the input dim that becomes dim i
        if packet is aten.permute:
            order = [d % nd for d in args[1]]
        elif nd >= 2:
            i, j = (args[1] % nd, args[2] % nd) if packet is aten.transpose else (0, 1)
            order[i], order[j] = order[j], order[i]
        new_h, new_w = order.index(h), order.index(w)
        if rf.rows is None and new_h >= new_w:
            raise NoRule("transposing H or W")
        return replace(rf, hw=(new_h - nd, new_w - nd))
    if rf.channels_first and out_nd >= 3 and tuple(out_shape[-2:]) == tuple(in_shape[-2:]):
        return rf
    if rf.rows is None:
        new_h, new_w = _kept_dim(in_shape, h, out_shape, 0), _kept_dim(in_shape, w, out_shape, -1)
        if new_h is not None and new_w is not None and new_h < new_w:
            return replace(rf, hw=(new_h - out_nd, new_w - out_nd))
        # H and W merged (with the batch) into one dim followed by the channels: the rows
        # of a per-position linear layer's matrix
        fold = _merged_dim(in_shape, h, w, out_shape) if w == h + 1 else None
        if fold is not None and fold < out_nd - 1:
            return replace(rf, hw=(fold - out_nd,) * 2, rows=(in_shape[h], in_shape[w]))
        # The map is folded into other dims (flatten before a linear layer): one unit of the
        # result may depend on any position, so take the union over the whole map.
        return _collapse(rf, in_shape, (h, w), keeps=False)
    kept = _kept_dim(in_shape, h, out_shape, 0)
    if kept is not None:
        return replace(rf, hw=(kept - out_nd,) * 2)
    for i in range(out_nd - 1):  # the rows unfolded into H and W again
        if ((out_shape[i], out_shape[i + 1]) == rf.rows
                and math.prod(out_shape[i + 2:]) == math.prod(in_shape[h + 1:])
                and math.prod(out_shape[:i + 2]) == math.prod(in_shape[:h + 1])):
            return replace(rf, hw=(i - out_nd, i + 1 - out_nd), rows=None)
    raise NoRule("reshaping a map folded into rows")


def _kept_dim(in_shape: Sequence[int], dim: int, out_shape: Sequence[int],
              pick: int) -> int | None:
    """The dim of ``out_shape`` that a reshape leaves ``dim`` of ``in_shape`` as: the same
    size with the same numbers of elements before and after it (``pick`` 0 / -1: the first
    or last candidate, which differ only by size-1 dims)."""
    before, after = math.prod(in_shape[:dim]), math.prod(in_shape[dim + 1:])
    found = [j for j in range(len(out_shape)) if out_shape[j] == in_shape[dim]
             and math.prod(out_shape[:j]) == before and math.prod(out_shape[j + 1:]) == after]
    return found[pick] if found else None


def _merged_dim(in_shape: Sequence[int], h: int, w: int, out_shape: Sequence[int]) -> int | None:
    """The dim of ``out_shape`` holding the adjacent dims h, w of ``in_shape`` merged with
    the dims before them (nothing after them changed), or None."""
    after = math.prod(in_shape[w + 1:])
    for j in range(len(out_shape)):
        if (math.prod(out_shape[j + 1:]) == after
                and math.prod(out_shape[:j + 1]) == math.prod(in_shape[:w + 1])
                and out_shape[j] % (in_shape[h] * in_shape[w]) == 0):
            return j
    return None


def _split(rf: TensorRF, t: torch.Tensor, packet: Any, args: Sequence[Any],
           kwargs: dict[str, Any]) -> TensorRF:
    if packet in (aten.split, aten.split_with_sizes, aten.chunk):
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    else:  # unbind, slice, select, narrow take the dim second
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    nd = t.dim()
    h, w = rf.dims(nd) if rf.spatial else (nd, nd)
    if not rf.spatial or dim % nd not in (h, w):
        # a channel or batch split leaves the map; selecting a dim after it shifts its place
        removes = packet in (aten.select, aten.unbind) and dim % nd > w
        return replace(rf, hw=(rf.hw[0] + 1, rf.hw[1] + 1)) if removes else rf
    if rf.rows is not None:
        raise NoRule("splitting a map folded into rows")
    if packet is aten.slice:
        # x[..., start::step] (e.g. the option-A shortcut's x[:, :, ::2, ::2]): unit i of
        # the result is unit start + i·step of the input.
        size = t.shape[dim]
        start = args[2] if len(args) > 2 and args[2] is not None else 0
        start = min(max(start + size if start < 0 else start, 0), size)
        step = args[4] if len(args) > 4 else 1
        axes = list(rf.axes)
        i = 0 if dim % nd == h else 1
        a = axes[i].shift(start)
        axes[i] = Axis(a.lo, a.hi, a.jump * step, a.clo, a.chi)
        return replace(rf, axes=tuple(axes))
    raise NoRule("splitting or indexing along H or W")


def _flat(items: Sequence[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            flat.extend(_flat(item))
        else:
            flat.append(item)
    return flat
