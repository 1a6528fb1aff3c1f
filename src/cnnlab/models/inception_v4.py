"""Inception-v4 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke, Alemi 2017).

Both are built by default in the form of the released models (TF-slim's checkpoints, which
timm ports), so that their weights load: :func:`convert_timm_state_dict` maps timm's key
names onto these modules. Inception-v4's released model orders some asymmetric convolutions the
other way round from the paper's Figs. 3, 5 and 6; ``paper=True`` builds the figures' order
(see :class:`InceptionV4`). Inception-ResNet-v2's figures (15-19) disagree with themselves on
the channel widths (1152 vs 1154 after Reduction-A, 2144 vs 2048 after Reduction-B), and the
released model settles them; its deviations from the figures are listed on the builder. Every
convolution is conv-BN-ReLU (the paper's "V" marks valid padding, the rest are "same"), except
the linear 1x1 up-projections of the residual blocks.

Branch order: a filter concatenation's branches are concatenated in the release's order (the
convolutions first, the pooling branch last). The figures draw the pooling branch on the left,
but a figure does not number the branches, and the order only permutes channels (the next
layer's weights absorb it); the release's order is the one its weights need.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.models.base import Classifier
from cnnlab.models.googlenet import BasicConv2d
from cnnlab.registry import Paper, register_model

__all__ = [
    "InceptionResNetV2", "InceptionV4", "convert_timm_state_dict", "inception_resnet_v2",
    "inception_resnet_v2_paper", "inception_v4",
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
    """Branches side by side on the same input, concatenated along channels in order.

    The children are named ``branch0``, ``branch1``, ... as in the released models.
    """

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.children()], 1)


def avgpool_proj(cin: int, out: int) -> nn.Sequential:
    # count_include_pad=False: TF's average pooling ignores the padding.
    return nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv(cin, out, 1))


def maxpool_v() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2)


# --- Inception-v4 (Figs. 3-9) -------------------------------------------------------------------


def asym(n: int, first_vertical: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two halves of a factorised n x n convolution: (n x 1, 1 x n) or the other way."""
    return ((n, 1), (1, n)) if first_vertical else ((1, n), (n, 1))


def stem_v4(cin: int, paper: bool = False) -> list[nn.Module]:
    """Fig. 3: 299x299x3 -> 35x35x384, as four layers and three filter concatenations.

    The 7x7 factorisation is 7x1-then-1x7 in Fig. 3 and 1x7-then-7x1 in the release.
    """
    s7a, s7b = asym(7, first_vertical=paper)
    return [
        conv(cin, 32, 3, 2, True), conv(32, 32, 3, 1, True), conv(32, 64, 3),
        Concat(maxpool_v(), conv(64, 96, 3, 2, True)),  # 73x73x160
        Concat(
            chain(160, (64, 1), (96, 3, 1, True)),
            chain(160, (64, 1), (64, s7a), (64, s7b), (96, 3, 1, True)),
        ),  # 71x71x192
        Concat(conv(192, 192, 3, 2, True), maxpool_v()),  # 35x35x384
    ]


def inception_a(cin: int) -> Concat:
    """Fig. 4: 35x35 module, 4 x 96 = 384 channels."""
    return Concat(
        conv(cin, 96, 1), chain(cin, (64, 1), (96, 3)), chain(cin, (64, 1), (96, 3), (96, 3)),
        avgpool_proj(cin, 96),
    )


def reduction_a(cin: int, k: int, l: int, m: int, n: int) -> Concat:
    """Fig. 7: 35x35 -> 17x17, ``n + m + cin`` channels (max-pool branch last)."""
    return Concat(
        conv(cin, n, 3, 2, True), chain(cin, (k, 1), (l, 3), (m, 3, 2, True)), maxpool_v()
    )


def inception_b(cin: int, paper: bool = False) -> Concat:
    """Fig. 5: 17x17 module, 384 + 256 + 256 + 128 = 1024 channels.

    The double 7x7 branch starts with a 1x7 in Fig. 5 and with a 7x1 in the release.
    """
    a, b = asym(7, first_vertical=not paper)
    return Concat(
        conv(cin, 384, 1),
        chain(cin, (192, 1), (224, (1, 7)), (256, (7, 1))),
        chain(cin, (192, 1), (192, a), (224, b), (224, a), (256, b)),
        avgpool_proj(cin, 128),
    )


def reduction_b(cin: int) -> Concat:
    """Fig. 8: 17x17 -> 8x8, ``192 + 320 + cin`` channels (max-pool branch last)."""
    return Concat(
        chain(cin, (192, 1), (192, 3, 2, True)),
        chain(cin, (256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2, True)), maxpool_v(),
    )


class InceptionC(nn.Module):
    """Fig. 6: 8x8 module whose 3x3s split into 1x3 and 3x1 side by side: 1536 channels.

    The child names are the release's. Its deeper branch (branch2_*) is 1x3-then-3x1 in
    Fig. 6 and 3x1-then-1x3 in the release.
    """

    def __init__(self, cin: int, paper: bool = False) -> None:
        super().__init__()
        a, b = asym(3, first_vertical=not paper)
        self.branch0 = conv(cin, 256, 1)
        self.branch1_0 = conv(cin, 384, 1)
        self.branch1_1a, self.branch1_1b = conv(384, 256, (1, 3)), conv(384, 256, (3, 1))
        self.branch2_0 = conv(cin, 384, 1)
        self.branch2_1, self.branch2_2 = conv(384, 448, a), conv(448, 512, b)
        self.branch2_3a, self.branch2_3b = conv(512, 256, (1, 3)), conv(512, 256, (3, 1))
        self.branch3 = avgpool_proj(cin, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([
            self.branch0(x), self.branch1_1a(b1), self.branch1_1b(b1), self.branch2_3a(b2),
            self.branch2_3b(b2), self.branch3(x),
        ], 1)


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
    """Inception-v4 (Fig. 9): stem, 4 x A, Reduction-A, 7 x B, Reduction-B, 3 x C.

    ``paper=False`` (default) is the released model, whose weights load; ``paper=True`` orders
    the factorised convolutions as the figures draw them: the stem's 7x7 as 7x1-then-1x7
    (Fig. 3; the release: 1x7-then-7x1), every Inception-B's double 7x7 branch as
    1x7, 7x1, 1x7, 7x1 (Fig. 5; the release: 7x1, 1x7, 7x1, 1x7) and every Inception-C's
    deeper branch as 1x3-then-3x1 (Fig. 6; the release: 3x1-then-1x3). The parameter counts
    are equal; the weight shapes, and so the functions, are not.
    """

    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, *, paper: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        n_a, n_b, n_c = V4_DEPTHS
        k, l, m, n = REDUCTION_A_KLMN["inception_v4"]
        stem = stem_v4(in_chans, paper)
        layers: list[nn.Module] = list(stem)
        layers += [inception_a(384) for _ in range(n_a)]
        layers += [reduction_a(384, k, l, m, n)]  # n + m + 384 = 1024
        layers += [inception_b(1024, paper) for _ in range(n_b)]
        layers += [reduction_b(1024)]  # 192 + 320 + 1024 = 1536
        layers += [InceptionC(1536, paper) for _ in range(n_c)]
        self.features = nn.Sequential(*layers)
        last_a, last_b = len(stem) - 1 + n_a, len(stem) + n_a + n_b
        self.feature_info = [
            {"channels": 384, "reduction": 8, "module": f"features.{len(stem) - 1}"},
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


def stem_irv2(cin: int) -> list[nn.Module]:
    """The released model's stem: Inception-v3's (to 35x35x192) and a 35x35 Inception
    module ("Mixed_5b": 96 | 48-64(5x5) | 64-96-96 | avgpool-64) to 320 channels."""
    return [
        conv(cin, 32, 3, 2, True), conv(32, 32, 3, 1, True), conv(32, 64, 3), maxpool_v(),
        conv(64, 80, 1), conv(80, 192, 3, 1, True), maxpool_v(),
        Concat(
            conv(192, 96, 1), chain(192, (48, 1), (64, 5)), chain(192, (64, 1), (96, 3), (96, 3)),
            avgpool_proj(192, 64),
        ),
    ]


def reduction_b_irv2(cin: int) -> Concat:
    """Fig. 18: 17x17 -> 8x8, ``384 + 288 + 320 + cin`` channels (max-pool branch last)."""
    return Concat(
        chain(cin, (256, 1), (384, 3, 2, True)),
        chain(cin, (256, 1), (288, 3, 2, True)),
        chain(cin, (256, 1), (288, 3), (320, 3, 2, True)), maxpool_v(),
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
        stem = stem_v4(in_chans, paper=True) if paper else stem_irv2(in_chans)
        layers: list[nn.Module] = list(stem)
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
        last_a, last_b = len(stem) - 1 + n_a, len(stem) + n_a + n_b
        self.feature_info = [
            {"channels": c35, "reduction": 8, "module": f"features.{len(stem) - 1}"},
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
        "the released (TF-slim) model's order of factorised convolutions, so its weights "
        "load: the stem's 7x7 as 1x7-then-7x1 (Fig. 3: 7x1-then-1x7), Inception-B's double "
        "7x7 branch as 7x1, 1x7, 7x1, 1x7 (Fig. 5: 1x7 first), Inception-C's deeper branch as "
        "3x1-then-1x3 (Fig. 6: 1x3 first); paper=True builds the figures' order",
        "branches concatenated in the release's order, the pooling branch last (the figures "
        "draw it on the left; the order only permutes channels)",
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
        "Reduction-A/B concatenate the max-pool branch last, as the release does (the "
        "figures draw it on the left; the order only permutes channels)",
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


# --- timm's key names (the TF-slim ports) -------------------------------------------------------


def _irv2_released_names() -> list[str]:
    """timm's module names of the released Inception-ResNet-v2, in ``features`` order."""
    n_a, n_b, n_c = IRV2_DEPTHS
    names = ["conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a",
             "maxpool_5a", "mixed_5b"]
    names += [f"repeat.{i}" for i in range(n_a)] + ["mixed_6a"]
    names += [f"repeat_1.{i}" for i in range(n_b)] + ["mixed_7a"]
    names += [f"repeat_2.{i}" for i in range(n_c - 1)] + ["block8", "conv2d_7b"]
    return names


def _timm_prefixes(model_name: str) -> dict[str, str]:
    """timm key prefix -> cnnlab key prefix, for the modules whose names differ."""
    if model_name == "inception_v4":
        # Stem concatenations 3 and 5 hold one conv beside a max-pool; timm names it ``conv``.
        return {"features.3.conv.": "features.3.branch1.",
                "features.5.conv.": "features.5.branch0.", "last_linear.": "fc."}
    if model_name == "inception_resnet_v2":
        prefixes = {"classif.": "fc."}
        for i, name in enumerate(_irv2_released_names()):
            if name.startswith(("repeat", "block8")):
                # A residual block: its branches sit in ``branches``, timm's conv2d is ``up``.
                prefixes[f"{name}.conv2d."] = f"features.{i}.up."
                prefixes[f"{name}.branch"] = f"features.{i}.branches.branch"
            else:
                prefixes[f"{name}."] = f"features.{i}."
        return prefixes
    raise ValueError(
        f"no timm key mapping for {model_name!r}; known: inception_v4, inception_resnet_v2"
    )


def convert_timm_state_dict(
    state_dict: dict[str, torch.Tensor], model_name: str
) -> dict[str, torch.Tensor]:
    """Rename the keys of timm's ``inception_v4`` / ``inception_resnet_v2`` state_dicts (the
    ported TF-slim releases) to this module's; the tensors are passed through unchanged.

    A key of neither layout is a ValueError naming it.
    """
    prefixes = _timm_prefixes(model_name)
    # Longest prefix first, so that ``repeat_1.0.`` is not taken for ``repeat.``'s.
    ordered = sorted(prefixes, key=len, reverse=True)
    strict = model_name == "inception_resnet_v2"  # every one of its keys is renamed
    converted = {}
    for key, tensor in state_dict.items():
        old = next((p for p in ordered if key.startswith(p)), None)
        if old is None and strict:
            raise ValueError(f"{key!r} is not a key of timm's {model_name} state_dict")
        converted[key if old is None else prefixes[old] + key[len(old):]] = tensor
    return converted
