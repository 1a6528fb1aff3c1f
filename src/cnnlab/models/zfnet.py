"""ZFNet (Zeiler & Fergus 2014): AlexNet re-tuned by looking at its features.

Fig. 3's model: 7x7/2 first-layer filters instead of 11x11/4 (Sec. 4.1: fewer dead and
aliased filters), dense connections (one GPU, no towers), 384-384-256 in layers 3-5.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from cnnlab.models.alexnet import paper_lrn
from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

ZEILER_2014 = Paper(
    title="Visualizing and Understanding Convolutional Networks",
    authors="Zeiler, Fergus",
    year=2014,
    url="https://arxiv.org/abs/1311.2901",
)


class ZFNet(Classifier):
    """Fig. 3 of Zeiler & Fergus 2014, with its feature-map sizes 110, 55, 26, 13, 13, 13, 6.

    224x224x3 -> conv 96@7x7/2 -> ReLU -> max-pool 3x3/2 -> contrast norm. (96x55x55)
    -> conv 256@5x5/2 -> ReLU -> pool 3x3/2 -> contrast norm. (256x13x13)
    -> conv 384@3x3 -> conv 384@3x3 -> conv 256@3x3 -> pool 3x3/2 (256x6x6)
    -> FC 4096 -> FC 4096 -> FC 1000, dropout 0.5 in layers 6 and 7 (Sec. 3.1).

    The figure's sizes fix the padding the text leaves out: conv1 pads by 1
    ((224+2-7)//2+1 = 110), conv2 by 0 ((55-5)/2+1 = 26), and the pools round up as in Caffe
    (ceil_mode: 110->55, 26->13, 13->6).
    Contrast normalisation: the paper gives no constants; AlexNet's LRN (k=2, n=5,
    alpha=1e-4, beta=0.75) is used, after each pool as in Fig. 3.
    Init (Sec. 3.1): weights 1e-2 (read as N(0, 0.01)), biases 0. The paper's renormalisation
    of conv filters whose RMS exceeds 0.1 is a training-time step, not part of the model.

    ``widths`` sets layers 3-5 (Table 2's variant (b) is 512, 1024, 512: ``zfnet_b``).
    """

    classifier_path = "classifier.fc8"  # the last layer: features -> class scores

    fixed_input_size = (224, 224)  # layer 6 takes exactly 256x6x6

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        widths: tuple[int, int, int] = (384, 384, 256),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        w3, w4, w5 = widths
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_chans, 96, kernel_size=7, stride=2, padding=1),
            relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            norm1=paper_lrn(),
            conv2=nn.Conv2d(96, 256, kernel_size=5, stride=2),
            relu2=nn.ReLU(inplace=True),
            pool2=nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            norm2=paper_lrn(),
            conv3=nn.Conv2d(256, w3, kernel_size=3, padding=1),
            relu3=nn.ReLU(inplace=True),
            conv4=nn.Conv2d(w3, w4, kernel_size=3, padding=1),
            relu4=nn.ReLU(inplace=True),
            conv5=nn.Conv2d(w4, w5, kernel_size=3, padding=1),
            relu5=nn.ReLU(inplace=True),
            pool5=nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        ))
        self.classifier = nn.Sequential(OrderedDict(
            fc6=nn.Linear(w5 * 6 * 6, 4096),
            relu6=nn.ReLU(inplace=True),
            drop6=nn.Dropout(p=dropout),
            fc7=nn.Linear(4096, 4096),
            relu7=nn.ReLU(inplace=True),
            drop7=nn.Dropout(p=dropout),
            fc8=nn.Linear(4096, num_classes),
        ))
        self.feature_info = [
            {"channels": 96, "reduction": 2, "module": "features.relu1"},
            {"channels": 96, "reduction": 4, "module": "features.norm1"},
            {"channels": 256, "reduction": 16, "module": "features.norm2"},
            {"channels": w5, "reduction": 32, "module": "features.pool5"},
        ]
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))


@register_model(
    family="zfnet",
    paper=ZEILER_2014,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    params=62_357_608,
    top1_error=38.4,
    top5_error=16.5,
    error_source=(
        "Zeiler & Fergus 2014 (ECCV), Table 2: '1 convnet as per Fig. 3', ILSVRC-2012 val "
        "(36.0/14.7 in the same table is the 6-convnet ensemble)"
    ),
    recipe="zeiler2014",
    deviations=(
        "padding and ceil-mode pooling chosen to reproduce Fig. 3's map sizes (not stated)",
        "contrast normalisation as AlexNet's LRN constants (the paper gives none)",
    ),
)
def zfnet(**kwargs) -> ZFNet:
    return ZFNet(**kwargs)


@register_model(
    family="zfnet",
    paper=ZEILER_2014,
    input_size=(3, 224, 224),
    dataset="imagenet",
    num_classes=1000,
    params=107_627_624,
    top1_error=37.5,
    top5_error=16.0,
    error_source=(
        "Zeiler & Fergus 2014 (ECCV), Table 2: '1 convnet as per Fig. 3 but with layers 3,4,5: "
        "512,1024,512 maps - (b)', ILSVRC-2012 val"
    ),
    recipe="zeiler2014",
    deviations=(
        "padding and ceil-mode pooling chosen to reproduce Fig. 3's map sizes (not stated)",
        "contrast normalisation as AlexNet's LRN constants (the paper gives none)",
    ),
)
def zfnet_b(**kwargs) -> ZFNet:
    """Table 2's (b): layers 3, 4, 5 widened to 512, 1024, 512 (the lectures' "ZFNet")."""
    return ZFNet(widths=(512, 1024, 512), **kwargs)
