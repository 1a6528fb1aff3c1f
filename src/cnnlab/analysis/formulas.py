"""The lectures' arithmetic as plain functions: output size, parameters, MACs, receptive field.

Conventions: square kernels and maps unless a function says otherwise; counts are MACs
(multiply-accumulates) per image, bias additions not counted. One MAC is 2 FLOPs; papers
that say "FLOPs" for multiply-adds (ResNet's 3.8 x 10^9) mean MACs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "LayerRF",
    "conv_macs",
    "conv_output_size",
    "conv_params",
    "conv_pool_receptive_field",
    "pool_output_size",
    "receptive_field",
    "stacked_receptive_field",
]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def conv_output_size(n: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> int:
    """Output size of a convolution: floor((N + 2P - D(F-1) - 1) / S) + 1.

    With D = 1 this is the lectures' (N + 2P - F) / S + 1. When (N + 2P - F) is not
    divisible by S the last S-1 (or fewer) rows of the padded input are never reached by a
    window, so the division floors (PyTorch, cuDNN and Caffe all drop them): N=7, F=3, S=3
    gives floor(4/3) + 1 = 2, and the 7th column is ignored.

    >>> conv_output_size(227, 11, 4)  # AlexNet conv1
    55
    """
    _check_positive(n=n, k=k, s=s, d=d)
    if p < 0:
        raise ValueError(f"padding must be >= 0, got {p}")
    span = n + 2 * p - d * (k - 1) - 1
    if span < 0:
        raise ValueError(
            f"a {k}x{k} kernel (dilation {d}) does not fit an input of {n} with padding {p}: "
            f"N + 2P - D(F-1) - 1 = {span} < 0; the output would be smaller than 1"
        )
    return span // s + 1


def pool_output_size(n: int, k: int, s: int | None = None, p: int = 0, ceil_mode: bool = False,
                     d: int = 1) -> int:
    """Output size of a pooling window (stride defaults to the kernel, as in PyTorch).

    With ``ceil_mode`` the division rounds up (Caffe's rule, used by GoogLeNet), but a
    window that would start in the right padding is dropped, as PyTorch does.
    """
    s = k if s is None else s
    _check_positive(n=n, k=k, s=s, d=d)
    if not 0 <= 2 * p <= d * (k - 1) + 1:  # PyTorch's rule: at most half the window
        raise ValueError(f"padding {p} must be between 0 and half the window {d * (k - 1) + 1}")
    if not ceil_mode:
        return conv_output_size(n, k, s, p, d)
    span = n + 2 * p - d * (k - 1) - 1
    out = -(-span // s) + 1  # ceil division
    if (out - 1) * s >= n + p:
        out -= 1
    if out < 1:
        raise ValueError(f"a {k}x{k} window does not fit an input of {n} with padding {p}")
    return out


def conv_params(c_in: int, c_out: int, k: int | tuple[int, int], groups: int = 1,
                bias: bool = True) -> int:
    """Weights F*F*C_in/groups per filter, times C_out filters, plus C_out biases."""
    kh, kw = (k, k) if isinstance(k, int) else k
    _check_positive(c_in=c_in, c_out=c_out, kh=kh, kw=kw, groups=groups)
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")
    return c_out * (c_in // groups) * kh * kw + (c_out if bias else 0)


def conv_macs(c_in: int, c_out: int, k: int | tuple[int, int], out_h: int,
              out_w: int | None = None, groups: int = 1) -> int:
    """Multiply-accumulates of one image: every output value costs F*F*C_in/groups MACs.

    Bias additions are not counted (PyTorch's FlopCounterMode does not count them either).
    """
    kh, kw = (k, k) if isinstance(k, int) else k
    out_w = out_h if out_w is None else out_w
    _check_positive(out_h=out_h, out_w=out_w)
    weights_per_filter = conv_params(c_in, c_out, (kh, kw), groups, bias=False) // c_out
    return out_h * out_w * c_out * weights_per_filter


def stacked_receptive_field(k: int, n: int) -> int:
    """Receptive field of n stacked stride-1 KxK convolutions: n(K-1) + 1 (three 3x3 -> 7)."""
    _check_positive(k=k, n=n)
    return n * (k - 1) + 1


def conv_pool_receptive_field(k: int, p: int) -> int:
    """A stride-1 KxK convolution followed by PxP pooling with stride P sees P + K - 1 pixels."""
    _check_positive(k=k, p=p)
    return receptive_field([(k, 1), (p, p)]).size


@dataclass(frozen=True)
class LayerRF:
    """Receptive field of one unit of a layer's output, along one axis.

    ``size``: input pixels it sees; ``jump``: input pixels between neighbouring units (the
    product of the strides so far); ``start``: input coordinate of the centre of the first
    unit's field (negative when padding puts it outside the image).
    """

    size: int
    jump: int
    start: float


def receptive_field(layers: Iterable[Sequence[int]]) -> LayerRF:
    """Receptive field after a chain of layers given as (k, s[, p[, d]]) tuples.

    The recurrence (Araujo et al., Distill 2019): r <- r + (K-1)·D·j, start <- start +
    ((K-1)·D/2 - P)·j, j <- j·S, starting from r = 1, j = 1, start = 0.
    """
    size, jump, start = 1, 1, 0.0
    for layer in layers:
        if not 2 <= len(layer) <= 4:
            raise ValueError(f"each layer is (k, s[, p[, d]]), got {tuple(layer)}")
        k, s, p, d = (*layer, 0, 1)[:4] if len(layer) == 2 else (*layer, 1)[:4]
        _check_positive(k=k, s=s, d=d)
        size += (k - 1) * d * jump
        start += ((k - 1) * d / 2 - p) * jump
        jump *= s
    return LayerRF(size, jump, start)
