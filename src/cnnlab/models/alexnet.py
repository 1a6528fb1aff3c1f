"""AlexNet (Krizhevsky, Sutskever, Hinton 2012): torchvision's form and the 2012 original."""

from __future__ import annotations

from collections import OrderedDict

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

    classifier_path = "classifier.6"  # the last layer: features -> class scores

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


def paper_lrn() -> nn.LocalResponseNorm:
    """Sec. 3.3's response normalisation, k=2, n=5, alpha=1e-4, beta=0.75.

    The paper divides by (k + alpha * sum of squares over n maps)^beta; PyTorch's
    LocalResponseNorm (like Caffe's LRN) divides by (k + alpha/n * sum)^beta, so the paper's
    alpha is passed as alpha * n = 5e-4. (Caffe's AlexNet prototxt passes 1e-4, i.e. a
    five times weaker normalisation than the paper's.)
    """
    n, alpha = 5, 1e-4
    return nn.LocalResponseNorm(size=n, alpha=alpha * n, beta=0.75, k=2.0)


class AlexNet2012(Classifier):
    """AlexNet as published (Krizhevsky et al. 2012, Sec. 3 and Fig. 2).

    227x227 input; conv 96@11x11/4 -> ReLU -> LRN -> max-pool 3/2 (overlapping, Sec. 3.4) ->
    conv 256@5x5 -> ReLU -> LRN -> pool -> conv 384@3x3 -> conv 384@3x3 -> conv 256@3x3 -> pool
    -> FC 4096 -> FC 4096 -> FC 1000, dropout 0.5 on the outputs of the two hidden FC layers
    (Sec. 4.2). The two GPU towers are ``groups=2`` in conv2, conv4 and conv5 (those layers
    only see the kernel maps on their own GPU); conv3 and the FC layers connect across both.
    Init (Sec. 5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC
    layers, 0 elsewhere.

    ``lrn=False`` drops the normalisation, ``towers=1`` makes every layer dense.
    """

    classifier_path = "classifier.fc8"  # the last layer: features -> class scores

    fixed_input_size = (227, 227)  # fc6 takes exactly pool5's 256x6x6

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        dropout: float = 0.5,
        lrn: bool = True,
        towers: int = 2,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans

        def norm() -> nn.Module:
            return paper_lrn() if lrn else nn.Identity()

        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_chans, 96, kernel_size=11, stride=4),
            relu1=nn.ReLU(inplace=True),
            norm1=norm(),
            pool1=nn.MaxPool2d(kernel_size=3, stride=2),
            conv2=nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=towers),
            relu2=nn.ReLU(inplace=True),
            norm2=norm(),
            pool2=nn.MaxPool2d(kernel_size=3, stride=2),
            conv3=nn.Conv2d(256, 384, kernel_size=3, padding=1),
            relu3=nn.ReLU(inplace=True),
            conv4=nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=towers),
            relu4=nn.ReLU(inplace=True),
            conv5=nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=towers),
            relu5=nn.ReLU(inplace=True),
            pool5=nn.MaxPool2d(kernel_size=3, stride=2),
        ))
        self.classifier = nn.Sequential(OrderedDict(
            fc6=nn.Linear(256 * 6 * 6, 4096),
            relu6=nn.ReLU(inplace=True),
            drop6=nn.Dropout(p=dropout),
            fc7=nn.Linear(4096, 4096),
            relu7=nn.ReLU(inplace=True),
            drop7=nn.Dropout(p=dropout),
            fc8=nn.Linear(4096, num_classes),
        ))
        self.feature_info = [
            {"channels": 96, "reduction": 8, "module": "features.pool1"},
            {"channels": 256, "reduction": 16, "module": "features.pool2"},
            {"channels": 256, "reduction": 32, "module": "features.pool5"},
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        bias_one = {"features.conv2", "features.conv4", "features.conv5",
                    "classifier.fc6", "classifier.fc7"}
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 1.0 if name in bias_one else 0.0)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))


@register_model(
    family="alexnet",
    paper=ALEXNET_PAPER,
    input_size=(3, 227, 227),
    dataset="imagenet",
    num_classes=1000,
    params=60_965_224,
    top1_error=40.7,
    top5_error=18.2,
    error_source="Krizhevsky et al. 2012, Table 2: 1 CNN, ILSVRC-2012 validation set",
    recipe="krizhevsky2012",
    deviations=(
        "one device: the two GPU towers are groups=2 convolutions (same connectivity and count)",
        "227x227 input (the text says 224; 227 is what makes conv1 give 55x55)",
    ),
)
def alexnet_2012(**kwargs) -> AlexNet2012:
    return AlexNet2012(**kwargs)
