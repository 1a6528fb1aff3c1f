"""Vision Transformer (Dosovitskiy et al. 2021): an image as a sequence of 16x16 words.

The image is cut into p x p patches, each linearly embedded (a p x p, stride-p convolution),
a learned class token is prepended and learned position embeddings are added; a stack of
pre-norm Transformer encoder layers (multi-head self-attention, then a 2-layer GELU MLP,
each with a residual) follows, and the class token's final state is classified (Eq. 1-4).
The variants are Table 1's Base/Large/Huge at patch sizes 16, 32 and 14. Module paths are
torchvision's, so its state_dicts load with ``strict=True``.

The interface, as a ViT allows it:

- ``forward_features``: the normalised tokens, (B, 1 + (H/p)(W/p), D), class token first;
- ``forward_head``: the class token through the head; ``num_classes=0`` returns the class
  token's features (B, D);
- ``feature_info``: the patch embedding and every encoder layer, each as a (B, D, H/p, W/p)
  map of its patch tokens (the class token dropped), reduction p; ``features_only`` returns
  those maps, as timm's ViTs do;
- the input size is fixed (224 unless ``image_size`` says otherwise): the position embedding
  holds one vector per patch of that grid.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn

from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

__all__ = ["VIT_SPECS", "VisionTransformer"]

DOSOVITSKIY_2021 = Paper(
    title="An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
    authors="Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner, Dehghani, "
            "Minderer, Heigold, Gelly, Uszkoreit, Houlsby",
    year=2021,
    url="https://arxiv.org/abs/2010.11929",
)

# Table 1: (layers, hidden size D, MLP size, heads) of ViT-Base, -Large and -Huge.
VIT_SPECS: dict[str, tuple[int, int, int, int]] = {
    "base": (12, 768, 3072, 12),
    "large": (24, 1024, 4096, 16),
    "huge": (32, 1280, 5120, 16),
}


class EncoderBlock(nn.Module):
    """Pre-norm Transformer layer (Eq. 2-3): x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, heads: int, dim: int, mlp_dim: int, dropout: float,
                 attention_dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, dropout=attention_dropout,
                                                    batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        # Sec. 3.1: "two layers with a GELU non-linearity"; the indices are torchvision's.
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    """Position embedding (learned, 1-D: Appendix D.4), dropout, the layers, a final LN."""

    def __init__(self, tokens: int, layers: int, heads: int, dim: int, mlp_dim: int,
                 dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(heads, dim, mlp_dim, dropout, attention_dropout))
            for i in range(layers)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(Classifier):
    """Patch embedding -> [class] + patch tokens + position embedding -> encoder -> the class
    token's head. Init as torchvision's: truncated-normal patch embedding (std 1/sqrt(fan_in)),
    zero class token, N(0, 0.02) position embedding, Xavier MLP; the head truncated-normal
    (std 0.02, timm's), or zero with ``zero_head=True`` (torchvision's, and Sec. 3.2's
    zero-initialised head for fine-tuning: then no gradient reaches the body at the first
    step)."""

    classifier_path = "heads.head"

    def __init__(
        self,
        size: str,
        patch_size: int,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        image_size: int = 224,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        zero_head: bool = False,
    ) -> None:
        super().__init__()
        if size not in VIT_SPECS:
            raise ValueError(f"vit: size must be one of {sorted(VIT_SPECS)}, got {size!r}")
        if image_size % patch_size:
            raise ValueError(f"vit: image_size {image_size} is not a multiple of the patch "
                             f"size {patch_size}")
        layers, dim, mlp_dim, heads = VIT_SPECS[size]
        self.in_chans, self.patch_size, self.hidden_dim = in_chans, patch_size, dim
        self.grid = image_size // patch_size
        self.fixed_input_size = self.min_input_size = (image_size, image_size)
        self.fixed_size_reason = (f" (the position embedding holds one vector per patch of a "
                                  f"{self.grid}x{self.grid} grid of {patch_size}-pixel patches)")
        self.conv_proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder(self.grid**2 + 1, layers, heads, dim, mlp_dim, dropout,
                               attention_dropout)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(dim, num_classes)))
        self.feature_info = [{"channels": dim, "reduction": patch_size, "module": "conv_proj"}] + [
            {"channels": dim, "reduction": patch_size, "module": f"encoder.layers.{name}"}
            for name, _ in self.encoder.layers.named_children()]

        fan_in = in_chans * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        if zero_head:
            nn.init.zeros_(self.heads.head.weight)
        else:
            nn.init.trunc_normal_(self.heads.head.weight, std=0.02)
        nn.init.zeros_(self.heads.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)  # (B, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, patches, D), row by row
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.encoder(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(x[:, 0])  # Eq. 4: y = LN(z_L^0), the class token

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """A stage output as a (B, D, H/p, W/p) map: the patch tokens, class token dropped."""
        if x.dim() == 4:
            return x  # the patch embedding is already a map
        return x[:, 1:].transpose(1, 2).reshape(x.shape[0], x.shape[2], self.grid, self.grid)


_DEVIATIONS = (
    "published top-1 is torchvision's (ImageNet-1k from scratch, torchvision's recipe); the "
    "paper's accuracies follow pre-training on ImageNet-21k or JFT-300M",
    "the head is one linear layer (the paper's fine-tuning head), no pre-logits layer; "
    "initialised N(0, 0.02) so that a fresh model passes gradients (zero_head=True: "
    "torchvision's zero head)",
    "no ViT recipe in cnnlab: defaults to fine-tuning (Sec. 3.2 fine-tunes the pre-trained "
    "model); the paper pre-trains with Adam, batch 4096, warm-up and linear decay (Sec. 4.1)",
)


def _info(params: int, gmacs: float, acc1: float, acc5: float, weights: str = "IMAGENET1K_V1",
          extra: tuple[str, ...] = ()) -> dict:
    # torchvision's "GFLOPS" count multiply-accumulates, attention matmuls included
    # (tests/test_vit.py derives them by hand).
    return dict(family="vit", paper=DOSOVITSKIY_2021, input_size=(3, 224, 224),
                dataset="imagenet", num_classes=1000, params=params, macs=round(gmacs * 1e9),
                top1_error=100 - acc1, top5_error=100 - acc5, recipe="finetune",
                error_source=f"torchvision {weights} weights", torchvision=True,
                deviations=_DEVIATIONS + extra)


@register_model(**_info(86_567_656, 17.564, 81.072, 95.318))
def vit_b_16(**kwargs) -> VisionTransformer:
    """ViT-B/16: 12 layers, D 768, 12 heads, 16x16 patches."""
    return VisionTransformer("base", 16, **kwargs)


@register_model(**_info(88_224_232, 4.409, 75.912, 92.466))
def vit_b_32(**kwargs) -> VisionTransformer:
    """ViT-B/32: 12 layers, D 768, 12 heads, 32x32 patches."""
    return VisionTransformer("base", 32, **kwargs)


@register_model(**_info(304_326_632, 61.555, 79.662, 94.638))
def vit_l_16(**kwargs) -> VisionTransformer:
    """ViT-L/16: 24 layers, D 1024, 16 heads, 16x16 patches."""
    return VisionTransformer("large", 16, **kwargs)


@register_model(**_info(306_535_400, 15.378, 76.972, 93.07))
def vit_l_32(**kwargs) -> VisionTransformer:
    """ViT-L/32: 24 layers, D 1024, 16 heads, 32x32 patches."""
    return VisionTransformer("large", 32, **kwargs)


# torchvision publishes vit_h_14 only as SWAG weights: IMAGENET1K_SWAG_E2E_V1 at 518x518
# (a 1370-token position embedding, 633,470,440 params, 1016.717 GFLOPS, 88.552%) and
# IMAGENET1K_SWAG_LINEAR_V1 at 224x224, the size this builder makes by default; its facts
# are declared. `image_size=518` builds the other.
@register_model(**_info(632_045_800, 167.295, 85.708, 97.73, "IMAGENET1K_SWAG_LINEAR_V1", (
    "declared at 224x224: torchvision's IMAGENET1K_SWAG_LINEAR_V1 (SWAG pre-training, linear "
    "classifier); its DEFAULT IMAGENET1K_SWAG_E2E_V1 set is at 518x518 (image_size=518)",)))
def vit_h_14(**kwargs) -> VisionTransformer:
    """ViT-H/14: 32 layers, D 1280, 16 heads, 14x14 patches."""
    return VisionTransformer("huge", 14, **kwargs)
