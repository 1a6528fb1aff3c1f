"""Deformable ResNets: ResNet-50/101 with deformable 3x3 convolutions in the conv5 stage.

Dai, Qi, Xiong, Li, Zhang, Hu, Wei 2017, "Deformable Convolutional Networks", Sec. 3 and
Table 1: the 3x3 convolutions of the last three residual blocks ("res5a,b,c") become
deformable, each with its own offset-predicting 3x3 conv initialised to zero (Sec. 2.1),
so an untrained-offset network is exactly the ResNet it was built from. The module paths
are torchvision's (``layer4.i.conv2.weight``), so a torchvision ResNet's weights load with
only the ``conv2.conv_offset`` tensors missing, as the paper fine-tuned from ImageNet ResNets.
"""

from __future__ import annotations

import torch.nn as nn

from cnnlab.layers import DeformConv2d
from cnnlab.models.resnet import RESNET_SPECS, ResNet
from cnnlab.models.resnet_blocks import Bottleneck
from cnnlab.registry import Paper, register_model

__all__ = ["deformable_stage"]

DAI_2017 = Paper(
    title="Deformable Convolutional Networks",
    authors="Dai, Qi, Xiong, Li, Zhang, Hu, Wei",
    year=2017,
    url="https://arxiv.org/abs/1703.06211",
)


def deformable_stage(stage: nn.Sequential, *, offset_groups: int = 1,
                     modulated: bool = False) -> None:
    """Make every bottleneck's 3x3 in ``stage`` deformable, in place, keeping its weight
    shape, stride, padding, dilation and groups (and its He initialisation)."""
    for block in stage:
        if not isinstance(block, Bottleneck):
            raise ValueError(f"deformable stages need bottleneck blocks, got {type(block)}")
        conv = block.conv2
        deform = DeformConv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                              conv.stride, conv.padding, conv.dilation, conv.groups,
                              bias=False, offset_groups=offset_groups, modulated=modulated)
        deform.weight.data.copy_(conv.weight.data)  # ResNet's kaiming-normal (fan_out) draw
        block.conv2 = deform


def _resnet_dcn(depth: int, *, offset_groups: int = 1, modulated: bool = False,
                **kwargs) -> ResNet:
    model = ResNet(RESNET_SPECS[depth], **kwargs)
    deformable_stage(model.layer4, offset_groups=offset_groups, modulated=modulated)
    return model


_DEVIATIONS = (
    "an ImageNet classifier: the paper uses deformable res5 inside detection and "
    "segmentation nets, with res5 dilated to stride 16; here res5 keeps ResNet's stride 32",
    "ResNet v1.5 (torchvision) stride on res5a's 3x3, so the offset conv of res5a is "
    "strided too; stride_in_1x1=True gives the MSRA v1 form",
    "no published ImageNet top-1 (the paper reports detection/segmentation only)",
    "MACs: the deformable convs' matmuls count as the regular convs (plus the offset convs); "
    "the bilinear sampling is counted under other ops, not MACs",
)


def _info(params: int) -> dict:
    # ResNet's own count plus, per deformable block, the offset conv: 512 -> 2*3*3 = 18
    # channels, 3x3 kernel, with bias (test_resnet_dcn derives it by hand).
    return dict(family="resnet_dcn", paper=DAI_2017, input_size=(3, 224, 224),
                dataset="imagenet", num_classes=1000, params=params, recipe="he2016_imagenet",
                deviations=_DEVIATIONS)


@register_model(**_info(25_805_918))
def resnet50_dcn(**kwargs) -> ResNet:
    """ResNet-50 (He et al. 2016) with deformable res5a,b,c 3x3s (Dai et al. 2017).
    ``modulated=True`` gives DCNv2's modulated form (Zhu et al. 2019)."""
    return _resnet_dcn(50, **kwargs)


@register_model(**_info(44_798_046))
def resnet101_dcn(**kwargs) -> ResNet:
    """ResNet-101 with deformable res5a,b,c 3x3s: the paper's backbone (Table 1)."""
    return _resnet_dcn(101, **kwargs)


