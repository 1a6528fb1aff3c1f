"""Inception-v4 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke, Alemi 2017).

Inception-v4 is built from the paper's Figs. 3-9. Inception-ResNet-v2 is built in the form of
the released model (TF-slim's checkpoint, whose ~55.8M parameters are the commonly published
figure): the paper's Figs. 15-19 disagree with themselves on the channel widths (1152 vs 1154
after Reduction-A, 2144 vs 2048 after Reduction-B), and the released model settles them; its
deviations from the figures are listed on the builder. Every convolution is conv-BN-ReLU (the
paper's "V" marks valid padding, the rest are "same"), except the linear 1x1 up-projections of
the residual blocks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.models.base import Classifier
from cnnlab.models.googlenet import BasicConv2d
from cnnlab.registry import Paper, register_model

__all__ = [
    "InceptionResNetV2", "InceptionV4", "inception_resnet_v2", "inception_resnet_v2_paper",
    "inception_v4",
]

INCEPTION_V4_PAPER = Paper(
    title="Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
    authors="Szegedy, Ioffe, Vanhoucke, Alemi",
    year=2017,
    url="https://arxiv.org/abs/1602.07261",
)

# Fig. 9: 4 x Inception-A, 7 x Inception-B, 3 x Inception-C.
V4_DEPTHS = (4, 7, 3)
# Table 1: Reduction-A filter bank sizes k, l, m, n.
REDUCTION_A_KLMN = {
    "inception_v4": (192, 224, 256, 384),
    "inception_resnet_v2": (256, 256, 384, 384),
}
# Inception-ResNet-v2 blocks A/B/C: Fig. 15 draws 5/10/5; the released model has 10/20/10.
IRV2_PAPER_DEPTHS = (5, 10, 5)
IRV2_DEPTHS = (10, 20, 10)
# Sec. 3.3: residuals are scaled by 0.1-0.3 before the addition; the released model's factors.
IRV2_SCALES = (0.17, 0.10, 0.20)


def conv(cin: int, cout: int, k: int | tuple[int, int], stride: int = 1, valid: bool = False):
    """conv-BN-ReLU; "same" padding unless ``valid`` (the figures' "V")."""
    kh, kw = (k, k) if isinstance(k, int) else k
    return BasicConv2d(cin, cout, (kh, kw), stride, 0 if valid else (kh // 2, kw // 2))


def chain(cin: int, *layers: tuple) -> nn.Sequential:
    """A branch of convolutions: each layer is (out, kernel[, stride, valid])."""
    mods = []
    for out, *spec in layers:
        mods.append(conv(cin, out, *spec))
        cin = out
    return nn.Sequential(*mods)


class Concat(nn.Module):
    """Branches side by side on the same input, concatenated along channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


def avgpool_proj(cin: int, out: int) -> nn.Sequential:
    # count_include_pad=False: TF's average pooling ignores the padding.
    return nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv(cin, out, 1))


def maxpool_v() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2)


# --- Inception-v4 (Figs. 3-9) -------------------------------------------------------------------


def stem_v4(cin: int) -> nn.Sequential:
    """Fig. 3: 299x299x3 -> 35x35x384 (shared by Inception-v4 and the paper's IR-v2)."""
    return nn.Sequential(
        chain(cin, (32, 3, 2, True), (32, 3, 1, True), (64, 3)),
        Concat(maxpool_v(), conv(64, 96, 3, 2, True)),  # 73x73x160
        Concat(
            chain(160, (64, 1), (96, 3, 1, True)),
            chain(160, (64, 1), (64, (7, 1)), (64, (1, 7)), (96, 3, 1, True)),
        ),  # 71x71x192
        Concat(conv(192, 192, 3, 2, True), maxpool_v()),  # 35x35x384
    )


def inception_a(cin: int) -> Concat:
    """Fig. 4: 35x35 module, 4 x 96 = 384 channels."""
    return Concat(
        avgpool_proj(cin, 96), conv(cin, 96, 1), chain(cin, (64, 1), (96, 3)),
        chain(cin, (64, 1), (96, 3), (96, 3)),
    )


def reduction_a(cin: int, k: int, l: int, m: int, n: int) -> Concat:
    """Fig. 7: 35x35 -> 17x17, ``cin + n + m`` channels."""
    return Concat(
        maxpool_v(), conv(cin, n, 3, 2, True), chain(cin, (k, 1), (l, 3), (m, 3, 2, True))
    )


def inception_b(cin: int) -> Concat:
    """Fig. 5: 17x17 module, 128 + 384 + 256 + 256 = 1024 channels."""
    return Concat(
        avgpool_proj(cin, 128), conv(cin, 384, 1),
        chain(cin, (192, 1), (224, (1, 7)), (256, (7, 1))),
        chain(cin, (192, 1), (192, (1, 7)), (224, (7, 1)), (224, (1, 7)), (256, (7, 1))),
    )


def reduction_b(cin: int) -> Concat:
    """Fig. 8: 17x17 -> 8x8, ``cin + 192 + 320`` channels."""
    return Concat(
        maxpool_v(), chain(cin, (192, 1), (192, 3, 2, True)),
        chain(cin, (256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2, True)),
    )


class InceptionC(nn.Module):
    """Fig. 6: 8x8 module whose 3x3s split into 1x3 and 3x1 side by side: 1536 channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.pool = avgpool_proj(cin, 256)
        self.b1 = conv(cin, 256, 1)
        self.b2 = conv(cin, 384, 1)
        self.b2a, self.b2b = conv(384, 256, (1, 3)), conv(384, 256, (3, 1))
        self.b3 = chain(cin, (384, 1), (448, (1, 3)), (512, (3, 1)))
        self.b3a, self.b3b = conv(512, 256, (3, 1)), conv(512, 256, (1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b2, b3 = self.b2(x), self.b3(x)
        return torch.cat(
            [self.pool(x), self.b1(x), self.b2a(b2), self.b2b(b2), self.b3a(b3), self.b3b(b3)], 1
        )


class _Inception299(Classifier):
    """Shared head and checks: global average pool, dropout (keep 0.8, Fig. 9), linear."""

    min_input_size = (75, 75)
    features: nn.Sequential

    def _finish(self, channels: int, num_classes: int, dropout: float) -> None:
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class InceptionV4(_Inception299):
    """Inception-v4 (Fig. 9): stem, 4 x A, Reduction-A, 7 x B, Reduction-B, 3 x C."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        self.in_chans = in_chans
        n_a, n_b, n_c = V4_DEPTHS
        k, l, m, n = REDUCTION_A_KLMN["inception_v4"]
        layers: list[nn.Module] = [stem_v4(in_chans)]
        layers += [inception_a(384) for _ in range(n_a)]
        layers += [reduction_a(384, k, l, m, n)]  # 384 + n + m = 1024
        layers += [inception_b(1024) for _ in range(n_b)]
        layers += [reduction_b(1024)]  # 1024 + 192 + 320 = 1536
        layers += [InceptionC(1536) for _ in range(n_c)]
        self.features = nn.Sequential(*layers)
        last_a, last_b = n_a, n_a + 1 + n_b
        self.feature_info = [
            {"channels": 384, "reduction": 8, "module": "features.0"},
            {"channels": 384, "reduction": 8, "module": f"features.{last_a}"},
            {"channels": 1024, "reduction": 16, "module": f"features.{last_b}"},
            {"channels": 1536, "reduction": 32, "module": f"features.{len(layers) - 1}"},
        ]
        self._finish(1536, num_classes, dropout)


# --- Inception-ResNet-v2 (Figs. 15-19, released widths) ----------------------------------------


class ResidualInception(nn.Module):
    """x + scale * up(concat(branches(x))), then ReLU (Figs. 16-19; scaling: Fig. 20, Sec. 3.3).

    ``up`` is a linear 1x1 convolution (bias, no BN, no ReLU) back to the input width.
    """

    def __init__(self, branches: Concat, branch_channels: int, channels: int, scale: float,
                 relu: bool = True) -> None:
        super().__init__()
        self.branches = branches
        self.up = nn.Conv2d(branch_channels, channels, 1)
        self.scale = scale
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.scale * self.up(self.branches(x))
        return F.relu(x) if self.relu else x

    def extra_repr(self) -> str:
        return f"scale={self.scale}, relu={self.relu}"


def block35(c: int, scale: float) -> ResidualInception:
    """Fig. 16, Inception-ResNet-A: 32 | 32-32 | 32-48-64, up to ``c``."""
    return ResidualInception(
        Concat(conv(c, 32, 1), chain(c, (32, 1), (32, 3)), chain(c, (32, 1), (48, 3), (64, 3))),
        32 + 32 + 64, c, scale,
    )


def block17(c: int, scale: float) -> ResidualInception:
    """Fig. 17, Inception-ResNet-B: 192 | 128-160(1x7)-192(7x1), up to ``c``."""
    return ResidualInception(
        Concat(conv(c, 192, 1), chain(c, (128, 1), (160, (1, 7)), (192, (7, 1)))),
        192 + 192, c, scale,
    )


def block8(c: int, scale: float, relu: bool = True) -> ResidualInception:
    """Fig. 19, Inception-ResNet-C: 192 | 192-224(1x3)-256(3x1), up to ``c``."""
    return ResidualInception(
        Concat(conv(c, 192, 1), chain(c, (192, 1), (224, (1, 3)), (256, (3, 1)))),
        192 + 256, c, scale, relu,
    )


def stem_irv2(cin: int) -> nn.Sequential:
    """The released model's stem: Inception-v3's (to 35x35x192) and a 35x35 Inception
    module ("Mixed_5b": 96 | 48-64(5x5) | 64-96-96 | avgpool-64) to 320 channels."""
    return nn.Sequential(
        chain(cin, (32, 3, 2, True), (32, 3, 1, True), (64, 3)),
        maxpool_v(),
        chain(64, (80, 1), (192, 3, 1, True)),
        maxpool_v(),
        Concat(
            conv(192, 96, 1), chain(192, (48, 1), (64, 5)), chain(192, (64, 1), (96, 3), (96, 3)),
            avgpool_proj(192, 64),
        ),
    )


def reduction_b_irv2(cin: int) -> Concat:
    """Fig. 18: 17x17 -> 8x8, ``cin + 384 + 288 + 320`` channels."""
    return Concat(
        maxpool_v(), chain(cin, (256, 1), (384, 3, 2, True)),
        chain(cin, (256, 1), (288, 3, 2, True)),
        chain(cin, (256, 1), (288, 3), (320, 3, 2, True)),
    )


class InceptionResNetV2(_Inception299):
    """Inception-ResNet-v2: Fig. 15's layout (stem, A blocks, Reduction-A, B blocks,
    Reduction-B, C blocks, average pool, dropout keep 0.8, linear).

    ``paper=False`` (default) is the released model: Inception-v3's stem plus a 35x35 module
    (320 channels), 10/20/10 blocks, a final 1x1 conv to 1536 channels. ``paper=True`` follows
    the figures: Fig. 3's stem (384 channels), 5/10/5 blocks, and the widths the figures'
    branches give (384, 1152, 2144; Figs. 17 and 19 print 1154 and 2048 for the up-projections,
    which could not be added to their inputs).
    """

    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, *, paper: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        n_a, n_b, n_c = IRV2_PAPER_DEPTHS if paper else IRV2_DEPTHS
        s_a, s_b, s_c = IRV2_SCALES
        k, l, m, n = REDUCTION_A_KLMN["inception_resnet_v2"]
        c35 = 384 if paper else 320
        c17 = c35 + n + m  # 1152 (paper) or 1088 (released)
        c8 = c17 + 384 + 288 + 320  # 2144 or 2080
        layers: list[nn.Module] = [stem_v4(in_chans) if paper else stem_irv2(in_chans)]
        layers += [block35(c35, s_a) for _ in range(n_a)]
        layers += [reduction_a(c35, k, l, m, n)]
        layers += [block17(c17, s_b) for _ in range(n_b)]
        layers += [reduction_b_irv2(c17)]
        if paper:
            layers += [block8(c8, s_c) for _ in range(n_c)]
            out = c8
        else:
            # The last block8 is unscaled and has no ReLU: the 1x1 conv to 1536 follows it.
            layers += [block8(c8, s_c) for _ in range(n_c - 1)] + [block8(c8, 1.0, relu=False)]
            layers += [conv(c8, 1536, 1)]
            out = 1536
        self.features = nn.Sequential(*layers)
        last_a, last_b = n_a, n_a + 1 + n_b
        self.feature_info = [
            {"channels": c35, "reduction": 8, "module": "features.0"},
            {"channels": c35, "reduction": 8, "module": f"features.{last_a}"},
            {"channels": c17, "reduction": 16, "module": f"features.{last_b}"},
            {"channels": out, "reduction": 32, "module": f"features.{len(layers) - 1}"},
        ]
        self._finish(out, num_classes, dropout)


@register_model(
    family="inception",
    paper=INCEPTION_V4_PAPER,
    input_size=(3, 299, 299),
    dataset="imagenet",
    num_classes=1000,
    params=42_679_816,  # computed from Figs. 3-9 (tests/test_inception.py); "42.7M"
    macs=None,
    top1_error=20.0,
    top5_error=5.0,
    error_source="Szegedy et al. 2017, Table 2 (single crop, single model)",
    recipe="szegedy2017",
    deviations=(
        "batch norm with eps 1e-3 after every convolution (the paper only says BN is used "
        "on top of the traditional layers, Sec. 3.3)",
        "adaptive average pool, so inputs from 75x75 work",
    ),
)
def inception_v4(**kwargs) -> InceptionV4:
    return InceptionV4(**kwargs)


@register_model(
    family="inception",
    paper=INCEPTION_V4_PAPER,
    input_size=(3, 299, 299),
    dataset="imagenet",
    num_classes=1000,
    params=55_843_464,  # computed from the released model's layers; "55.8M"
    macs=None,
    top1_error=19.9,
    top5_error=4.9,
    error_source="Szegedy et al. 2017, Table 2 (single crop, single model)",
    recipe="szegedy2017",
    deviations=(
        "the released (TF-slim) model, not Figs. 15-19: Inception-v3's stem plus a 35x35 "
        "Inception module (320 channels) instead of Fig. 3's stem (384)",
        "10/20/10 residual blocks instead of Fig. 15's 5/10/5",
        "widths 320/1088/2080 after the stem/Reduction-A/Reduction-B, where the figures "
        "draw 384/1154/2048 (and their own branches give 384/1152/2144)",
        "a 1x1 conv-BN-ReLU to 1536 channels before the pool; the last 8x8 block is "
        "unscaled and has no ReLU",
        "residual scales 0.17/0.10/0.20 (within Sec. 3.3's 0.1-0.3)",
        "batch norm with eps 1e-3 after every convolution except the residual up-projections",
        "adaptive average pool, so inputs from 75x75 work",
    ),
)
def inception_resnet_v2(**kwargs) -> InceptionResNetV2:
    return InceptionResNetV2(**kwargs)


@register_model(
    family="inception",
    paper=INCEPTION_V4_PAPER,
    input_size=(3, 299, 299),
    dataset="imagenet",
    num_classes=1000,
    params=32_433_928,  # computed from Figs. 3, 7, 15-19 (tests/test_inception.py)
    macs=None,
    recipe="szegedy2017",
    deviations=(
        "up-projections to 1152 and 2144 channels, the widths Figs. 7 and 18 produce, where "
        "Figs. 17 and 19 print 1154 and 2048 (a residual add needs equal widths)",
        "residual scales 0.17/0.10/0.20 (Sec. 3.3 gives the range 0.1-0.3, not the values)",
        "batch norm with eps 1e-3 after every convolution except the residual up-projections",
        "adaptive average pool, so inputs from 75x75 work",
    ),
)
def inception_resnet_v2_paper(**kwargs) -> InceptionResNetV2:
    """Inception-ResNet-v2 as Figs. 3, 7 and 15-19 draw it (no published weights)."""
    return InceptionResNetV2(paper=True, **kwargs)
