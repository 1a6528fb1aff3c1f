"""GoogLeNet / Inception v1 (Szegedy et al. 2015): torchvision's form and the paper's form.

The Inception modules are usable on their own: the lecture's naive module on a 28x28x256 map
is ``InceptionNaive(256, c1=128, c3=192, c5=96)`` (-> 28x28x672), and the dimension-reduced
module is ``Inception(256, c1=128, c3_reduce=64, c3=192, c5_reduce=64, c5=96, pool_proj=64)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn

from cnnlab.models.base import Classifier, check_input
from cnnlab.registry import Paper, register_model

__all__ = [
    "BasicConv2d",
    "ConvReLU",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "INCEPTION_V1_COLUMNS",
    "Inception",
    "InceptionNaive",
    "googlenet",
    "googlenet_paper",
    "imagenet_to_unit_range",
]

GOOGLENET_PAPER = Paper(
    title="Going Deeper with Convolutions",
    authors="Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke, Rabinovich",
    year=2015,
    url="https://arxiv.org/abs/1409.4842",
)

# Table 1, Szegedy et al. 2015: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_V1_COLUMNS: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

ConvBlock = Callable[..., nn.Module]  # (in_channels, out_channels, kernel_size=, stride=, padding=)


def imagenet_to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``transform_input``: map ImageNet-normalised input (mean/std per channel)
    to the [-1, 1] scaling that the ported (Caffe/TF) GoogLeNet and Inception v3 weights
    were trained with."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    scale = torch.tensor([s / 0.5 for s in std], dtype=x.dtype, device=x.device)
    shift = torch.tensor([(m - 0.5) / 0.5 for m in mean], dtype=x.dtype, device=x.device)
    return x * scale.view(1, 3, 1, 1) + shift.view(1, 3, 1, 1)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, with torchvision's child names conv/bn.

    The BN is torchvision's addition to GoogLeNet (and Inception v3's own layer); the eps of
    1e-3 is TensorFlow's default, kept so ported weights give the same outputs.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 1,
        stride: int = 1, padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ConvReLU(nn.Module):
    """Conv (with bias) -> ReLU: the 2014 paper's layer (no batch norm existed yet)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 1,
        stride: int = 1, padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class InceptionNaive(nn.Module):
    """The naive Inception module (Szegedy et al. 2015, Fig. 2a).

    1x1, 3x3 and 5x5 convolutions and a 3x3 max pool side by side on the same input,
    concatenated: ``c1 + c3 + c5 + in_channels`` output channels at the input's size. The pool
    branch passes all input channels through, which is why stacking these modules blows up.
    """

    def __init__(
        self, in_channels: int, c1: int, c3: int, c5: int, *, conv_block: ConvBlock = ConvReLU
    ) -> None:
        super().__init__()
        self.branch1 = conv_block(in_channels, c1, kernel_size=1)
        self.branch2 = conv_block(in_channels, c3, kernel_size=3, padding=1)
        self.branch3 = conv_block(in_channels, c5, kernel_size=5, padding=2)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1)
        self.out_channels = c1 + c3 + c5 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class Inception(nn.Module):
    """Inception module with dimension reductions (Szegedy et al. 2015, Fig. 2b).

    1x1 convolutions reduce the channels before the 3x3 and 5x5 convolutions and project the
    max-pooled branch: ``c1 + c3 + c5 + pool_proj`` output channels. ``c5_kernel=3`` builds
    torchvision's form, whose "5x5" branch is a 3x3 convolution (pytorch/vision#906).
    """

    def __init__(
        self, in_channels: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int,
        pool_proj: int, *, conv_block: ConvBlock = ConvReLU, c5_kernel: int = 5,
    ) -> None:
        super().__init__()
        self.branch1 = conv_block(in_channels, c1, kernel_size=1)
        self.branch2 = nn.Sequential(
            conv_block(in_channels, c3_reduce, kernel_size=1),
            conv_block(c3_reduce, c3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            conv_block(in_channels, c5_reduce, kernel_size=1),
            conv_block(c5_reduce, c5, kernel_size=c5_kernel, padding=c5_kernel // 2),
        )
        self.branch4 = nn.Sequential(
            # ceil_mode changes nothing at stride 1; kept as torchvision (and Caffe) has it.
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            conv_block(in_channels, pool_proj, kernel_size=1),
        )
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on 4a and 4d (Szegedy et al. 2015, Sec. 5).

    Paper: 5x5/3 average pool (4x4 map from 14x14), 1x1 conv with 128 filters, FC 1024 + ReLU,
    dropout 0.7, linear classifier. torchvision pools adaptively to 4x4 instead, so any input
    size works, and uses a conv-BN-ReLU.
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, conv_block: ConvBlock, adaptive_pool: bool,
        dropout: float = 0.7,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4) if adaptive_pool else nn.AvgPool2d(5, stride=3)
        self.conv = conv_block(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        if x.shape[-2:] != (4, 4):
            raise ValueError(
                "auxiliary head: the 5x5/3 average pool must give a 4x4 map (a 14x14 to 16x16 "
                f"input to the head, from a ~224x224 image), got {tuple(x.shape[-2:])}"
            )
        x = torch.flatten(self.conv(x), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNetOutputs(NamedTuple):
    """Training-mode output with auxiliary heads, in torchvision's order."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor | None
    aux_logits1: torch.Tensor | None


class GoogLeNet(Classifier):
    """GoogLeNet (Szegedy et al. 2015, Table 1 and Fig. 3).

    ``paper=False`` is torchvision's form (same state_dict keys): BN after every convolution,
    3x3 in the "5x5" branch, no LRN, a 2x2/2 pool after 4e, dropout 0.2. ``paper=True`` is
    the network as published: biases and no BN, real 5x5 branches, LRN in the stem, a 3x3/2
    pool after 4e, dropout 0.4. Both round pool sizes up (Caffe's rule, ``ceil_mode``) so that
    224x224 gives Table 1's 56/28/14/7 maps.

    With ``aux_logits=True`` the two auxiliary heads (on 4a and 4d) are built; in training
    mode ``forward`` then returns ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` like
    torchvision, and plain logits in eval mode.
    """

    aux_classifier_paths = ("aux1.fc2", "aux2.fc2")  # reset with the classifier (when built)

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        paper: bool = False,
        aux_logits: bool = False,
        transform_input: bool = False,
        init_weights: bool = True,
        dropout: float | None = None,
        dropout_aux: float = 0.7,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        # The paper's 3x3/2 pool after 4e needs a 2x2 map there: 31x31 input, not 15x15.
        self.min_input_size = (31, 31) if paper else (15, 15)
        self.paper = paper
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        conv: ConvBlock = ConvReLU if paper else BasicConv2d
        c5_kernel = 5 if paper else 3  # torchvision's 3x3 "5x5": pytorch/vision#906

        # Stem, Table 1: conv 7x7/2, max pool 3x3/2, (LRN), conv 1x1 + 3x3, (LRN), max pool 3x3/2.
        self.conv1 = conv(in_chans, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # LRN as in the BVLC reference model (size 5, alpha 1e-4, beta 0.75); torchvision drops it.
        self.lrn1 = nn.LocalResponseNorm(5, 1e-4, 0.75) if paper else nn.Identity()
        self.conv2 = conv(64, 64, kernel_size=1)
        self.conv3 = conv(64, 192, kernel_size=3, padding=1)
        self.lrn2 = nn.LocalResponseNorm(5, 1e-4, 0.75) if paper else nn.Identity()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        channels = 192
        widths: dict[str, int] = {}
        for name, columns in INCEPTION_V1_COLUMNS.items():
            module = Inception(channels, *columns, conv_block=conv, c5_kernel=c5_kernel)
            self.add_module(f"inception{name}", module)
            channels = widths[name] = module.out_channels
            if name == "3b":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif name == "4e":
                # Table 1: max pool 3x3/2; torchvision: 2x2/2 (same 7x7 map from 14x14).
                self.maxpool4 = nn.MaxPool2d(*((3, 2) if paper else (2, 2)), ceil_mode=True)

        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            self.aux1, self.aux2 = (
                InceptionAux(widths[tap], num_classes, conv_block=conv, adaptive_pool=not paper,
                             dropout=dropout_aux)
                for tap in ("4a", "4d")
            )

        # Table 1: avg pool 7x7/1 (adaptive here so other sizes work), dropout 40%, linear.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout((0.4 if paper else 0.2) if dropout is None else dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels

        self.feature_info = [
            {"channels": 64, "reduction": 2, "module": "conv1"},
            {"channels": 192, "reduction": 4, "module": "lrn2" if paper else "conv3"},
            {"channels": widths["3b"], "reduction": 8, "module": "inception3b"},
            {"channels": widths["4e"], "reduction": 16, "module": "inception4e"},
            {"channels": widths["5b"], "reduction": 32, "module": "inception5b"},
        ]
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.paper:
                    # The paper states no initialisation; the BVLC reference model used
                    # Xavier (Glorot 2010) weights and 0.2 biases.
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0.2)
                else:  # torchvision's init_weights=True
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stages(
        self, x: torch.Tensor, with_aux: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.transform_input:
            x = imagenet_to_unit_range(x)
        x = self._run(x, "conv1", "maxpool1", "lrn1", "conv2", "conv3",
                      "lrn2", "maxpool2", "inception3a", "inception3b", "maxpool3", "inception4a")
        aux1 = self.aux1(x) if with_aux and self.aux1 is not None else None
        x = self._run(x, "inception4b", "inception4c", "inception4d")
        aux2 = self.aux2(x) if with_aux and self.aux2 is not None else None
        x = self._run(x, "inception4e", "maxpool4", "inception5a", "inception5b")
        return x, aux2, aux1

    def _run(self, x: torch.Tensor, *names: str) -> torch.Tensor:
        for name in names:
            x = self.get_submodule(name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._stages(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:  # type: ignore[override]
        check_input(self, x)
        with_aux = self.training and self.aux_logits
        x, aux2, aux1 = self._stages(x, with_aux)
        logits = self.forward_head(x)
        return GoogLeNetOutputs(logits, aux2, aux1) if with_aux else logits


_TORCHVISION_DEVIATIONS = (
    "batch norm (eps 1e-3) after every convolution, convolutions without bias",
    "the '5x5' branch of every Inception module is a 3x3 convolution (pytorch/vision#906)",
    "no local response normalisation in the stem",
    "2x2/2 max pool after inception 4e instead of Table 1's 3x3/2 (same 7x7 map)",
    "dropout 0.2 before the classifier instead of 0.4",
    "auxiliary heads pool adaptively to 4x4 instead of 5x5/3 and use conv-BN-ReLU",
    "aux_logits defaults to False: the heads exist only for training (torchvision drops them "
    "from its pretrained model)",
    "ceil_mode max pools (Caffe's rounding, so 224x224 gives Table 1's 56/28/14/7 maps)",
    "adaptive average pool instead of 7x7/1, so other input sizes work",
)


@register_model(
    family="inception",
    paper=GOOGLENET_PAPER,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    params=6_624_904,
    macs=1_498_000_000,  # torchvision: 1.498 GFLOPs (= GMACs)
    top1_error=100 - 69.778,
    top5_error=100 - 89.530,
    error_source="torchvision IMAGENET1K_V1 weights (ported from the paper's)",
    recipe="szegedy2014",
    torchvision=True,
    deviations=_TORCHVISION_DEVIATIONS,
)
def googlenet(*, aux_logits: bool = False, **kwargs) -> GoogLeNet:
    """torchvision's GoogLeNet; ``aux_logits=True`` adds the two training-time heads."""
    return GoogLeNet(aux_logits=aux_logits, **kwargs)


@register_model(
    family="inception",
    paper=GOOGLENET_PAPER,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    params=6_998_552,  # computed from Table 1 with biases; 13,378,280 with both aux heads
    # Table 1 sums to 1.502G, but its conv1 row (34M) is far below 7x7x3x64 at 112x112
    # (118M); the layers give 1.58G (tests/test_googlenet.py), so none is declared.
    macs=None,
    top5_error=10.07,
    error_source="Szegedy et al. 2015, Table 3: one model, one crop (ILSVRC 2014 validation)",
    recipe="szegedy2014",
    deviations=(
        "adaptive average pool instead of 7x7/1, so other input sizes work",
        "LRN hyper-parameters (size 5, alpha 1e-4, beta 0.75) and the Xavier/0.2-bias "
        "initialisation come from the BVLC reference model; the paper states neither",
        "aux_logits defaults to False (the heads serve training only, Sec. 5)",
    ),
)
def googlenet_paper(*, aux_logits: bool = False, **kwargs) -> GoogLeNet:
    """GoogLeNet as published: real 5x5 branches, biases, no BN, LRN, dropout 0.4."""
    return GoogLeNet(paper=True, aux_logits=aux_logits, **kwargs)
