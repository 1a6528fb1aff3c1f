"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s"): a ResNet modernised step by step
towards a Swin Transformer, from convolutions alone.

What the paper's Sec. 2 changes, as they appear here: a "patchify" stem (4x4 convolution,
stride 4, then LayerNorm); stage depths in Swin's 1:1:3:1 ratio (3, 3, 9, 3); separate
downsampling layers between stages (LayerNorm, then a 2x2 convolution with stride 2); and the
block: 7x7 depthwise convolution -> LayerNorm -> 1x1 to 4x the width -> GELU -> 1x1 back
(an inverted bottleneck with one norm and one activation), scaled per channel by a learnt
layer scale (initialised to 1e-6) and dropped by stochastic depth on the residual branch.
The LayerNorm normalises over the channels of each position, never over the map.

The 1x1 layers are ``nn.Linear`` on a channels-last view and the norms ``nn.LayerNorm``, with
torchvision's module names, so that its state_dicts load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.layers import DropPath, Permute
from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

__all__ = ["CONFIGS", "CNBlock", "ConvNeXt", "ConvNeXtConfig", "LayerNorm2d"]

CONVNEXT_PAPER = Paper(
    title="A ConvNet for the 2020s",
    authors="Liu, Mao, Wu, Feichtenhofer, Darrell, Xie",
    year=2022,
    url="https://arxiv.org/abs/2201.03545",
)

LAYER_NORM_EPS = 1e-6  # the authors' code and torchvision


@dataclass(frozen=True)
class ConvNeXtConfig:
    """One variant: blocks per stage, width per stage, and the stochastic-depth rate of its
    ImageNet-1K training (reached by the last block)."""

    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    drop_path_rate: float


# Sec. 3 ("Closing remarks"), Liu et al. 2022: C = the stage widths, B = the blocks per stage.
# Stochastic depth: Appendix A.1, Table 5 (0.1 / 0.4 / 0.5 / 0.5), torchvision's defaults.
CONFIGS = {
    "convnext_tiny": ConvNeXtConfig((3, 3, 9, 3), (96, 192, 384, 768), 0.1),
    "convnext_small": ConvNeXtConfig((3, 3, 27, 3), (96, 192, 384, 768), 0.4),
    "convnext_base": ConvNeXtConfig((3, 3, 27, 3), (128, 256, 512, 1024), 0.5),
    "convnext_large": ConvNeXtConfig((3, 3, 27, 3), (192, 384, 768, 1536), 0.5),
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of an N x C x H x W map (the stem's,
    the downsampling layers' and the head's norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)



class CNBlock(nn.Module):
    """The ConvNeXt block (Fig. 4): x + drop_path(gamma * pw2(GELU(pw1(LN(dw7x7(x)))))).

    ``block`` children keep torchvision's indices: 0 depthwise conv, 1 to channels-last,
    2 LayerNorm, 3 Linear to 4C, 4 GELU, 5 Linear to C, 6 back to channels-first.
    """

    def __init__(self, dim: int, layer_scale: float, drop_path: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim),
            Permute(0, 2, 3, 1),
            nn.LayerNorm(dim, eps=LAYER_NORM_EPS),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute(0, 3, 1, 2),
        )
        # Layer scale (Touvron et al. 2021, "Going deeper with image transformers"): one
        # learnt factor per channel, so that each block starts close to the identity.
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.stochastic_depth = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.stochastic_depth(self.layer_scale * self.block(x))


def _stage(dim: int, depth: int, layer_scale: float, drop_paths: list[float]) -> nn.Sequential:
    return nn.Sequential(*(CNBlock(dim, layer_scale, p) for p in drop_paths[:depth]))


def _downsample(in_dim: int, out_dim: int) -> nn.Sequential:
    """Sec. 2.6 "Separate downsampling layers": LayerNorm, then 2x2 conv with stride 2."""
    return nn.Sequential(LayerNorm2d(in_dim, eps=LAYER_NORM_EPS),
                         nn.Conv2d(in_dim, out_dim, kernel_size=2, stride=2))


class ConvNeXt(Classifier):
    """``features``: 0 the stem, then stage 1, downsampling, stage 2, ... (1, 3, 5, 7 are the
    four stages, 2, 4, 6 the downsampling layers); head: global average pool, LayerNorm,
    linear classifier."""

    classifier_path = "classifier.2"
    min_input_size = (32, 32)  # four halvings after the stride-4 stem leave a 1x1 map

    def __init__(
        self, config: ConvNeXtConfig, *, num_classes: int = 1000, in_chans: int = 3,
        drop_path_rate: float | None = None, layer_scale: float = 1e-6,
    ) -> None:
        super().__init__()
        rate = config.drop_path_rate if drop_path_rate is None else drop_path_rate
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
        self.in_chans = in_chans
        widths, depths = config.widths, config.depths
        # Stochastic depth rises linearly from 0 at the first block to ``rate`` at the last.
        total = sum(depths)
        drop_paths = [rate * i / (total - 1) for i in range(total)]
        layers: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_chans, widths[0], kernel_size=4, stride=4),  # the patchify stem
            LayerNorm2d(widths[0], eps=LAYER_NORM_EPS),
        )]
        info = []
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            if i > 0:
                layers.append(_downsample(widths[i - 1], width))
            layers.append(_stage(width, depth, layer_scale, drop_paths))
            drop_paths = drop_paths[depth:]
            info.append({"channels": width, "reduction": 4 * 2**i,
                         "module": f"features.{len(layers) - 1}"})
        self.features = nn.Sequential(*layers)
        self.feature_info = info
        self.num_features = widths[-1]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            LayerNorm2d(widths[-1], eps=LAYER_NORM_EPS), nn.Flatten(1),
            nn.Linear(widths[-1], num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # The authors' code (and torchvision): truncated normal, std 0.02, zero biases.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        # The head's norm acts on the pooled N x C x 1 x 1 map, before the flatten.
        return self.classifier(self.avgpool(x))


def _register(name: str, paper_top1: float):
    """Declared facts are torchvision's (its weights are trained with its own recipe, so its
    top-1 differs from the paper's Table 1, named in ``error_source``)."""
    return register_model(
        family="convnext",
        paper=CONVNEXT_PAPER,
        input_size=(3, 224, 224),
        dataset="imagenet",
        num_classes=1000,
        params=_TORCHVISION[name][0],
        macs=_TORCHVISION[name][1],
        top1_error=100 - _TORCHVISION[name][2],
        top5_error=100 - _TORCHVISION[name][3],
        error_source=f"torchvision reference weights (paper Table 1: {paper_top1}% top-1)",
        recipe="liu2022",
        torchvision=True,
        deviations=(
            "stochastic depth rises linearly to the variant's rate at the last block "
            "(i / (N - 1)), as in the authors' code and torchvision",
        ),
    )


# torchvision's published parameters, GFLOPs (= GMACs of conv and linear layers) at 224x224,
# and acc@1 / acc@5 of its ImageNet-1K weights.
_TORCHVISION = {
    "convnext_tiny": (28_589_128, 4_456_000_000, 82.52, 96.146),
    "convnext_small": (50_223_688, 8_684_000_000, 83.616, 96.65),
    "convnext_base": (88_591_464, 15_355_000_000, 84.062, 96.87),
    "convnext_large": (197_767_336, 34_361_000_000, 84.414, 96.976),
}


@_register("convnext_tiny", 82.1)
def convnext_tiny(**kwargs) -> ConvNeXt:
    """ConvNeXt-T: C = (96, 192, 384, 768), B = (3, 3, 9, 3); 28M params, 4.5G FLOPs."""
    return ConvNeXt(CONFIGS["convnext_tiny"], **kwargs)


@_register("convnext_small", 83.1)
def convnext_small(**kwargs) -> ConvNeXt:
    """ConvNeXt-S: C = (96, 192, 384, 768), B = (3, 3, 27, 3); 50M params, 8.7G FLOPs."""
    return ConvNeXt(CONFIGS["convnext_small"], **kwargs)


@_register("convnext_base", 83.8)
def convnext_base(**kwargs) -> ConvNeXt:
    """ConvNeXt-B: C = (128, 256, 512, 1024), B = (3, 3, 27, 3); 89M params, 15.4G FLOPs."""
    return ConvNeXt(CONFIGS["convnext_base"], **kwargs)


@_register("convnext_large", 84.3)
def convnext_large(**kwargs) -> ConvNeXt:
    """ConvNeXt-L: C = (192, 384, 768, 1536), B = (3, 3, 27, 3); 198M params, 34.4G FLOPs."""
    return ConvNeXt(CONFIGS["convnext_large"], **kwargs)
