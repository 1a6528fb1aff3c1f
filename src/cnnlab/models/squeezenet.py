"""SqueezeNet (Iandola et al. 2016): AlexNet-level accuracy from fire modules.

``squeezenet1_0`` is Table 1 of the paper; ``squeezenet1_1`` is the authors' v1.1 release
(3x3 conv1 with 64 filters, pools moved earlier: 2.4x less computation, same accuracy).
Both are torchvision-compatible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

IANDOLA_2016 = Paper(
    title="SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size",
    authors="Iandola, Han, Moskewicz, Ashraf, Dally, Keutzer",
    year=2016,
    url="https://arxiv.org/abs/1602.07360",
)

# (conv1 filters, conv1 kernel), then the layers after conv1: "M" a 3x3/2 max-pool (Caffe's
# rounding up), (s1x1, e1x1, e3x3) a fire module. Table 1 for v1.0; v1.1 from its release notes.
Layer = tuple[int, int, int] | str
CONFIGS: dict[str, tuple[tuple[int, int], list[Layer]]] = {
    "1_0": ((96, 7), ["M", (16, 64, 64), (16, 64, 64), (32, 128, 128), "M",
                      (32, 128, 128), (48, 192, 192), (48, 192, 192), (64, 256, 256), "M",
                      (64, 256, 256)]),
    "1_1": ((64, 3), ["M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
                      (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]),
}


class Fire(nn.Module):
    """Sec. 3.2: squeeze (1x1, s filters) -> ReLU -> concat(expand 1x1 (e1), expand 3x3 (e3)),
    each followed by ReLU. Output channels e1 + e3."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.out_channels = expand1x1 + expand3x3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], dim=1)


def make_features(
    stem: tuple[int, int], layers: Sequence[Layer], in_chans: int
) -> tuple[nn.Sequential, list[dict], int]:
    """conv1 + ReLU + the fire/pool layers; feature_info marks each pool and the last fire."""
    width, kernel = stem
    modules: list[nn.Module] = [nn.Conv2d(in_chans, width, kernel_size=kernel, stride=2),
                                nn.ReLU(inplace=True)]
    stages: list[dict] = []
    channels, reduction = width, 2
    for item in layers:
        if item == "M":
            modules.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
            reduction *= 2
            stages.append({"channels": channels, "reduction": reduction,
                           "module": f"features.{len(modules) - 1}"})
        else:
            fire = Fire(channels, *item)
            modules.append(fire)
            channels = fire.out_channels
    stages.append({"channels": channels, "reduction": reduction,
                   "module": f"features.{len(modules) - 1}"})
    return nn.Sequential(*modules), stages, channels


class SqueezeNet(Classifier):
    """conv1 -> fire2..fire9 with three max-pools -> dropout 0.5 -> conv10 (1x1, one map per
    class) -> ReLU -> global average pool (Table 1, Sec. 3.3).

    Init: Kaiming-uniform convs, conv10 N(0, 0.01), biases 0 (torchvision's; the paper's
    Caffe files use Xavier and a Gaussian conv10).
    """

    classifier_path = "classifier.1"  # the last layer: features -> class scores

    def __init__(
        self,
        version: str = "1_0",
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if version not in CONFIGS:
            raise ValueError(
                f"squeezenet: version must be one of {sorted(CONFIGS)}, got {version!r}")
        self.in_chans = in_chans
        # The smallest input every pool takes (torchvision's min_size): 21 for 1_0, 17 for 1_1.
        self.min_input_size = (21, 21) if version == "1_0" else (17, 17)
        stem, layers = CONFIGS[version]
        self.features, self.feature_info, channels = make_features(stem, layers, in_chans)
        final_conv = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(x), 1)


_COMMON = dict(
    family="squeezenet", paper=IANDOLA_2016, input_size=(3, 224, 224), dataset="imagenet",
    num_classes=1000, recipe="iandola2016", torchvision=True,
    error_source="torchvision IMAGENET1K_V1 weights",
)
_INIT = ("Kaiming-uniform init of conv1..fire9 (torchvision's); the authors' Caffe files use "
         "Xavier there (conv10 is N(0, 0.01) in both)")


@register_model(**_COMMON, params=1_248_424, macs=819_000_000,
                top1_error=100 - 58.092, top5_error=100 - 80.42, deviations=(_INIT,))
def squeezenet1_0(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_0", **kwargs)


@register_model(**_COMMON, params=1_235_496, macs=349_000_000,
                top1_error=100 - 58.178, top5_error=100 - 80.624,
                deviations=("v1.1 of the authors' release, not in the paper", _INIT))
def squeezenet1_1(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_1", **kwargs)
