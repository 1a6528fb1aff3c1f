"""ImageNet ResNets: ResNet, ResNeXt, Wide ResNet, SE-ResNet, plain and pre-activation nets.

He, Zhang, Ren, Sun 2016, "Deep Residual Learning for Image Recognition", Table 1 gives the
architectures as data: a block type and the number of blocks per stage. The torchvision forms
(ResNet v1.5, stride on the bottleneck's 3x3) are state_dict-compatible with torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from cnnlab.models.base import Classifier
from cnnlab.models.resnet_blocks import (
    BLOCKS,
    BlockOptions,
    conv_bn_shortcut,
    conv_shortcut,
    he_init,
    linear_drop_path_rates,
    make_stage,
)
from cnnlab.registry import Paper, register_model

__all__ = ["RESNET_SPECS", "ResNet", "ResNetSpec"]

HE_2016 = Paper(
    title="Deep Residual Learning for Image Recognition",
    authors="He, Zhang, Ren, Sun",
    year=2016,
    url="https://arxiv.org/abs/1512.03385",
)
HE_2016B = Paper(
    title="Identity Mappings in Deep Residual Networks",
    authors="He, Zhang, Ren, Sun",
    year=2016,
    url="https://arxiv.org/abs/1603.05027",
)
XIE_2017 = Paper(
    title="Aggregated Residual Transformations for Deep Neural Networks",
    authors="Xie, Girshick, Dollar, Tu, He",
    year=2017,
    url="https://arxiv.org/abs/1611.05431",
)
ZAGORUYKO_2016 = Paper(
    title="Wide Residual Networks",
    authors="Zagoruyko, Komodakis",
    year=2016,
    url="https://arxiv.org/abs/1605.07146",
)
HU_2018 = Paper(
    title="Squeeze-and-Excitation Networks",
    authors="Hu, Shen, Sun",
    year=2018,
    url="https://arxiv.org/abs/1709.01507",
)


@dataclass(frozen=True)
class ResNetSpec:
    """A ResNet as data: block type and blocks per stage (conv2_x..conv5_x of Table 1)."""

    block: str  # "basic" | "bottleneck"
    depths: tuple[int, int, int, int]


# He et al. 2016, Table 1.
RESNET_SPECS = {
    18: ResNetSpec("basic", (2, 2, 2, 2)),
    34: ResNetSpec("basic", (3, 4, 6, 3)),
    50: ResNetSpec("bottleneck", (3, 4, 6, 3)),
    101: ResNetSpec("bottleneck", (3, 4, 23, 3)),
    152: ResNetSpec("bottleneck", (3, 8, 36, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)  # Table 1: conv2_x..conv5_x (x4 for bottlenecks)
STAGE_STRIDES = (1, 2, 2, 2)


class ResNet(Classifier):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), four stages, global average pool, FC.

    Initialisation: He et al. 2015 (kaiming normal, fan_out) as ResNet's Sec. 3.4 says.
    Options (keyword-only): ``stride_in_1x1`` (paper v1 vs torchvision v1.5),
    ``zero_init_residual`` (Goyal et al. 2017), ``drop_path_rate`` (Huang et al. 2016, linear
    decay over all blocks), ``se_reduction`` (Hu et al. 2018), ``groups``/``width_per_group``
    (ResNeXt, Wide ResNet), ``residual=False`` (plain nets), ``preact=True`` (He et al.
    2016b: BN-ReLU-conv units and a final BN-ReLU before pooling), and ``stem_pool_padding``,
    ``stem_pool_ceil`` and ``bn_eps`` (the Caffe releases' pad-0/ceil max-pool and BN eps).
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        spec: ResNetSpec,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        se_reduction: int | None = None,
        residual: bool = True,
        preact: bool = False,
        stem_pool_padding: int = 1,
        stem_pool_ceil: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        block = BLOCKS[(spec.block, preact)]
        opts = BlockOptions(groups=groups, width_per_group=width_per_group,
                            stride_in_1x1=stride_in_1x1, se_reduction=se_reduction,
                            residual=residual)
        # Stem (Table 1, conv1 and the max-pool of conv2_x).
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(
            kernel_size=3, stride=2, padding=stem_pool_padding, ceil_mode=stem_pool_ceil
        )
        if stem_pool_padding == 0:
            self.min_input_size = (5, 5)  # conv1 must leave the unpadded 3x3 pool a 3x3 map
        rates = linear_drop_path_rates(drop_path_rate, sum(spec.depths))
        shortcut = conv_shortcut if preact else conv_bn_shortcut
        channels, start = 64, 0
        self.feature_info = [{"channels": 64, "reduction": 2, "module": "relu"}]
        for i, (planes, depth, stride) in enumerate(
            zip(STAGE_PLANES, spec.depths, STAGE_STRIDES, strict=True)
        ):
            stage, channels = make_stage(
                block, channels, planes, depth, stride, opts=opts, shortcut=shortcut,
                drop_path_rates=rates[start:start + depth],
                # The stem already ends in BN-ReLU (He et al. 2016b, appendix).
                first_preact="none" if preact and i == 0 else None,
            )
            start += depth
            self.add_module(f"layer{i + 1}", stage)
            self.feature_info.append(
                {"channels": channels, "reduction": 4 * 2**i, "module": f"layer{i + 1}"}
            )
        self.num_features = channels
        # He et al. 2016b: the last unit is followed by an extra BN-ReLU before pooling.
        self.final_norm = nn.BatchNorm2d(channels) if preact else nn.Identity()
        self.final_act = nn.ReLU(inplace=True) if preact else nn.Identity()
        if preact:
            self.feature_info[-1]["module"] = "final_act"
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = bn_eps
        he_init(self, zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_act(self.final_norm(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet(depth: int, **kwargs) -> ResNet:
    return ResNet(RESNET_SPECS[depth], **kwargs)


# --- torchvision forms (v1.5), state_dict-compatible --------------------------------------

def _torchvision_info(params: int, gmacs: float, acc1: float, acc5: float, weights: str,
                      paper: Paper = HE_2016, **extra) -> dict:
    return dict(
        family="resnet", paper=paper, input_size=(3, 224, 224), dataset="imagenet",
        num_classes=1000, params=params, macs=round(gmacs * 1e9), top1_error=100 - acc1,
        top5_error=100 - acc5, error_source=f"torchvision {weights} weights",
        recipe="he2016_imagenet", torchvision=True, **extra,
    )


_V15 = ("ResNet v1.5 (torchvision): a bottleneck's stride sits on its 3x3, not its first 1x1 "
        "as in Table 1; stride_in_1x1=True gives the paper's form",)


@register_model(**_torchvision_info(11_689_512, 1.814, 69.758, 89.078, "IMAGENET1K_V1"))
def resnet18(**kwargs) -> ResNet:
    return _resnet(18, **kwargs)


@register_model(**_torchvision_info(21_797_672, 3.664, 73.314, 91.420, "IMAGENET1K_V1"))
def resnet34(**kwargs) -> ResNet:
    return _resnet(34, **kwargs)


@register_model(**_torchvision_info(25_557_032, 4.089, 80.858, 95.434, "IMAGENET1K_V2",
                                    deviations=_V15))
def resnet50(**kwargs) -> ResNet:
    return _resnet(50, **kwargs)


@register_model(**_torchvision_info(44_549_160, 7.801, 81.886, 95.780, "IMAGENET1K_V2",
                                    deviations=_V15))
def resnet101(**kwargs) -> ResNet:
    return _resnet(101, **kwargs)


@register_model(**_torchvision_info(60_192_808, 11.514, 82.284, 96.002, "IMAGENET1K_V2",
                                    deviations=_V15))
def resnet152(**kwargs) -> ResNet:
    return _resnet(152, **kwargs)


# Xie et al. 2017, Table 1: cardinality C and bottleneck width d ("32x4d").
@register_model(**_torchvision_info(25_028_904, 4.230, 81.198, 95.340, "IMAGENET1K_V2",
                                    paper=XIE_2017))
def resnext50_32x4d(**kwargs) -> ResNet:
    return _resnet(50, groups=32, width_per_group=4, **kwargs)


@register_model(**_torchvision_info(88_791_336, 16.414, 82.834, 96.228, "IMAGENET1K_V2",
                                    paper=XIE_2017))
def resnext101_32x8d(**kwargs) -> ResNet:
    return _resnet(101, groups=32, width_per_group=8, **kwargs)


@register_model(**_torchvision_info(83_455_272, 15.460, 83.246, 96.454, "IMAGENET1K_V1",
                                    paper=XIE_2017))
def resnext101_64x4d(**kwargs) -> ResNet:
    return _resnet(101, groups=64, width_per_group=4, **kwargs)


# Zagoruyko & Komodakis 2016 (Sec. 4, ImageNet): the bottleneck's inner width doubled.
_WIDE = ("torchvision's wide bottleneck ResNet (inner 3x3 width x2); the WRN paper's ImageNet "
         "nets were trained with its own recipe",)


@register_model(**_torchvision_info(68_883_240, 11.398, 81.602, 95.758, "IMAGENET1K_V2",
                                    paper=ZAGORUYKO_2016, deviations=_WIDE))
def wide_resnet50_2(**kwargs) -> ResNet:
    return _resnet(50, width_per_group=128, **kwargs)


@register_model(**_torchvision_info(126_886_696, 22.753, 82.510, 96.020, "IMAGENET1K_V2",
                                    paper=ZAGORUYKO_2016, deviations=_WIDE))
def wide_resnet101_2(**kwargs) -> ResNet:
    return _resnet(101, width_per_group=128, **kwargs)


# --- Plain nets (He et al. 2016, Fig. 3 middle, Table 2 "plain") ----------------------------

def _paper_info(params: int, paper: Paper = HE_2016, recipe: str = "he2016_imagenet",
                **extra) -> dict:
    return dict(family="resnet", paper=paper, input_size=(3, 224, 224), dataset="imagenet",
                num_classes=1000, params=params, recipe=recipe, **extra)


_PLAIN = ("the residual net's layers without shortcuts: its projection shortcuts' 1x1 convs "
          "and BNs do not exist, so the count is the ResNet's minus those",)


# Table 2 (10-crop testing): plain-18 27.94% top-1; Table 1: 1.8 GFLOPs.
@register_model(**_paper_info(11_515_688, macs=1_800_000_000, top1_error=27.94,
                              error_source="He et al. 2016, Table 2 (10-crop)",
                              deviations=_PLAIN))
def plain18(**kwargs) -> ResNet:
    return _resnet(18, residual=False, **kwargs)


# Table 2: plain-34 28.54% top-1. Table 1's 3.6 GFLOPs is 1.2% below the 3.64 G that the
# layers measure (its 34-layer figure is rounded down), so no MAC count is declared.
@register_model(**_paper_info(21_623_848, top1_error=28.54,
                              error_source="He et al. 2016, Table 2 (10-crop)",
                              deviations=_PLAIN))
def plain34(**kwargs) -> ResNet:
    return _resnet(34, residual=False, **kwargs)


# --- Squeeze-and-excitation ResNets (Hu et al. 2018, Table 2, Fig. 3 right) -----------------

_SE_SOURCE = "hujie-frank/SENet released models, single 224 crop"
# The paper's bottleneck SE-ResNets keep v1 stride placement (stride on the first 1x1): its
# 3.87 GFLOPs for SE-ResNet-50 match that, not v1.5's 4.09. The builders default to it, so
# this is the paper's form, not a deviation; stride_in_1x1=False gives torchvision's v1.5.


# The authors' released Caffe models (SE-ResNet-50/101/152, SE-ResNeXt-50) pool the stem with a
# 3x3/2 max-pool of pad 0 in ceil mode and use BN eps 1e-4; the paper states neither. Those
# builders default to the released form, because the declared errors are those models' and
# their weights give them only in that form; released=False gives the pad-1/floor/1e-5 stem of
# the other ResNets here. At 224x224 both pools give 56x56, so params and MACs are equal.
_RELEASED = dict(stem_pool_padding=0, stem_pool_ceil=True, bn_eps=1e-4)
_SE_RELEASED = ("the authors' released Caffe models' stem max-pool (3x3/2, pad 0, ceil mode) and "
                "BN eps 1e-4, which the paper does not state; released=False gives pad 1, floor "
                "and eps 1e-5 (the other ResNets' form)",)


def _se_released(released: bool, kwargs: dict) -> dict:
    return {**_RELEASED, **kwargs} if released else kwargs


# GFLOPs from Hu et al. 2018, Table 2; params: ResNet + per block 2*C*C/16 + C/16 + C.
@register_model(**_paper_info(11_778_592, paper=HU_2018, recipe="hu2018", macs=1_820_000_000))
def se_resnet18(**kwargs) -> ResNet:
    return _resnet(18, se_reduction=16, **kwargs)


@register_model(**_paper_info(21_958_868, paper=HU_2018, recipe="hu2018", macs=3_660_000_000))
def se_resnet34(**kwargs) -> ResNet:
    return _resnet(34, se_reduction=16, **kwargs)


@register_model(**_paper_info(28_088_024, paper=HU_2018, recipe="hu2018", macs=3_870_000_000,
                              top1_error=22.37, top5_error=6.36, error_source=_SE_SOURCE,
                              deviations=_SE_RELEASED))
def se_resnet50(*, released: bool = True, **kwargs) -> ResNet:
    kwargs.setdefault("stride_in_1x1", True)
    return _resnet(50, se_reduction=16, **_se_released(released, kwargs))


@register_model(**_paper_info(49_326_872, paper=HU_2018, recipe="hu2018", macs=7_600_000_000,
                              top1_error=21.75, top5_error=5.72, error_source=_SE_SOURCE,
                              deviations=_SE_RELEASED))
def se_resnet101(*, released: bool = True, **kwargs) -> ResNet:
    kwargs.setdefault("stride_in_1x1", True)
    return _resnet(101, se_reduction=16, **_se_released(released, kwargs))


@register_model(**_paper_info(66_821_848, paper=HU_2018, recipe="hu2018", macs=11_320_000_000,
                              top1_error=21.34, top5_error=5.54, error_source=_SE_SOURCE,
                              deviations=_SE_RELEASED))
def se_resnet152(*, released: bool = True, **kwargs) -> ResNet:
    kwargs.setdefault("stride_in_1x1", True)
    return _resnet(152, se_reduction=16, **_se_released(released, kwargs))


# ResNeXt keeps its stride on the grouped 3x3 (Xie et al. 2017): Table 2's 4.25 GFLOPs.
@register_model(**_paper_info(27_559_896, paper=HU_2018, recipe="hu2018", macs=4_250_000_000,
                              top1_error=20.97, top5_error=5.54, error_source=_SE_SOURCE,
                              deviations=_SE_RELEASED))
def se_resnext50_32x4d(*, released: bool = True, **kwargs) -> ResNet:
    return _resnet(50, groups=32, width_per_group=4, se_reduction=16,
                   **_se_released(released, kwargs))


# --- Pre-activation ResNets (He et al. 2016b, Fig. 4e, ImageNet section) --------------------

_PREACT = ("no count or FLOPs published: params are derived from the layers (test_resnet.py)",
           "stride on the 3x3 and bare 1x1 projection shortcuts on the activated input, as in "
           "fb.resnet.torch's preresnet (the paper's ImageNet layout is not tabulated)",)


@register_model(**_paper_info(11_687_720, paper=HE_2016B, deviations=_PREACT))
def preact_resnet18(**kwargs) -> ResNet:
    return _resnet(18, preact=True, **kwargs)


@register_model(**_paper_info(21_795_880, paper=HE_2016B, deviations=_PREACT))
def preact_resnet34(**kwargs) -> ResNet:
    return _resnet(34, preact=True, **kwargs)


@register_model(**_paper_info(25_549_352, paper=HE_2016B, deviations=_PREACT))
def preact_resnet50(**kwargs) -> ResNet:
    return _resnet(50, preact=True, **kwargs)


@register_model(**_paper_info(44_541_480, paper=HE_2016B, deviations=_PREACT))
def preact_resnet101(**kwargs) -> ResNet:
    return _resnet(101, preact=True, **kwargs)


@register_model(**_paper_info(60_185_128, paper=HE_2016B, deviations=_PREACT))
def preact_resnet152(**kwargs) -> ResNet:
    return _resnet(152, preact=True, **kwargs)
