"""VGG (Simonyan & Zisserman 2015): configurations A-E of Table 1 as lists of layers.

torchvision-compatible ``vgg11/13/16/19`` (configs A, B, D, E) and their ``_bn`` forms
(batch norm after every conv, not in the paper); plus the paper's ``vgg11_lrn`` (A-LRN) and
``vgg16_c`` (config C, whose third conv in blocks 3-5 is 1x1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from cnnlab.models.alexnet import paper_lrn
from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

SIMONYAN_2015 = Paper(
    title="Very Deep Convolutional Networks for Large-Scale Image Recognition",
    authors="Simonyan, Zisserman",
    year=2015,
    url="https://arxiv.org/abs/1409.1556",
)

# Table 1. An int is a 3x3 conv of that width (stride 1, pad 1), (width, 1) a 1x1 conv,
# "M" a 2x2/2 max-pool, "LRN" Krizhevsky's local response normalisation.
Layer = int | tuple[int, int] | str
CONFIGS: dict[str, list[Layer]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M",
          512, 512, (512, 1), "M", 512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
          512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_features(
    config: Sequence[Layer], in_chans: int, batch_norm: bool
) -> tuple[nn.Sequential, list[dict]]:
    """The conv stack of one configuration, and the feature_info of its five pools.

    Flat numbering (features.0, features.1, ...) as in torchvision, so state_dicts match.
    """
    layers: list[nn.Module] = []
    stages: list[dict] = []
    channels = in_chans
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            stages.append({"channels": channels, "reduction": 2 ** (len(stages) + 1),
                           "module": f"features.{len(layers) - 1}"})
        elif item == "LRN":
            layers.append(paper_lrn())
        elif not isinstance(item, str):
            width, k = (item, 3) if isinstance(item, int) else item
            layers.append(nn.Conv2d(channels, width, kernel_size=k, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            channels = width
    return nn.Sequential(*layers), stages


class VGG(Classifier):
    """Five conv blocks of Table 1, then FC-4096, FC-4096 (dropout 0.5, Sec. 3.1), FC-1000.

    The 7x7 adaptive average pool (torchvision's) is an identity at the paper's 224x224.
    Init: the paper trains A from N(0, 0.01) and starts deeper nets from A's layers; it adds
    (Sec. 3.1) that Glorot & Bengio's init works without that pre-training. The default here is
    torchvision's Kaiming-normal (fan-out) convs and N(0, 0.01) FC layers, which trains every
    depth from scratch; ``init="glorot"`` gives the paper's alternative.
    """

    classifier_path = "classifier.6"  # the last layer: features -> class scores

    min_input_size = (32, 32)

    def __init__(
        self,
        config: Sequence[Layer],
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        batch_norm: bool = False,
        dropout: float = 0.5,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if init not in ("kaiming", "glorot"):
            raise ValueError(f"vgg: init must be 'kaiming' or 'glorot', got {init!r}")
        self.in_chans = in_chans
        self.features, self.feature_info = make_features(config, in_chans, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if init == "glorot":
                    nn.init.xavier_uniform_(m.weight)
                elif isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _vgg(config: str, batch_norm: bool, **kwargs) -> VGG:
    return VGG(CONFIGS[config], batch_norm=batch_norm, **kwargs)


_TORCHVISION = dict(
    family="vgg", paper=SIMONYAN_2015, input_size=(3, 224, 224), dataset="imagenet",
    num_classes=1000, recipe="simonyan2014", torchvision=True,
    error_source="torchvision IMAGENET1K_V1 weights",
)
_ADAPTIVE_POOL = "adaptive 7x7 average pool before fc6 (torchvision), an identity at 224x224"
_BN = "batch norm after every conv (torchvision's _bn forms; not in the paper)"
_INIT = ("Kaiming-normal (fan-out) conv init by default (torchvision's), so every depth trains "
         "from scratch; init='glorot' is the paper's alternative to initialising from net A")
_DEV = (_ADAPTIVE_POOL, _INIT)
_DEV_BN = (_ADAPTIVE_POOL, _BN, _INIT)


@register_model(**_TORCHVISION, params=132_863_336, macs=7_609_000_000,
                top1_error=100 - 69.02, top5_error=100 - 88.628, deviations=_DEV)
def vgg11(**kwargs) -> VGG:
    return _vgg("A", False, **kwargs)


@register_model(**_TORCHVISION, params=132_868_840, macs=7_609_000_000,
                top1_error=100 - 70.37, top5_error=100 - 89.81,
                deviations=_DEV_BN)
def vgg11_bn(**kwargs) -> VGG:
    return _vgg("A", True, **kwargs)


@register_model(**_TORCHVISION, params=133_047_848, macs=11_308_000_000,
                top1_error=100 - 69.928, top5_error=100 - 89.246, deviations=_DEV)
def vgg13(**kwargs) -> VGG:
    return _vgg("B", False, **kwargs)


@register_model(**_TORCHVISION, params=133_053_736, macs=11_308_000_000,
                top1_error=100 - 71.586, top5_error=100 - 90.374,
                deviations=_DEV_BN)
def vgg13_bn(**kwargs) -> VGG:
    return _vgg("B", True, **kwargs)


@register_model(**_TORCHVISION, params=138_357_544, macs=15_470_000_000,
                top1_error=100 - 71.592, top5_error=100 - 90.382, deviations=_DEV)
def vgg16(**kwargs) -> VGG:
    return _vgg("D", False, **kwargs)


@register_model(**_TORCHVISION, params=138_365_992, macs=15_470_000_000,
                top1_error=100 - 73.36, top5_error=100 - 91.516,
                deviations=_DEV_BN)
def vgg16_bn(**kwargs) -> VGG:
    return _vgg("D", True, **kwargs)


@register_model(**_TORCHVISION, params=143_667_240, macs=19_632_000_000,
                top1_error=100 - 72.376, top5_error=100 - 90.876, deviations=_DEV)
def vgg19(**kwargs) -> VGG:
    return _vgg("E", False, **kwargs)


@register_model(**_TORCHVISION, params=143_678_248, macs=19_632_000_000,
                top1_error=100 - 74.218, top5_error=100 - 91.842,
                deviations=_DEV_BN)
def vgg19_bn(**kwargs) -> VGG:
    return _vgg("E", True, **kwargs)


# The paper's configurations that torchvision does not ship. Errors: Table 3 (single test
# scale, training and test scale 256, ILSVRC-2012 val).
_PAPER_ONLY = dict(
    family="vgg", paper=SIMONYAN_2015, input_size=(3, 224, 224), dataset="imagenet",
    num_classes=1000, recipe="simonyan2014", deviations=_DEV,
)


@register_model(**_PAPER_ONLY, params=132_863_336, top1_error=29.7, top5_error=10.5,
                error_source="Simonyan & Zisserman 2015, Table 3: A-LRN, S=256, Q=256, val")
def vgg11_lrn(**kwargs) -> VGG:
    return _vgg("A-LRN", False, **kwargs)


@register_model(**_PAPER_ONLY, params=133_638_952, top1_error=28.1, top5_error=9.4,
                error_source="Simonyan & Zisserman 2015, Table 3: C, S=256, Q=256, val")
def vgg16_c(**kwargs) -> VGG:
    return _vgg("C", False, **kwargs)
