"""The lectures' numbers, recomputed by the analyser: one function per slide, each returning
Markdown lines.

``render()`` is docs/lecture-numbers.md (written by ``scripts/lecture_numbers.py``) and
``sections()`` feeds the explorer's lectures page, so both show the same figures from the
same code. The slides' own slips are stated where they happen.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnlab.analysis import formulas
from cnnlab.analysis.summary import Summary, summarize
from cnnlab.models.googlenet import Inception, InceptionNaive
from cnnlab.registry import create_model, model_info

__all__ = ["SECTIONS", "render", "sections"]


def _m(v: float) -> str:
    return f"{v / 1e6:.2f}M"


def _shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(map(str, shape[1:])) if shape else ""


def _table(summary: Summary, model: nn.Module, types: tuple[str, ...]) -> list[str]:
    lines = ["| layer | type | output (CxHxW) | memory (values) | params | weights only |",
             "|---|---|---|---:|---:|---:|"]
    for r in summary.layers:
        if r.kind == "input" or r.type in types:
            w = _weights(model, r.name) if r.params else 0
            lines.append(f"| {r.name} | {r.type} | {_shape(r.output_shape)} | "
                         f"{r.activation_values:,} | {r.params:,} | {w:,} |")
    return lines


def _weights(model: nn.Module, row_name: str) -> int:
    """Parameters without biases (the slides' convention: (3*3*3)*64 = 1,728)."""
    return int(model.get_submodule(row_name).weight.numel())


def _build(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    model.model_name = name
    return model


def _summary(name: str, **kwargs: object) -> Summary:
    return summarize(_build(name, **kwargs), model_info(name).input_size)


def vgg16() -> list[str]:
    model = _build("vgg16")
    s = summarize(model, model_info("vgg16").input_size)
    kept = ("Conv2d", "MaxPool2d", "Linear")
    rows = [r for r in s.layers if r.kind == "input" or r.type in kept]
    slide_values = sum(r.activation_values for r in rows)
    weights = sum(_weights(model, r.name) for r in rows if r.params)
    extra = [r for r in s.layers if r not in rows and r.activation_values]
    return [
        "## VGG16: memory and parameters per layer (CS231n lecture 9 slide)",
        "",
        "`cnnlab summary vgg16` at 3x224x224; memory = values of each layer's output per "
        "image, params with biases (weights only = the slide's convention).",
        "",
        *_table(s, model, kept),
        "",
        f"- Total parameters: **{s.total_params:,}** (the slide's \"138M\"; weights only "
        f"{weights:,}).",
        f"- Sum of the slide's own rows (input, 13 convs, 5 pools, 3 FCs): **{slide_values:,} "
        f"values** = {slide_values * 4 / 1e6:.1f} MB at 4 bytes/value "
        f"({slide_values * 4 / 2**20:.1f} MiB) per image, forward only.",
        f"- The slide says \"TOTAL memory: 24M * 4 bytes ~= 96MB / image\". That does not "
        f"equal the sum of its own rows, {_m(slide_values)} values (~{slide_values * 4 / 1e6:.0f} "
        f"MB); the 24M figure is wrong by {_m(24e6 - slide_values)} values.",
        f"- Convention: ReLUs run in place and dropout is the identity at inference, so they "
        f"add no memory; cnnlab's form also has torchvision's adaptive 7x7 average pool before "
        f"the classifier ({', '.join(f'{r.name}: {r.activation_values:,}' for r in extra)} "
        f"values), so the analyser's forward total is {s.activation_values:,} values.",
        f"- Training at batch 1 (SGD with momentum; activations kept for backward + weights + "
        f"gradients + momentum): {s.training_bytes(1, 'sgd') / 2**20:,.0f} MiB; the "
        f"parameters alone are {s.param_bytes / 2**20:,.0f} MiB.",
        "",
    ]


def alexnet_conv1() -> list[str]:
    s = _summary("alexnet_2012")
    conv1 = next(r for r in s.layers if r.name == "features.conv1")
    pool1 = next(r for r in s.layers if r.name == "features.pool1")
    n = formulas.conv_output_size(227, 11, 4)
    return [
        "## AlexNet conv1 (227x227x3 input, 96 filters 11x11, stride 4)",
        "",
        f"- Output size (227 - 11)/4 + 1 = **{n}**: the analyser gives "
        f"{_shape(conv1.output_shape)} (`cnnlab calc conv --n 227 --k 11 --s 4 --c-in 3 "
        f"--c-out 96`).",
        f"- Parameters 11*11*3*96 + 96 = **{conv1.params:,}** (\"35K\"); "
        f"{conv1.macs:,} MACs ({conv1.macs / 1e6:.1f}M).",
        f"- pool1 (3x3, stride 2): output {_shape(pool1.output_shape)}, **{pool1.params} "
        f"parameters** (pooling has none).",
        f"- Whole 2012 two-tower network: {s.total_params:,} parameters (\"60 million\").",
        "",
    ]


def lenet() -> list[str]:
    model = _build("lenet_lecture")
    s = summarize(model, model_info("lenet_lecture").input_size)
    return [
        "## The lecture LeNet (20 and 50 filters of 5x5, 28x28 input)",
        "",
        "`lenet_lecture` (\"same\" padding, 2x2 max pools, FC 500):",
        "",
        *_table(s, model, ("Conv2d", "MaxPool2d", "Linear")),
        "",
        f"- Total {s.total_params:,} parameters, {s.total_macs:,} MACs, receptive field of the "
        f"last map {s.receptive_field.size}x{s.receptive_field.size}.",
        "",
    ]


def inception() -> list[str]:
    naive = summarize(InceptionNaive(256, 128, 192, 96), (256, 28, 28))
    reduced = summarize(Inception(256, 128, 64, 192, 64, 96, 64), (256, 28, 28))
    hw = 28 * 28
    naive_terms = [("[1x1 conv, 128] 28x28x128x1x1x256", hw * 128 * 256),
                   ("[3x3 conv, 192] 28x28x192x3x3x256", hw * 192 * 9 * 256),
                   ("[5x5 conv, 96] 28x28x96x5x5x256", hw * 96 * 25 * 256)]
    red_terms = [("[1x1 conv, 64] 28x28x64x1x1x256 (3x3 reduce)", hw * 64 * 256),
                 ("[1x1 conv, 64] 28x28x64x1x1x256 (5x5 reduce)", hw * 64 * 256),
                 ("[1x1 conv, 128] 28x28x128x1x1x256", hw * 128 * 256),
                 ("[3x3 conv, 192] 28x28x192x3x3x64", hw * 192 * 9 * 64),
                 ("[5x5 conv, 96] 28x28x96x5x5x64", hw * 96 * 25 * 64),
                 ("[1x1 conv, 64] 28x28x64x1x1x256 (pool projection)", hw * 64 * 256)]
    lines = ["## Inception module on 28x28x256 (GoogLeNet, Fig. 2)", "",
             "Naive module (1x1 128, 3x3 192, 5x5 96, 3x3 max pool):", ""]
    lines += [f"- {t}: {_m(v)}" for t, v in naive_terms]
    lines += [f"- sum {_m(sum(v for _, v in naive_terms))}; the analyser: "
              f"**{_m(naive.total_macs)}** MACs (the slide: 854M), output "
              f"{_shape(naive.layers[-1].output_shape)}.", "",
              "With 1x1 reductions (64 before the 3x3 and the 5x5, pool projection 64):", ""]
    lines += [f"- {t}: {_m(v)}" for t, v in red_terms]
    total = sum(v for _, v in red_terms)
    lines += [
        f"- sum of these terms {_m(total)} = {total:,}; the analyser: "
        f"**{_m(reduced.total_macs)}** MACs.",
        f"- The slide says 353M, which is not the sum of its own six terms ({_m(total)}). "
        f"Reduction cuts the cost {naive.total_macs / reduced.total_macs:.1f}x.",
        "",
    ]
    return lines


def small_filters() -> list[str]:
    c = 64
    three = nn.Sequential(*[nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(3)])
    seven = nn.Sequential(nn.Conv2d(c, c, 7, padding=3, bias=False))
    s3, s7 = summarize(three, (c, 56, 56)), summarize(seven, (c, 56, 56))
    cp = summarize(nn.Sequential(nn.Conv2d(1, 1, 5), nn.MaxPool2d(2)), (1, 32, 32))
    return [
        "## Small filters: three 3x3 vs one 7x7 (VGG, Sec. 2.3)",
        "",
        f"- C = {c} channels: three 3x3 layers have 3 x 9C^2 = 27C^2 = **{s3.total_params:,}** "
        f"parameters, one 7x7 has 49C^2 = **{s7.total_params:,}**; the analyser gives fields "
        f"of {s3.receptive_field.size}x{s3.receptive_field.size} (stack) and "
        f"{s7.receptive_field.size}x{s7.receptive_field.size} (single); "
        f"stacked_receptive_field(3, 3) = {formulas.stacked_receptive_field(3, 3)}.",
        f"- Conv 5x5 then pool 2x2 (stride 2): field **{cp.receptive_field.size}x"
        f"{cp.receptive_field.size}** = P + K - 1 = 2 + 5 - 1.",
        "",
    ]


def googlenet_vs_alexnet() -> list[str]:
    g = _summary("googlenet_paper")
    a = _summary("alexnet_2012")
    gt, at = _summary("googlenet"), _summary("alexnet")
    return [
        "## GoogLeNet vs AlexNet parameters",
        "",
        f"- As published: GoogLeNet {g.total_params:,} (no auxiliary heads) vs AlexNet "
        f"{a.total_params:,}: **{a.total_params / g.total_params:.1f}x** fewer.",
        f"- torchvision forms: googlenet {gt.total_params:,} vs alexnet {at.total_params:,}: "
        f"{at.total_params / gt.total_params:.1f}x.",
        f"- The paper's \"12x fewer parameters than Krizhevsky et al.\" is not reproduced by "
        f"either count ({a.total_params / g.total_params:.1f}x and "
        f"{at.total_params / gt.total_params:.1f}x).",
        "",
    ]


def gap_vs_fc() -> list[str]:
    s = _summary("vgg16")
    fc = sum(r.params for r in s.layers if r.name.startswith("classifier."))
    gap = summarize(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)),
                    (512, 7, 7))
    return [
        "## Global average pooling vs FC head on VGG16's 7x7x512 map",
        "",
        f"- FC head (25088->4096->4096->1000): **{fc:,}** parameters "
        f"({fc / s.total_params:.1%} of VGG16).",
        f"- GAP + one FC (512->1000): **{gap.total_params:,}** parameters, "
        f"{fc / gap.total_params:.0f}x fewer.",
        "",
    ]


def resnet50() -> list[str]:
    v15 = _summary("resnet50")
    v1 = _summary("resnet50", stride_in_1x1=True)
    return [
        "## ResNet-50: the paper's 3.8 GFLOPs vs torchvision's 4.09",
        "",
        f"- Paper (v1, stride 2 in the first 1x1 of each downsampling block): "
        f"**{v1.total_macs / 1e9:.2f} GMACs** by the analyser; the paper's Table 1 says "
        f"3.8 x 10^9 FLOPs, meaning multiply-adds.",
        f"- torchvision / v1.5 (stride 2 in the 3x3): **{v15.total_macs / 1e9:.2f} GMACs** "
        f"(torchvision reports 4.09 GFLOPs, also meaning MACs). Moving the stride puts the 3x3 "
        f"convolution at the higher resolution: +{(v15.total_macs - v1.total_macs) / 1e6:.0f}M "
        f"MACs.",
        f"- Both: {v15.total_params:,} parameters; in FLOPs (2 x MACs) v1.5 is "
        f"{v15.total_flops / 1e9:.2f} G.",
        "",
    ]


SECTIONS = {
    "vgg16": vgg16, "alexnet_conv1": alexnet_conv1, "lenet": lenet, "inception": inception,
    "small_filters": small_filters, "googlenet_vs_alexnet": googlenet_vs_alexnet,
    "gap_vs_fc": gap_vs_fc, "resnet50": resnet50,
}


def sections() -> list[tuple[str, list[str]]]:
    """(key, Markdown lines) of every section, in the document's order."""
    return [(key, build()) for key, build in SECTIONS.items()]


def render() -> str:
    parts = [
        "# The lectures' numbers, checked",
        "",
        "Generated by `scripts/lecture_numbers.py` from `cnnlab.analysis` (meta tensors, no real "
        "compute); `tests/test_lecture_numbers.py` fails if this file is stale. Conventions: "
        "per image; MACs = multiply-accumulates of conv/linear layers (FLOPs = 2 x MACs); "
        "memory = values of each layer's output.",
        "",
    ]
    for _, lines in sections():
        parts += lines
    return "\n".join(parts).rstrip() + "\n"
