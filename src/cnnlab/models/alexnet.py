"""AlexNet (Krizhevsky, Sutskever, Hinton 2012), in torchvision's single-tower form."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

ALEXNET_PAPER = Paper(
    title="ImageNet Classification with Deep Convolutional Neural Networks",
    authors="Krizhevsky, Sutskever, Hinton",
    year=2012,
    url="https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks",
)


class AlexNet(Classifier):
    """torchvision's AlexNet: 64-192-384-256-256 convolutions, no LRN, one tower.

    This is the "one weird trick" variant (Krizhevsky 2014) that torchvision ships; the
    2012 form with LRN and two towers is ``alexnet_2012``. Initialisation follows the 2012
    paper (Sec. 5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC
    layers, 0 elsewhere.
    """

    min_input_size = (63, 63)

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        self.feature_info = [
            {"channels": 64, "reduction": 8, "module": "features.2"},
            {"channels": 192, "reduction": 16, "module": "features.5"},
            {"channels": 256, "reduction": 32, "module": "features.12"},
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        bias_one = {"features.3", "features.8", "features.10", "classifier.1", "classifier.4"}
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 1.0 if name in bias_one else 0.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))


@register_model(
    family="alexnet",
    paper=ALEXNET_PAPER,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    params=61_100_840,
    macs=714_000_000,  # torchvision: 0.714 GFLOPs (= GMACs of conv and linear layers)
    top1_error=100 - 56.522,
    top5_error=100 - 79.066,
    error_source="torchvision IMAGENET1K_V1 weights",
    recipe="krizhevsky2012",
    torchvision=True,
    deviations=(
        "torchvision's one-tower form (Krizhevsky 2014): 64/192 filters in conv1/conv2, no LRN",
        "adaptive 6x6 average pool before the classifier so other input sizes work",
        "224x224 input with padding 2 in conv1 (the paper's 227/224 arithmetic differs)",
    ),
)
def alexnet(**kwargs) -> AlexNet:
    return AlexNet(**kwargs)
