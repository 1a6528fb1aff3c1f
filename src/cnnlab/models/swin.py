"""Swin Transformer (Liu et al. 2021): self-attention inside 7x7 windows that shift by half a
window every other block, over four stages joined by patch merging.

- Patch partition: 4x4 patches, linearly embedded to C channels (a 4x4/4 conv) and normed.
- Stage i (C * 2^i channels, stride 4 * 2^i): Swin blocks in pairs, W-MSA then SW-MSA (Fig. 3b),
  each LN -> window attention with a relative position bias -> residual, LN -> MLP (4x,
  GELU) -> residual. The shifted block rolls the map by (-3, -3) and masks the attention
  between tokens that the roll brought together from distant parts (Sec. 3.2, Fig. 4).
- Patch merging between stages: concatenate each 2x2 neighbourhood (4C), LN, linear to 2C.
- Head: LN, global average pool, FC.

The variants (Sec. 3.3) are data: C, the blocks per stage and the heads (C / 32: "the query
dimension of each head is d = 32"). Module names, parameter layout and the arithmetic follow
torchvision's ``swin_t/s/b``, so its state_dicts load unchanged and give its outputs.

Inputs: any size from 32x32 up. Between stages the maps are (B, C, H, W) like every other
family's; inside a stage the blocks work on (B, H, W, C) tokens. As in torchvision (and the
authors' code for detection), a map that is not a multiple of the window is zero-padded at the
bottom/right for attention and cropped back, and patch merging pads odd sizes; so multiples of
32 need no merging pads, and multiples of 224 (32 * 7) no window pads at any stage. A window
at least as large as the padded map is not shifted (torchvision's rule). The padding makes
small inputs dear: at 32x32 every stage-4 window is one token and 48 zeros, and Swin-T costs
0.52 GMACs, not the 0.09 that its 4.49 at 224x224 scaled by area would give.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.layers import DropPath, Permute
from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

__all__ = ["SWIN_CONFIGS", "PatchMerging", "SwinBlock", "SwinConfig", "SwinStage",
           "SwinTransformer", "WindowAttention", "relative_position_index", "shifted_window_mask"]

SWIN_PAPER = Paper(
    title="Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    authors="Liu, Lin, Cao, Hu, Wei, Zhang, Lin, Guo",
    year=2021,
    url="https://arxiv.org/abs/2103.14030",
)

# The mask value the authors' code (and torchvision) adds to the logits between tokens of
# different sub-windows: softmax then gives them a weight of about e^-100, i.e. none.
MASK_VALUE = -100.0


@dataclass(frozen=True)
class SwinConfig:
    """One variant: embedding width C, Swin blocks and heads per stage, stochastic depth."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    drop_path_rate: float  # Appendix A2.1: the stochastic depth ratio used for ImageNet-1K
    window: int = 7  # M, Sec. 3.2
    patch: int = 4  # Sec. 3.1: 4x4 patches, 48 = 4 * 4 * 3 features each
    mlp_ratio: int = 4  # alpha, Sec. 3.3


# Sec. 3.3, Liu et al. 2021: Swin-T C = 96, layer numbers {2, 2, 6, 2}; Swin-S C = 96,
# {2, 2, 18, 2}; Swin-B C = 128, {2, 2, 18, 2}; heads = C_stage / 32. Stochastic depth
# 0.2 / 0.3 / 0.5 (Appendix A2.1).
SWIN_CONFIGS: dict[str, SwinConfig] = {
    "swin_t": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "swin_s": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    "swin_b": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5),
}



def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)


def _to_map(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def relative_position_index(window: int) -> torch.Tensor:
    """For each pair (i, j) of the M*M tokens of a window (row-major), the row of the
    (2M-1)^2 bias table that holds their offset: (dy + M-1) * (2M-1) + (dx + M-1), where
    (dy, dx) = position_i - position_j (Sec. 3.2, "Relative position bias"). Flattened."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    dy = rows[:, None] - rows[None, :]
    dx = cols[:, None] - cols[None, :]
    return ((dy + window - 1) * (2 * window - 1) + (dx + window - 1)).flatten()


def _region_labels(length: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Along one axis of the rolled, padded map: which of the three strips each position came
    from (Fig. 4: the body, the last window's unshifted part, the wrapped-around shift)."""
    labels = torch.zeros(length, dtype=torch.long, device=device)
    if shift:
        labels[length - window:] = 1
        labels[length - shift:] = 2
    return labels


def shifted_window_mask(height: int, width: int, window: int, shift: tuple[int, int],
                        device: torch.device | None = None,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """The additive mask of the shifted windows of a rolled (height x width) map: one
    (M*M, M*M) matrix per window, in window order, with ``MASK_VALUE`` between tokens of
    different regions and 0 within one. Sec. 3.2: "a masking mechanism is employed to limit
    self-attention computation to within each sub-window"."""
    rows = _region_labels(height, window, shift[0], device)
    cols = _region_labels(width, window, shift[1], device)
    region = rows[:, None] * 3 + cols[None, :]  # (height, width), 9 regions at most
    region = region.view(height // window, window, width // window, window)
    region = region.permute(0, 2, 1, 3).reshape(-1, window * window)  # (windows, M*M)
    differs = region[:, :, None] != region[:, None, :]
    zeros = torch.zeros(differs.shape, device=device, dtype=dtype)
    return zeros.masked_fill(differs, MASK_VALUE)


class WindowAttention(nn.Module):
    """(S)W-MSA: multi-head self-attention within non-overlapping M x M windows of a
    (B, H, W, C) map, with a learned bias per head and relative offset (Eq. 4:
    SoftMax(Q K^T / sqrt(d) + B) V); ``shift`` > 0 is the shifted configuration."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int,
                 attention_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{dim} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.window = window
        self.shift = shift
        self.attention_dropout = attention_dropout
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # B-hat of Sec. 3.2: offsets along each axis lie in [-M+1, M-1], (2M-1)^2 pairs.
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))

    def relative_position_bias(self) -> torch.Tensor:
        """(1, heads, M*M, M*M): the bias B each head adds to its window's logits."""
        tokens = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.view(tokens, tokens, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        m = self.window
        pad_h, pad_w = -height % m, -width % m
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        ph, pw = height + pad_h, width + pad_w
        # No shift along an axis that one window already covers (torchvision's rule).
        shift = (self.shift if ph > m else 0, self.shift if pw > m else 0)
        shifted = shift != (0, 0)
        if shifted:  # cyclic shift towards the top-left (Fig. 4)
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))

        # Partition into windows: (B * windows, M*M, C), windows in row-major order.
        windows = (ph // m) * (pw // m)
        x = x.view(batch, ph // m, m, pw // m, m, channels).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(batch * windows, m * m, channels)

        head_dim = channels // self.num_heads
        qkv = self.qkv(x).reshape(x.shape[0], m * m, 3, self.num_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B * windows, heads, M*M, d)
        attn = (q * head_dim**-0.5) @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias()
        if shifted:
            # (windows, M*M, M*M), added to every head of every image's windows
            mask = shifted_window_mask(ph, pw, m, shift, attn.device, attn.dtype)
            attn = attn.view(batch, windows, self.num_heads, m * m, m * m) + mask[:, None]
            attn = attn.view(-1, self.num_heads, m * m, m * m)
        attn = F.dropout(attn.softmax(dim=-1), self.attention_dropout, self.training)
        x = (attn @ v).transpose(1, 2).reshape(x.shape[0], m * m, channels)
        x = F.dropout(self.proj(x), self.dropout, self.training)

        # Merge the windows back, undo the shift, drop the padding.
        x = x.view(batch, ph // m, pw // m, m, m, channels).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(batch, ph, pw, channels)
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :height, :width, :].contiguous()

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, window={self.window}, shift={self.shift}"


class SwinBlock(nn.Module):
    """Pre-norm transformer block on (B, H, W, C) tokens (Eq. 3):
    x + (S)W-MSA(LN(x)), then + MLP(LN(x)) with a 4x GELU hidden layer; stochastic depth
    drops either branch per sample."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, *,
                 mlp_ratio: int = 4, drop_path: float = 0.0, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window, shift, attention_dropout, dropout)
        self.stochastic_depth = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = dim * mlp_ratio
        # torchvision's MLP layout: fc, GELU, dropout, fc, dropout (weights at 0 and 3).
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, dim), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.stochastic_depth(self.attn(self.norm1(x)))
        return x + self.stochastic_depth(self.mlp(self.norm2(x)))


class SwinStage(nn.Sequential):
    """The Swin blocks of one stage: takes and returns a (B, C, H, W) map, so that the stage
    outputs are feature maps like every other family's; the blocks see (B, H, W, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _to_tokens(x)
        for block in self:
            x = block(x)
        return _to_map(x)


class PatchMerging(nn.Module):
    """Halve the resolution, double the width (Sec. 3.1): concatenate the features of each
    2x2 group of tokens (4C), LN, linear to 2C without bias. (B, C, H, W) in and out; an odd
    side is zero-padded at the bottom/right first."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        x = _to_tokens(x)
        # The authors' concatenation order: (even row, even col), (odd, even), (even, odd),
        # (odd, odd); the weights of torchvision and the official release depend on it.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)
        return _to_map(self.reduction(self.norm(x)))


class SwinTransformer(Classifier):
    """``features``: patch embedding, then stage, merging, stage, ... (torchvision's indices:
    stages at 1, 3, 5, 7); ``norm`` (LN of the last stage), average pool, ``head``."""

    classifier_path = "head"
    # Stage 4 (stride 32) then holds one token without padding; see the module docstring.
    min_input_size = (32, 32)

    def __init__(self, config: SwinConfig, *, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float | None = None, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        rate = config.drop_path_rate if drop_path_rate is None else drop_path_rate
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
        self.in_chans = in_chans
        c, m, p = config.embed_dim, config.window, config.patch
        layers: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_chans, c, kernel_size=p, stride=p),  # patch partition + embedding
            Permute(0, 2, 3, 1), nn.LayerNorm(c), Permute(0, 3, 1, 2),
        )]
        stages = []
        total, block_id = sum(config.depths), 0
        for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True)):
            dim = c * 2**i
            blocks = []
            for j in range(depth):
                # Stochastic depth rises linearly from 0 (first block) to the rate (last).
                drop = rate * block_id / (total - 1)
                blocks.append(SwinBlock(dim, heads, m, 0 if j % 2 == 0 else m // 2,
                                        mlp_ratio=config.mlp_ratio, drop_path=drop,
                                        dropout=dropout, attention_dropout=attention_dropout))
                block_id += 1
            layers.append(SwinStage(*blocks))
            stages.append({"channels": dim, "reduction": p * 2**i,
                           "module": f"features.{len(layers) - 1}"})
            if i < len(config.depths) - 1:
                layers.append(PatchMerging(dim))
        self.features = nn.Sequential(*layers)
        self.feature_info = stages
        self.num_features = stages[-1]["channels"]
        self.norm = nn.LayerNorm(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The authors' init (and torchvision's): truncated normal std 0.02 for linear layers,
        # zero biases; LN and the patch conv keep PyTorch's defaults.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map after the final LN, (B, 8C, H/32, W/32)."""
        # Contiguous, so that the pooling and the analysers see an ordinary NCHW map.
        return _to_map(self.norm(_to_tokens(self.features(x)))).contiguous()

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.avgpool(x), 1))


def _register(name: str, params: int, gmacs: int, ref_top1: float, ref_top5: float,
              paper_top1: float):
    return register_model(
        family="swin",
        paper=SWIN_PAPER,
        input_size=(3, 224, 224),
        dataset="imagenet",
        num_classes=1000,
        params=params,
        # torchvision's published GFLOPs: the MACs of the convs, linear layers and the two
        # attention matmuls (Q K^T and A V) at 224x224, as Eq. (1)-(2) count them.
        macs=gmacs,
        top1_error=100 - ref_top1,
        top5_error=100 - ref_top5,
        error_source=f"torchvision reference weights (paper Table 1a: {paper_top1}% top-1)",
        recipe="liu2021",
        torchvision=True,
        deviations=(
            "min input 32x32, not torchvision's declared 224x224 (the size its weights were "
            "evaluated at; the layers take any size, padding to windows)",
            "maps that are not multiples of the window are zero-padded for attention "
            "(torchvision's and the authors' detection code's rule); the paper states 224 only",
        ),
    )


def _swin(name: str, **kwargs) -> SwinTransformer:
    return SwinTransformer(SWIN_CONFIGS[name], **kwargs)


@_register("swin_t", 28_288_354, 4_491_000_000, 81.474, 95.776, 81.3)
def swin_t(**kwargs) -> SwinTransformer:
    """Swin-T: C = 96, blocks {2, 2, 6, 2}; 28M parameters, 4.5G FLOPs (Table 1a)."""
    return _swin("swin_t", **kwargs)


@_register("swin_s", 49_606_258, 8_741_000_000, 83.196, 96.36, 83.0)
def swin_s(**kwargs) -> SwinTransformer:
    """Swin-S: C = 96, blocks {2, 2, 18, 2}; 50M parameters, 8.7G FLOPs (Table 1a)."""
    return _swin("swin_s", **kwargs)


@_register("swin_b", 87_768_224, 15_431_000_000, 83.582, 96.64, 83.5)
def swin_b(**kwargs) -> SwinTransformer:
    """Swin-B: C = 128, blocks {2, 2, 18, 2}; 88M parameters, 15.4G FLOPs (Table 1a)."""
    return _swin("swin_b", **kwargs)
