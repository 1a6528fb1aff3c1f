"""torchvision's one-tower AlexNet (Krizhevsky 2014's "one weird trick" widths): its count and
multiply-adds derived from the layer list, independently of the model code."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnlab

from zoo_helpers import build_on_meta, count_params


def conv_out(size: int, k: int, stride: int = 1, pad: int = 0) -> int:
    return (size + 2 * pad - k) // stride + 1


# (c_in, c_out, kernel, stride, padding, 3x3/2 max-pool after it)
CONVS = [(3, 64, 11, 4, 2, True), (64, 192, 5, 1, 2, True), (192, 384, 3, 1, 1, False),
         (384, 256, 3, 1, 1, False), (256, 256, 3, 1, 1, True)]
FCS = [(256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)]


def alexnet_params_and_macs(size: int = 224) -> tuple[int, int]:
    params = macs = 0
    for c_in, c_out, k, stride, pad, pool in CONVS:
        size = conv_out(size, k, stride, pad)
        params += c_out * (c_in * k * k + 1)
        macs += size * size * c_out * c_in * k * k
        if pool:
            size = conv_out(size, 3, 2)
    assert size == 6  # 224 -> 55 -> 27 -> 13 -> 6: the adaptive 6x6 pool is an identity
    params += sum(n_out * (n_in + 1) for n_in, n_out in FCS)
    macs += sum(n_in * n_out for n_in, n_out in FCS)
    return params, macs


def test_declared_count_and_macs_follow_from_the_layers():
    params, macs = alexnet_params_and_macs()
    info = cnnlab.model_info("alexnet")
    assert params == info.params == 61_100_840
    assert round(macs, -6) == info.macs  # torchvision: 0.714 GFLOPs (= GMACs)
    model = build_on_meta("alexnet").eval()
    assert count_params(model) == params
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() / 2 == macs
