"""Network in Network (Lin, Chen, Yan 2014): mlpconv blocks and global average pooling.

An mlpconv block (Sec. 3.1) is a conv followed by two 1x1 convs, each with ReLU: a small
MLP slid over the image. The last block has one map per class and global average pooling
turns those "confidence maps" into logits, with no fully connected layer (Sec. 3.2).

- ``nin_cifar``: the paper's CIFAR-10 network (Sec. 4.2), as the authors' released
  definition has it: 192-160-96 / 192-192-192 / 192-192-10, max-pool then average-pool
  (3x3/2, rounding up), dropout 0.5 after the first two blocks.
- ``nin``: the ImageNet NiN of the Caffe Model Zoo (the authors' NIN-Imagenet, not in the
  paper): 96-96-96 / 256-256-256 / 384-384-384 / 1024-1024-1000, AlexNet-like strides.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn

from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

LIN_2014 = Paper(
    title="Network In Network",
    authors="Lin, Chen, Yan",
    year=2014,
    url="https://arxiv.org/abs/1312.4400",
)


def mlpconv(
    in_channels: int, widths: Sequence[int], kernel_size: int, stride: int = 1, padding: int = 0
) -> tuple[nn.Sequential, int]:
    """conv k x k -> ReLU -> (1x1 conv -> ReLU) x 2; returns the block and its output width."""
    conv_width, *mlp_widths = widths
    layers = OrderedDict(
        conv=nn.Conv2d(in_channels, conv_width, kernel_size, stride, padding),
        relu=nn.ReLU(inplace=True),
    )
    channels = conv_width
    for i, width in enumerate(mlp_widths, start=1):
        layers[f"cccp{i}"] = nn.Conv2d(channels, width, kernel_size=1)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
        channels = width
    return nn.Sequential(layers), channels


# One row per mlpconv block: (conv and two 1x1 widths, kernel, stride, padding, then what
# follows the block: "max"/"avg" 3x3/2 pooling or None, and dropout after it).
Block = tuple[tuple[int, int, int], int, int, int, str | None, float]
CIFAR_BLOCKS: list[Block] = [
    ((192, 160, 96), 5, 1, 2, "max", 0.5),
    ((192, 192, 192), 5, 1, 2, "avg", 0.5),
    ((192, 192, 10), 3, 1, 1, None, 0.0),
]
IMAGENET_BLOCKS: list[Block] = [
    ((96, 96, 96), 11, 4, 0, "max", 0.0),
    ((256, 256, 256), 5, 1, 2, "max", 0.0),
    ((384, 384, 384), 3, 1, 1, "max", 0.5),
    ((1024, 1024, 1000), 3, 1, 1, None, 0.0),
]


class NiN(Classifier):
    """mlpconv blocks -> the last block's per-class maps -> global average pooling.

    The last block's third layer has ``num_classes`` maps (and keeps its ReLU, as in the
    authors' definitions). Pools round up (Caffe), so 32 -> 16 -> 8 on CIFAR and
    224 -> 54 -> 27 -> 13 -> 6 on ImageNet. Init: Kaiming-normal convs, biases 0 (the
    released Caffe files draw Gaussians with hand-set standard deviations).
    """

    def __init__(
        self,
        blocks: Sequence[Block],
        num_classes: int,
        in_chans: int = 3,
        *,
        min_input_size: tuple[int, int],
        first_reduction: int,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.min_input_size = min_input_size
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        self.feature_info = []
        channels, reduction = in_chans, first_reduction
        for index, (widths, kernel, stride, padding, pool, dropout) in enumerate(blocks, 1):
            if index == len(blocks):
                widths = (*widths[:-1], num_classes)
            block, channels = mlpconv(channels, widths, kernel, stride, padding)
            stages[f"block{index}"] = block
            name = f"block{index}"
            if pool is not None:
                pool_cls = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
                stages[f"pool{index}"] = pool_cls(kernel_size=3, stride=2, ceil_mode=True)
                name, reduction = f"pool{index}", reduction * 2
            if dropout:
                stages[f"drop{index}"] = nn.Dropout(dropout)
            self.feature_info.append(
                {"channels": channels, "reduction": reduction, "module": f"features.{name}"})
        self.features = nn.Sequential(stages)
        self.classifier_path = f"features.block{len(blocks)}.cccp2"  # one map per class
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.global_pool(x), 1)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        # the per-class maps are the last stage's output
        self.feature_info[-1]["channels"] = num_classes or self.num_pooled_features()


@register_model(
    family="nin",
    paper=LIN_2014,
    input_size=(3, 32, 32),
    dataset="cifar10",
    num_classes=10,
    params=966_986,
    top1_error=10.41,
    error_source=(
        "Lin et al. 2014, Table 1: CIFAR-10 test error of NIN + Dropout without data "
        "augmentation (8.81% with translation and flipping)"
    ),
    recipe="lin2014_cifar",
    deviations=(
        "layer widths and pooling types from the authors' released Caffe definition "
        "(the paper does not list them)",
        "Kaiming-normal init instead of the released hand-set Gaussians",
    ),
)
def nin_cifar(num_classes: int = 10, **kwargs) -> NiN:
    return NiN(CIFAR_BLOCKS, num_classes, min_input_size=(4, 4), first_reduction=1, **kwargs)


@register_model(
    family="nin",
    paper=LIN_2014,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    params=7_595_176,
    recipe="krizhevsky2012",
    deviations=(
        "not in the paper: the authors' NIN-Imagenet from the Caffe Model Zoo",
        "Kaiming-normal init instead of the released hand-set Gaussians",
    ),
)
def nin(num_classes: int = 1000, **kwargs) -> NiN:
    return NiN(IMAGENET_BLOCKS, num_classes, min_input_size=(39, 39), first_reduction=4,
               **kwargs)
