"""Operation counts of one aten op: MACs from PyTorch's own counter, "other ops" by rule.

MACs: ``torch.utils.flop_counter``'s formulas (convolution, mm, addmm, bmm, ...), which
count 2 FLOPs per multiply-accumulate and no bias additions; we report MACs = FLOPs / 2,
so totals equal ``FlopCounterMode`` total / 2 exactly.

Attention: its two matmuls (Q·Kᵀ and A·V, 2·N²·d MACs per layer for N tokens of width d)
are MACs like any other. On meta tensors (the analyser) and under autograd on the math path,
``scaled_dot_product_attention`` reaches aten as ``bmm``, which the counter counts; the fused
CPU kernel (``_scaled_dot_product_flash_attention_for_cpu``) and ``nn.MultiheadAttention``'s
inference fast path (``_native_multi_head_attention``, eval mode without autograd on CPU or
CUDA) have no formula in ``torch.utils.flop_counter`` (it counts them as 0), so
``ATTENTION_FLOPS`` adds theirs: the same two matmuls, plus the fast path's projections.

Other ops, counted separately and never mixed into MACs (per output element unless said):
- elementwise functions (ReLU, sigmoid, SiLU, residual add, SE gate multiply, ...): 1;
- batch norm: 2 (the inference-time scale and shift); group/layer norm: 4 (they also
  compute per-sample mean and variance);
- max/average pooling: K·K per output element (one compare or add per window element);
- adaptive pooling and reductions (mean over H, W): 1 per *input* element;
- softmax: 3 (exp, sum, divide).
Views, reshapes, copies, concatenation, padding, splitting and gathers cost 0. An op outside every
rule returns None, so the caller reports it instead of counting it as zero.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

aten = torch.ops.aten

__all__ = [
    "ATTENTION_FLOPS", "ELEMENTWISE", "ZERO_COST", "has_rule", "is_elementwise", "mac_flops",
    "other_ops",
]

ZERO_COST = {
    aten.view, aten._unsafe_view, aten.reshape, aten.flatten, aten.t, aten.transpose,
    aten.permute, aten.expand, aten.unsqueeze, aten.squeeze, aten.clone, aten.contiguous,
    aten.detach, aten.alias, aten.lift_fresh, aten._to_copy, aten.copy_, aten.cat, aten.stack,
    aten.split, aten.split_with_sizes, aten.chunk, aten.unbind, aten.slice, aten.select,
    aten.narrow, aten.constant_pad_nd, aten.empty, aten.empty_like, aten.new_empty,
    aten.empty_strided, aten.zeros, aten.zeros_like, aten.ones, aten.ones_like, aten.full,
    aten.fill_, aten.zero_, aten.channel_shuffle, aten.scalar_tensor, aten.arange,
    aten.new_zeros, aten.new_ones, aten.new_full, aten.index_put, aten.index_put_,
    aten.gather,  # reads (deformable sampling's corners); its arithmetic is counted apart
}
_NORM2 = {
    aten.native_batch_norm, aten._native_batch_norm_legit,
    aten._native_batch_norm_legit_no_training, aten.cudnn_batch_norm,
}
_NORM4 = {aten.native_group_norm, aten.native_layer_norm}
_WINDOW = {
    aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d,
    aten.max_pool3d_with_indices, aten.max_pool3d, aten.avg_pool3d,
}
_PER_INPUT = {
    aten._adaptive_avg_pool2d, aten.adaptive_avg_pool2d, aten.adaptive_max_pool2d,
    aten.mean, aten.sum, aten.amax, aten.amin, aten.max, aten.min,
}
_SOFTMAX = {aten._softmax, aten.softmax, aten._log_softmax, aten.log_softmax, aten._safe_softmax}
# Elementwise ops PyTorch does not tag as pointwise.
ELEMENTWISE = {aten.hardswish, aten.hardswish_, aten.native_dropout, aten.where}


def is_elementwise(func: Any) -> bool:
    return torch.Tag.pointwise in func.tags or func._overloadpacket in ELEMENTWISE


def _sdpa_cpu_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    *_: Any, **__: Any) -> int:
    # (B, heads, N, d) each: PyTorch's own formula for its CUDA attention kernels.
    return sdpa_flop_count(query.shape, key.shape, value.shape)


def _native_mha_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      embed_dim: int, num_head: int, *_: Any, **__: Any) -> int:
    # Batch-first (B, N, E): Q, K, V projections, the attention matmuls, the output projection.
    b, n_q, e = query.shape
    n_k = key.shape[1]
    projections = 2 * b * e * e * (2 * n_q + 2 * n_k)
    per_head = (b, num_head, n_q, embed_dim // num_head)
    kv = (b, num_head, n_k, embed_dim // num_head)
    return projections + sdpa_flop_count(per_head, kv, kv)


# Fused attention kernels that torch.utils.flop_counter has no formula for.
ATTENTION_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    aten._native_multi_head_attention: _native_mha_flops,
}


def mac_flops(func: Any, args: Any, kwargs: dict[str, Any], out: Any) -> int | None:
    """FLOPs by ``torch.utils.flop_counter``'s formula (or ``ATTENTION_FLOPS``), or None
    when neither has one."""
    packet = func._overloadpacket
    if packet in ATTENTION_FLOPS:
        return int(ATTENTION_FLOPS[packet](*args, **kwargs))
    formula = flop_registry.get(packet)
    return None if formula is None else int(formula(*args, **kwargs, out_val=out))


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def has_rule(func: Any) -> bool:
    """Whether ``other_ops`` knows this op (so it holds no hidden multiply-accumulates)."""
    packet = func._overloadpacket
    return (packet in flop_registry or packet in ATTENTION_FLOPS or packet in ZERO_COST
            or packet in _NORM2 or packet in _NORM4 or packet in _WINDOW or packet in _PER_INPUT
            or packet in _SOFTMAX or is_elementwise(func))


def other_ops(func: Any, args: Any, kwargs: dict[str, Any], out: Any) -> int | None:
    """Non-MAC operations of one op call by the rules above, or None (no rule)."""
    packet = func._overloadpacket
    first_out = out[0] if isinstance(out, (tuple, list)) else out
    n_out = _numel(first_out)
    if packet in ATTENTION_FLOPS:  # the softmax over the scores, 3 per score
        q, k = args[0], args[1]
        heads = q.shape[1] if q.dim() == 4 else args[4]
        return 3 * q.shape[0] * heads * q.shape[-2] * k.shape[-2]
    if packet in flop_registry or packet in ZERO_COST:
        return 0
    if packet in _NORM2:
        return 2 * n_out
    if packet in _NORM4:
        return 4 * n_out
    if packet in _WINDOW:
        k = args[1]
        return n_out * math.prod(k if len(k) > 1 else [k[0], k[0]])
    if packet in _PER_INPUT:
        return _numel(args[0])
    if packet in _SOFTMAX:
        return 3 * n_out
    if is_elementwise(func):
        return n_out
    return None
