"""Inception v3 (Szegedy et al. 2016), torchvision form; BN-Inception (Ioffe & Szegedy 2015).

Inception v3's modules follow the paper's Figs. 5-7 and Table 1 with the released model's
widths (which torchvision ports); BN-Inception follows Fig. 5 of the batch-norm paper.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.layers import ConvBNAct
from cnnlab.models.base import Classifier, check_input
from cnnlab.models.googlenet import BasicConv2d, imagenet_to_unit_range
from cnnlab.registry import Paper, register_model

__all__ = ["BN_INCEPTION_COLUMNS", "BNInception", "Inception3", "InceptionOutputs",
           "bn_inception", "inception_v3"]

INCEPTION_V3_PAPER = Paper(
    title="Rethinking the Inception Architecture for Computer Vision",
    authors="Szegedy, Vanhoucke, Ioffe, Shlens, Wojna",
    year=2016,
    url="https://arxiv.org/abs/1512.00567",
)
BN_INCEPTION_PAPER = Paper(
    title="Batch Normalization: Accelerating Deep Network Training by Reducing Internal "
    "Covariate Shift",
    authors="Ioffe, Szegedy",
    year=2015,
    url="https://arxiv.org/abs/1502.03167",
)


# --- Inception v3 -----------------------------------------------------------------------------


class _Mixed(nn.Module):
    """A torchvision "Mixed_*" module; ``out_channels`` is the width of its concatenation."""

    out_channels: int


class InceptionA(_Mixed):
    """35x35 module (Fig. 5): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1.

    The paper's Fig. 5 replaces the 5x5 by two 3x3; the released model (and torchvision)
    keeps a 5x5 branch next to the double-3x3 one.
    """

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)
        self.out_channels = 64 + 64 + 96 + pool_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b5, b3, pool], 1)


class InceptionB(_Mixed):
    """35x35 -> 17x17 grid reduction (Fig. 10): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)
        self.out_channels = 384 + 96 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(_Mixed):
    """17x17 module with factorised 7x7 convolutions (Fig. 6, n = 7): 1x7 then 7x1."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)
        self.out_channels = 4 * 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b7, d, pool], 1)


class InceptionD(_Mixed):
    """17x17 -> 8x8 grid reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)
        self.out_channels = 320 + 192 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(_Mixed):
    """8x8 module with expanded filter banks (Fig. 7): 1x3 and 3x1 side by side."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)
        self.out_channels = 320 + 768 + 768 + 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b3, d, pool], 1)


class InceptionAux(nn.Module):
    """Auxiliary head on the last 17x17 map (Fig. 8): 5x5/3 avg pool, 1x1 conv 128,
    5x5 conv 768 (to 1x1), linear. It needs a 17x17 map, i.e. a 299x299 input."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 17:
            raise ValueError(
                "inception_v3: the auxiliary head (training mode) needs the 17x17 Mixed_6e map "
                f"of a 299x299 input, got a {tuple(x.shape[-2:])} map; use eval() or "
                "aux_logits=False for smaller inputs"
            )
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionOutputs(NamedTuple):
    """Training-mode output with the auxiliary head, in torchvision's order."""

    logits: torch.Tensor
    aux_logits: torch.Tensor | None


# Mixed_5b..Mixed_7c: (module, its width argument) as the released model has them; Table 1 of
# the paper draws 3 x Inception (Fig. 5), 5 x Inception (Fig. 6), 2 x Inception (Fig. 7).
_V3_LAYOUT: tuple[tuple[str, type[_Mixed], int | None], ...] = (
    ("Mixed_5b", InceptionA, 32),
    ("Mixed_5c", InceptionA, 64),
    ("Mixed_5d", InceptionA, 64),
    ("Mixed_6a", InceptionB, None),
    ("Mixed_6b", InceptionC, 128),
    ("Mixed_6c", InceptionC, 160),
    ("Mixed_6d", InceptionC, 160),
    ("Mixed_6e", InceptionC, 192),
    ("Mixed_7a", InceptionD, None),
    ("Mixed_7b", InceptionE, None),
    ("Mixed_7c", InceptionE, None),
)


class Inception3(Classifier):
    """Inception v3 (Szegedy et al. 2016, Table 1), torchvision's module names and order.

    With ``aux_logits`` (the default, as in torchvision) training mode returns
    ``InceptionOutputs(logits, aux_logits)``; the auxiliary head then needs a 299x299 input
    (``min_train_input_size``). Eval mode returns logits from 75x75 up.
    """

    aux_classifier_paths = ("AuxLogits.fc",)  # reset with the classifier (when built)

    min_input_size = (75, 75)

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        aux_logits: bool = True,
        transform_input: bool = False,
        init_weights: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        if aux_logits:
            self.min_train_input_size = (299, 299)
        # Stem, Table 1: conv 3x3/2, conv 3x3, conv 3x3 padded, pool, (1x1 + 3x3), pool.
        self.Conv2d_1a_3x3 = BasicConv2d(in_chans, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, stride=2)
        channels, widths = 192, {}
        self._mixed = [name for name, _, _ in _V3_LAYOUT]
        for name, block, width in _V3_LAYOUT:
            module = block(channels) if width is None else block(channels, width)
            self.add_module(name, module)
            channels = widths[name] = module.out_channels
            if name == "Mixed_6e":
                self.AuxLogits = InceptionAux(channels, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        self.feature_info = [
            {"channels": 64, "reduction": 2, "module": "Conv2d_2b_3x3"},
            {"channels": 192, "reduction": 4, "module": "Conv2d_4a_3x3"},
            {"channels": widths["Mixed_5d"], "reduction": 8, "module": "Mixed_5d"},
            {"channels": widths["Mixed_6e"], "reduction": 16, "module": "Mixed_6e"},
            {"channels": widths["Mixed_7c"], "reduction": 32, "module": "Mixed_7c"},
        ]
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's init_weights=True: truncated normal, std 0.1 (0.01 for the aux 5x5
        # conv, 0.001 for the aux classifier, as the TF-slim reference sets them).
        stds = {"AuxLogits.conv1.conv": 0.01, "AuxLogits.fc": 0.001}
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=stds.get(name, 0.1), a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stages(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.transform_input:
            x = imagenet_to_unit_range(x)
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        aux = None
        for name in self._mixed:
            x = self.get_submodule(name)(x)
            if name == "Mixed_6e" and with_aux and self.AuxLogits is not None:
                aux = self.AuxLogits(x)
        return x, aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._stages(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.dropout(self.avgpool(x)), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | InceptionOutputs:  # type: ignore[override]
        check_input(self, x)
        with_aux = self.training and self.aux_logits
        x, aux = self._stages(x, with_aux)
        logits = self.forward_head(x)
        return InceptionOutputs(logits, aux) if with_aux else logits


@register_model(
    family="inception",
    paper=INCEPTION_V3_PAPER,
    input_size=(3, 299, 299),
    dataset="imagenet",
    num_classes=1000,
    params=27_161_264,
    macs=5_713_000_000,  # torchvision: 5.713 GFLOPs (= GMACs)
    top1_error=100 - 77.294,
    top5_error=100 - 93.450,
    error_source="torchvision IMAGENET1K_V1 weights (ported from TF-slim)",
    recipe="szegedy2016",
    torchvision=True,
    deviations=(
        "the released (TF-slim) model's stem and widths, as torchvision ports them: a 5x5 "
        "branch stays in the 35x35 modules next to the double 3x3 (Fig. 5 replaces it), the "
        "35x35 modules give 256/288/288 channels, and four 17x17 modules follow the grid "
        "reduction where Table 1 lists 5 x Inception",
        "batch norm with eps 1e-3 (TensorFlow's) after every convolution",
        "the auxiliary head has BN in its convolutions (the paper's 'BN-auxiliary', Sec. 7) "
        "and runs in training mode only; it needs 299x299 inputs",
        "adaptive average pool, so inputs from 75x75 work in eval mode",
    ),
)
def inception_v3(**kwargs) -> Inception3:
    return Inception3(**kwargs)


# --- BN-Inception -----------------------------------------------------------------------------

# Fig. 5, Ioffe & Szegedy 2015: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3,
# pool type, pool projection (None: "pass through"), stride. Modules 3c and 4e halve the grid.
BN_INCEPTION_COLUMNS: dict[str, tuple[int, int, int, int, int, str, int | None, int]] = {
    "3a": (64, 64, 64, 64, 96, "avg", 32, 1),
    "3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "3c": (0, 128, 160, 64, 96, "max", None, 2),
    "4a": (224, 64, 96, 96, 128, "avg", 128, 1),
    "4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "4c": (160, 128, 160, 128, 160, "avg", 128, 1),
    "4d": (96, 128, 192, 160, 192, "avg", 128, 1),
    "4e": (0, 128, 192, 192, 256, "max", None, 2),
    "5a": (352, 192, 320, 160, 224, "avg", 128, 1),
    "5b": (352, 192, 320, 192, 224, "max", 128, 1),
}


class InceptionBN(nn.Module):
    """BN-Inception module (Ioffe & Szegedy 2015, Sec. 4.2 and Fig. 5).

    GoogLeNet's module with the 5x5 replaced by two 3x3 convolutions, BN after every
    convolution, average or max pooling, and stride-2 modules whose pool passes through.
    """

    def __init__(
        self, in_channels: int, c1: int, c3_reduce: int, c3: int, d3_reduce: int, d3: int,
        pool: str, pool_proj: int | None, stride: int = 1,
    ) -> None:
        super().__init__()
        self.branch1 = ConvBNAct(in_channels, c1, 1) if c1 else None
        self.branch2 = nn.Sequential(
            ConvBNAct(in_channels, c3_reduce, 1), ConvBNAct(c3_reduce, c3, 3, stride)
        )
        self.branch3 = nn.Sequential(
            ConvBNAct(in_channels, d3_reduce, 1), ConvBNAct(d3_reduce, d3, 3),
            ConvBNAct(d3, d3, 3, stride),
        )
        # ceil_mode: the TF "SAME" rounding, so 28x28 halves to Fig. 5's 14x14.
        pool_layer = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        pooling = pool_layer(3, stride=stride, padding=1 if stride == 1 else 0, ceil_mode=True)
        if pool_proj is None:
            self.branch4: nn.Module = pooling
        else:
            self.branch4 = nn.Sequential(pooling, ConvBNAct(in_channels, pool_proj, 1))
        self.out_channels = c1 + c3 + d3 + (in_channels if pool_proj is None else pool_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch2(x), self.branch3(x), self.branch4(x)]
        if self.branch1 is not None:
            branches.insert(0, self.branch1(x))
        return torch.cat(branches, 1)


class BNInception(Classifier):
    """BN-Inception / Inception v2 (Ioffe & Szegedy 2015, Fig. 5).

    Stem as GoogLeNet's (7x7/2 conv, pool, 1x1 + 3x3 convs, pool) without LRN, then Fig. 5's
    ten modules, global average pool and a linear classifier. No dropout (Sec. 4.2.1
    removes it).
    """

    min_input_size = (31, 31)

    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.stem = nn.Sequential(
            ConvBNAct(in_chans, 64, 7, stride=2),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            ConvBNAct(64, 64, 1),
            ConvBNAct(64, 192, 3),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        channels, stages = 192, dict[str, InceptionBN]()
        for name, columns in BN_INCEPTION_COLUMNS.items():
            stages[name] = InceptionBN(channels, *columns)
            channels = stages[name].out_channels
        self.blocks = nn.ModuleDict(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # Fig. 5: avg pool 7x7 at 224x224
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        widths = {n: m.out_channels for n, m in stages.items()}
        self.feature_info = [
            {"channels": 192, "reduction": 8, "module": "stem"},
            {"channels": widths["3b"], "reduction": 8, "module": "blocks.3b"},
            {"channels": widths["4d"], "reduction": 16, "module": "blocks.4d"},
            {"channels": widths["5b"], "reduction": 32, "module": "blocks.5b"},
        ]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks.values():
            x = block(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model(
    family="inception",
    paper=BN_INCEPTION_PAPER,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    params=11_285_224,  # computed from Fig. 5's columns (tests/test_inception.py)
    macs=None,
    top1_error=25.2,
    top5_error=7.82,
    error_source="Ioffe & Szegedy 2015, Table 3: BN-Inception, single crop (validation)",
    recipe="ioffe2015",
    deviations=(
        "Fig. 5's columns are followed where its printed output sizes disagree with them: "
        "4c and 4d give 608 channels (not 576) and 4e 1056 (not 1024)",
        "convolutions without bias (BN's shift replaces it); BN eps 1e-5",
        "adaptive average pool instead of 7x7, so other input sizes work",
        "no auxiliary heads",
    ),
)
def bn_inception(**kwargs) -> BNInception:
    """BN-Inception (Inception v2 in later papers), Ioffe & Szegedy 2015, Fig. 5."""
    return BNInception(**kwargs)
