"""Receptive field of every tensor, propagated op by op through any graph.

Each tensor derived from the input carries, per image axis (H, W), the input interval
``[lo, hi]`` seen by its *first* unit and the ``jump`` between neighbouring units
(Araujo et al., "Computing receptive fields of convolutional neural networks", Distill
2019). A convolution or pooling window (K, S, P, D) maps it to
``lo - P·j``, ``hi + ((K-1)·D - P)·j``, ``j·S``; an op that joins several tensors
(residual add, concatenation, SE gate multiply) takes the union of their intervals, i.e.
the maximum over incoming paths; a global reduction (adaptive pool to 1, mean over H, W,
flatten before a linear layer) unions every unit along the axis, and a normalisation by
statistics over the map (group/layer/instance norm) adds that union to every unit. An op
with no rule here raises :class:`NoRule` so the caller can report it rather than guess.

Token sequences (Vision Transformers): flattening a map's H, W into one dim makes a sequence
of patch tokens (:class:`Tokens`: which dim holds them, on what grid, after how many extra
tokens such as a class token), followed through views, transposes, concatenation and
per-token ops (linear layers, LayerNorm over the width). An op that mixes tokens (a matmul
over the token dim or of two token tensors, as in attention's Q·Kᵀ and A·V; a softmax,
norm or reduction over tokens) gives every token what all tokens see, so after the first
global attention every unit sees the whole input; before it a token sees its patch.

Channels-last maps (B, H, W, C), as ConvNeXt's and Swin's blocks hold them after a permute,
are followed through per-position ops and a LayerNorm over C; modules whose inner ops these
rules cannot follow have rules of their own (:func:`module_rule`: ``nn.Linear`` on such a map,
Swin's window attention and patch merging).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cnnlab.analysis.ops import is_elementwise

aten = torch.ops.aten

__all__ = ["Axis", "NoRule", "ReceptiveField", "TensorRF", "Tokens", "input_rf", "propagate"]


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
class Tokens:
    """A sequence of patch tokens: along tensor dim ``dim``, index i is token
    ``(i // stride) % count`` (``stride`` > 1 where the tokens were merged with an outer dim,
    as a linear layer's matmul does); the first ``prefix`` tokens (a class token) hold no
    patch, and token ``prefix + r·w + c`` is patch (r, c) of the (h, w) ``grid``. ``mixed``:
    every token has seen every token (after a global attention)."""

    dim: int
    count: int
    grid: tuple[int, int]
    prefix: int = 0
    stride: int = 1
    mixed: bool = False


@dataclass(frozen=True)
class TensorRF:
    """``axes``: (H, W) intervals; ``spatial``: the tensor's last two dims are that map;
    ``tokens``: the tensor is a token sequence on a grid (then ``axes`` are patch 0's)."""

    axes: tuple[Axis, Axis]
    spatial: bool
    tokens: Tokens | None = None
    channels_last: bool = False  # a (B, H, W, C) map, as Swin's blocks hold it


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
        units = (rf.tokens.grid if rf.tokens is not None
                 else tuple(shape[-3:-1]) if rf.channels_last
                 else tuple(shape[-2:]) if rf.spatial and len(shape) >= 2 else (1, 1))
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
                        and tuple(t.shape[-2:]) != tuple(out_shape[-2:]))
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
    return TensorRF(tuple(axes), spatial)  # type: ignore[arg-type]


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
    """Reduce over ``dims`` of a tensor of ``shape``; H is dim -2, W is dim -1."""
    nd = len(shape)
    reduced = {d % nd for d in dims}
    axes = list(rf.axes)
    for i, dim in ((0, nd - 2), (1, nd - 1)):
        if rf.spatial and dim in reduced:
            axes[i] = axes[i].collapse(shape[dim])
    touched = rf.spatial and bool(reduced & {nd - 2, nd - 1})
    return TensorRF(tuple(axes), rf.spatial and (keeps or not touched))  # type: ignore[arg-type]


# Ops that leave the map where it is: elementwise functions, normalisation over channels,
# dropout, copies. Any op tagged pointwise is also in this group.
_PASS = {
    aten.native_batch_norm, aten._native_batch_norm_legit,
    aten._native_batch_norm_legit_no_training,
    aten.cudnn_batch_norm, aten.native_dropout, aten.bernoulli, aten.clone, aten.contiguous,
    aten._to_copy, aten.detach, aten.alias, aten.lift_fresh, aten.softmax, aten._softmax,
    aten._safe_softmax,
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
    out_spatial = len(out_shape) >= 3 and any(r.spatial for _, r in known)
    if any(r.tokens is not None for _, r in known):
        return _token_op(func, args, kwargs, known, out_shape)
    if any(r.channels_last for _, r in known):
        return _channels_last_op(func, args, known)
    if packet is aten.permute and first.spatial and first_t.dim() == 4 and (
            [d % 4 for d in args[1]] == [0, 2, 3, 1]):
        return TensorRF(first.axes, False, channels_last=True)  # (B, C, H, W) -> (B, H, W, C)

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
        if out_spatial and packet is aten.cat and dim % nd >= nd - 2:
            raise NoRule("concatenation along H or W")
        return _union(known, out_shape, out_spatial)
    if packet in _MATMUL:
        if any(r.spatial for _, r in known):
            raise NoRule("matrix product of a spatial map")
        return _union(known, out_shape, False)
    if packet in _BATCH_NORM and _uses_batch_stats(func, args, kwargs):
        # training-mode BN, InstanceNorm, BN without running stats: statistics over the map
        return _whole_map(first, _shape(first_t), axes=(0, 1))
    if packet is aten.native_group_norm:  # statistics over the whole map of each group
        return _whole_map(first, _shape(first_t), axes=(0, 1))
    if packet is aten.native_layer_norm:  # statistics over the last len(normalized_shape) dims
        normalised = len(args[1])
        return _whole_map(first, _shape(first_t), axes=tuple(i for i in (0, 1)
                                                             if normalised >= 2 - i))
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
    new = list(rf.axes)
    for i in axes:
        a = rf.axes[i]
        whole = a.collapse(shape[len(shape) - 2 + i])
        new[i] = Axis(a.lo, a.hi, a.jump, whole.lo, whole.hi)
    return TensorRF(tuple(new), True)  # type: ignore[arg-type]


def _reshape(rf: TensorRF, in_shape: Sequence[int], out_shape: Sequence[int],
             packet: Any, args: Sequence[Any]) -> TensorRF:
    if not rf.spatial:
        return rf
    nd = len(in_shape)
    if packet in (aten.transpose, aten.permute, aten.t):
        moved = ({args[1] % nd, args[2] % nd} if packet is aten.transpose
                 else {i for i, d in enumerate(args[1]) if i != d % nd} if packet is aten.permute
                 else {0, 1})
        if moved & {nd - 2, nd - 1}:
            raise NoRule("transposing H or W")
        return rf
    if len(out_shape) >= 3 and tuple(out_shape[-2:]) == tuple(in_shape[-2:]):
        return rf
    if (len(out_shape) == nd - 1 and tuple(out_shape[:-1]) == tuple(in_shape[:-2])
            and nd >= 3 and packet is not aten.expand):
        # (B, C, H, W) -> (B, C, H·W): the map becomes a sequence of patch tokens, row by row
        h, w = in_shape[-2:]
        return TensorRF(rf.axes, False, Tokens(nd - 2, h * w, (h, w)))
    # The map is folded into other dims (flatten before a linear layer): one unit of the
    # result may depend on any position, so take the union over the whole map.
    return _collapse(rf, in_shape, (-2, -1), keeps=False)


def _split(rf: TensorRF, t: torch.Tensor, packet: Any, args: Sequence[Any],
           kwargs: dict[str, Any]) -> TensorRF:
    if packet in (aten.split, aten.split_with_sizes, aten.chunk):
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    else:  # unbind, slice, select, narrow take the dim second
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    nd = t.dim()
    if not rf.spatial or dim % nd < nd - 2:
        return rf  # channel or batch split: the map is untouched
    if packet is aten.slice:
        # x[..., start::step] (e.g. the option-A shortcut's x[:, :, ::2, ::2]): unit i of
        # the result is unit start + i·step of the input.
        size = t.shape[dim]
        start = args[2] if len(args) > 2 and args[2] is not None else 0
        start = min(max(start + size if start < 0 else start, 0), size)
        step = args[4] if len(args) > 4 else 1
        axes = list(rf.axes)
        i = 0 if dim % nd == nd - 2 else 1
        a = axes[i].shift(start)
        axes[i] = Axis(a.lo, a.hi, a.jump * step, a.clo, a.chi)
        return TensorRF(tuple(axes), True)  # type: ignore[arg-type]
    raise NoRule("splitting or indexing along H or W")


# -- channels-last maps ------------------------------------------------------------------
def _channels_last_op(func: Any, args: Sequence[Any],
                      known: Sequence[tuple[torch.Tensor, TensorRF]]) -> TensorRF | None:
    """(B, H, W, C) maps: per-position ops, LayerNorm over C, and the permute back. Linear
    layers and window attention on them are module rules (:func:`module_rule`)."""
    packet = func._overloadpacket
    t, rf = next((t, r) for t, r in known if r.channels_last)
    if packet is aten.permute and t.dim() == 4 and [d % 4 for d in args[1]] == [0, 3, 1, 2]:
        return TensorRF(rf.axes, True)
    if packet is aten.native_layer_norm and len(args[1]) == 1:
        return rf  # over C alone (ConvNeXt's and Swin's norms): per position
    if packet is aten.native_layer_norm and len(args[1]) <= 3:
        # statistics over (W, C) or (H, W, C): every unit also sees the whole width/map
        spread = (1,) if len(args[1]) == 2 else (0, 1)
        as_bchw = (*t.shape[:-3], t.shape[-1], t.shape[-3], t.shape[-2])
        spread_axes = _whole_map(TensorRF(rf.axes, True), as_bchw, spread).axes
        return TensorRF(spread_axes, False, channels_last=True)
    if packet in _FACTORY:
        return None
    if packet in _PASS or is_elementwise(func) or packet is aten.copy_:
        if any(not r.channels_last for _, r in known):
            raise NoRule("combining a channels-last map with another layout")
        union = _union(known, (), False)
        return TensorRF(union.axes, False, channels_last=True)
    raise NoRule("no receptive-field rule for a channels-last (B, H, W, C) map")


def module_rule(module: torch.nn.Module, rf: TensorRF) -> TensorRF | None:
    """The receptive field of a module's output from its input's, for the modules whose
    inner ops the op-level rules cannot follow; None: follow the ops.

    - ``nn.Linear`` on a channels-last map acts on C alone: the field is unchanged.
    - Swin's window attention (Liu et al. 2021): a token attends to the M x M window that
      holds it (shifted or not), somewhere inside it, so the static bound is M - 1 tokens to
      each side: a (2M-1) x (2M-1), stride-1 window in token units. Exact for no unit; an
      upper bound that grows through the blocks, as the shifted windows connect neighbours.
    - Swin's patch merging: the 2 x 2 neighbourhood of each token, stride 2.
    """
    from cnnlab.models.swin import PatchMerging, WindowAttention  # the zoo imports analysis

    if isinstance(module, torch.nn.Linear):
        return rf if rf.channels_last else None
    if isinstance(module, WindowAttention) and rf.channels_last:
        m = module.window
        h, w = rf.axes
        return TensorRF((h.window(2 * m - 1, 1, m - 1), w.window(2 * m - 1, 1, m - 1)), False,
                        channels_last=True)
    if isinstance(module, PatchMerging) and rf.spatial:
        return _window(rf, 2, 2, 0)
    return None


# -- token sequences ---------------------------------------------------------------------
_SOFTMAXES = {aten.softmax, aten._softmax, aten._log_softmax, aten.log_softmax,
              aten._safe_softmax}
_TOKEN_PASS = (_PASS - _SOFTMAXES) | {aten.copy_}


def _token_op(func: Any, args: Sequence[Any], kwargs: dict[str, Any],
              known: Sequence[tuple[torch.Tensor, TensorRF]], out_shape: Sequence[int]
              ) -> TensorRF | None:
    """The rules for ops on token sequences (see the module docstring)."""
    packet = func._overloadpacket
    t, rf = next((t, r) for t, r in known if r.tokens is not None)
    tok = rf.tokens
    assert tok is not None
    nd = t.dim()
    if packet in _RESHAPE and packet is not aten.expand:
        return _token_view(rf, _shape(t), out_shape)
    if packet is aten.expand:
        return _moved(rf, tok.dim + len(out_shape) - nd)
    if packet in (aten.t, aten.transpose, aten.permute):
        if packet is aten.permute:
            order = [d % nd for d in args[1]]
        else:
            order = list(range(nd))
            a, b = (0, 1) if packet is aten.t else (args[1] % nd, args[2] % nd)
            order[a], order[b] = order[b], order[a]
        return _moved(rf, order.index(tok.dim))
    if packet in _SPLIT:
        dim = (args[2] if len(args) > 2 else kwargs.get("dim", 0)) if packet in (
            aten.split, aten.split_with_sizes, aten.chunk) else (
            args[1] if len(args) > 1 else kwargs.get("dim", 0))
        dim %= nd
        if dim != tok.dim:
            removes = packet in (aten.select, aten.unbind)
            return _moved(rf, tok.dim - 1 if removes and dim < tok.dim else tok.dim)
        if tok.mixed:  # every token sees the same: any of them is the whole field
            return _global(rf)
        start = args[2] if len(args) > 2 and args[2] is not None else 0
        end = args[3] if len(args) > 3 and args[3] is not None else tok.count
        step = args[4] if len(args) > 4 else 1
        # dropping the class token (x[:, 1:]) keeps the whole patch grid; other slices do not
        if (packet is aten.slice and tok.stride == 1 and start == tok.prefix and step == 1
                and end >= tok.count):
            return TensorRF(rf.axes, False, Tokens(tok.dim, tok.count - tok.prefix, tok.grid))
        raise NoRule("indexing a token sequence before its tokens are mixed")
    if packet is aten.cat:
        tensors = args[0]
        dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % nd
        if dim != tok.dim:
            return _token_union(known, tok)
        before = 0
        for other in tensors:
            if other is t:
                break
            before += other.shape[dim]
        extra = sum(o.shape[dim] for o in tensors) - t.shape[dim]
        if len(known) > 1 or tok.stride != 1 or before != extra:
            raise NoRule("concatenating token sequences other than a prefix (class token)")
        return TensorRF(rf.axes, False, Tokens(tok.dim, tok.count + before, tok.grid,
                                               tok.prefix + before, 1, tok.mixed))
    if packet in _MATMUL and packet is not aten.linear and packet is not aten.matmul:
        return _token_matmul(packet, args, known)
    if packet in _SOFTMAXES:
        dim = (args[1] if len(args) > 1 else kwargs.get("dim", -1)) % nd
        return _mix(rf) if dim == tok.dim else rf
    if packet is aten.native_layer_norm:  # statistics over the last len(normalized_shape) dims
        return _mix(rf) if tok.dim >= nd - len(args[1]) else rf
    if packet in _REDUCE:
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        dims = range(nd) if not dims and dims != 0 else dims
        dims = {d % nd for d in (dims if isinstance(dims, (list, tuple, range)) else [dims])}
        if tok.dim in dims:
            return _global(rf)
        keep = args[2] if len(args) > 2 and isinstance(args[2], bool) else kwargs.get(
            "keepdim", False)
        return _moved(rf, tok.dim - (0 if keep else sum(d < tok.dim for d in dims)))
    if packet in _FACTORY:
        return None
    if packet in _TOKEN_PASS or is_elementwise(func):
        return _token_union(known, tok, len(out_shape) - nd)
    raise NoRule("no receptive-field rule for a token sequence")


def _moved(rf: TensorRF, dim: int) -> TensorRF:
    tok = rf.tokens
    assert tok is not None
    return TensorRF(rf.axes, False, Tokens(dim, tok.count, tok.grid, tok.prefix, tok.stride,
                                           tok.mixed))


def _mix(rf: TensorRF) -> TensorRF:
    """Every token sees what all tokens see: the union over the grid becomes a part every
    unit shares (as an SE gate's global average does for a map)."""
    tok = rf.tokens
    assert tok is not None
    axes = []
    for a, units in zip(rf.axes, tok.grid, strict=True):
        whole = a.collapse(units)
        axes.append(Axis(a.lo, a.hi, a.jump, min(a.clo, whole.lo), max(a.chi, whole.hi)))
    mixed = Tokens(tok.dim, tok.count, tok.grid, tok.prefix, tok.stride, True)
    return TensorRF(tuple(axes), False, mixed)  # type: ignore[arg-type]


def _global(rf: TensorRF) -> TensorRF:
    """A tensor with no token dim left, each of whose units sees what all tokens see."""
    tok = rf.tokens
    assert tok is not None
    axes = tuple(a.collapse(units) for a, units in zip(rf.axes, tok.grid, strict=True))
    return TensorRF(axes, False)  # type: ignore[arg-type]


def _token_view(rf: TensorRF, in_shape: Sequence[int], out_shape: Sequence[int]) -> TensorRF:
    """A view keeps the tokens where a row-major index finds them: token = (F // inner) %
    count for the flat index F; find the output dim that holds that block whole."""
    tok = rf.tokens
    assert tok is not None
    inner = tok.stride * math.prod(in_shape[tok.dim + 1:])
    for q in range(len(out_shape)):
        below = math.prod(out_shape[q + 1:])
        if inner % below == 0 and (below * out_shape[q]) % (inner * tok.count) == 0:
            return TensorRF(rf.axes, False, Tokens(q, tok.count, tok.grid, tok.prefix,
                                                   inner // below, tok.mixed))
    h, w = tok.grid
    if (tok.prefix == 0 and inner == 1 and len(out_shape) >= 3
            and tuple(out_shape[-2:]) == (h, w)):
        return TensorRF(rf.axes, True)  # the patch tokens back as an (h, w) map
    if tok.mixed:
        return _global(rf)
    raise NoRule("reshaping a token sequence across its token dim")


def _token_union(known: Sequence[tuple[torch.Tensor, TensorRF]], tok: Tokens,
                 new_dims: int = 0) -> TensorRF:
    """Elementwise ops on one token layout: the union per patch; a non-token input (a
    pooled vector) is broadcast to every token, so what it sees is shared."""
    layouts = [r.tokens for _, r in known if r.tokens is not None]
    if any((o.count, o.grid, o.prefix) != (tok.count, tok.grid, tok.prefix) for o in layouts):
        raise NoRule("combining token sequences of different layouts")
    axes = []
    for i in range(2):
        group = [r.axes[i] for _, r in known if r.tokens is not None]
        shared = [r.axes[i].whole() for _, r in known if r.tokens is None]
        shared += [(a.clo, a.chi) for a in group]
        axes.append(Axis(min(a.lo for a in group), max(a.hi for a in group),
                         max(a.jump for a in group), min(lo for lo, _ in shared),
                         max(hi for _, hi in shared)))
    return TensorRF(tuple(axes), False, Tokens(  # type: ignore[arg-type]
        tok.dim + new_dims, tok.count, tok.grid, tok.prefix, tok.stride,
        any(o.mixed for o in layouts)))


def _token_matmul(packet: Any, args: Sequence[Any],
                  known: Sequence[tuple[torch.Tensor, TensorRF]]) -> TensorRF:
    """(…, M, K) @ (…, K, N): tokens along M (rows) or N (columns) stay per token; tokens
    along the contracted K, or in both operands (attention's Q·Kᵀ), are mixed."""
    a, b = (args[1], args[2]) if packet in (aten.addmm, aten.baddbmm) else (args[0], args[1])
    rfs = dict((id(t), r) for t, r in known)
    if any(r.spatial for r in rfs.values()):
        raise NoRule("matrix product of a spatial map")
    out_dims: list[tuple[TensorRF, int]] = []
    mixed = False
    for t, row_dim in ((a, a.dim() - 2), (b, b.dim() - 1)):
        r = rfs.get(id(t))
        if r is None or r.tokens is None:
            continue
        d = r.tokens.dim
        if d == (a.dim() - 1 if t is a else b.dim() - 2):
            mixed = True  # the contracted dim
        elif d == row_dim or d == 0:  # rows/columns, or the batch of a bmm
            out_dims.append((r, row_dim if d == row_dim else 0))
        else:
            raise NoRule("matrix product over a token layout it cannot follow")
    mixed = mixed or len(out_dims) > 1 or any(r.tokens is None for r in rfs.values())
    base, dim = out_dims[0] if out_dims else (next(r for r in rfs.values() if r.tokens), 0)
    union = _token_union([(t, r) for t, r in known if r.tokens is not None], base.tokens)
    result = _moved(union, dim)
    if mixed:
        result = _mix(result)
    return result if out_dims else _global(result)


def _flat(items: Sequence[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            flat.extend(_flat(item))
        else:
            flat.append(item)
    return flat
