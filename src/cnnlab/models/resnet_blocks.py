"""Residual blocks and the pure stage builder shared by the ImageNet and CIFAR ResNets.

Post-activation blocks follow He, Zhang, Ren, Sun 2016 ("Deep Residual Learning for Image
Recognition", Fig. 2 and Fig. 5); pre-activation blocks follow He, Zhang, Ren, Sun 2016b
("Identity Mappings in Deep Residual Networks", Fig. 1b and Fig. 4e). Module names match
torchvision's ``BasicBlock``/``Bottleneck`` (conv1, bn1, ..., downsample.0/1) so that
state_dicts load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.layers import DropPath, SqueezeExcite

__all__ = [
    "BLOCKS",
    "BasicBlock",
    "BlockOptions",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ShortcutFn",
    "ZeroPadShortcut",
    "conv_bn_shortcut",
    "conv_shortcut",
    "he_init",
    "linear_drop_path_rates",
    "make_stage",
]


@dataclass(frozen=True)
class BlockOptions:
    """Options every block of one network shares.

    ``residual=False`` builds the paper's plain counterpart (He et al. 2016, Fig. 3, middle):
    the same layers without the shortcut. ``stride_in_1x1`` puts a bottleneck's stride on its
    first 1x1 (the paper's v1, Table 1) instead of the 3x3 (torchvision's v1.5).
    ``se_reduction`` adds a squeeze-excite gate (Hu et al. 2018, Fig. 3) to the residual branch
    before the addition. ``dropout`` sits between the two 3x3 convolutions of a pre-activation
    basic block (Zagoruyko & Komodakis 2016, Sec. 2.4).
    """

    groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = False
    se_reduction: int | None = None
    residual: bool = True
    dropout: float = 0.0


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


def _se(channels: int, reduction: int | None) -> nn.Module | None:
    # Hu et al. 2018, Sec. 3.2: FC(C -> C/r), ReLU, FC(C/r -> C), sigmoid, with biases.
    if reduction is None:
        return None
    if channels % reduction:
        raise ValueError(f"se_reduction {reduction} must divide the block's {channels} channels")
    return SqueezeExcite(channels, channels // reduction)


def _check_residual_options(opts: BlockOptions, drop_path: float) -> None:
    if not opts.residual and (drop_path > 0.0 or opts.se_reduction is not None):
        raise ValueError("plain (residual=False) blocks take no drop_path_rate or se_reduction")


class _Residual(nn.Module):
    """The addition shared by every block: shortcut(x) + drop_path(se(branch))."""

    downsample: nn.Module | None
    se: nn.Module | None

    def _merge(self, branch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.se is not None:
            branch = self.se(branch)
        if not self.residual:
            return branch
        branch = self.drop_path(branch)
        shortcut = x if self.downsample is None else self.downsample(x)
        return branch + shortcut

    def _finish(self, opts: BlockOptions, channels: int, drop_path: float,
                downsample: nn.Module | None) -> None:
        _check_residual_options(opts, drop_path)
        self.residual = opts.residual
        self.se = _se(channels, opts.se_reduction)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()


class BasicBlock(_Residual):
    """Two 3x3 convolutions, then add and ReLU (He et al. 2016, Fig. 2 / Fig. 5 left)."""

    expansion = 1
    preactivated = False

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *,
                 downsample: nn.Module | None = None, drop_path: float = 0.0,
                 opts: BlockOptions = BlockOptions(), final_relu: bool = True) -> None:
        super().__init__()
        if opts.groups != 1 or opts.width_per_group != 64:
            raise ValueError("basic blocks take groups=1 and width_per_group=64 only")
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.final_relu = final_relu  # RoR adds its outer shortcuts before this ReLU
        self._finish(opts, planes, drop_path, downsample)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self._merge(self.bn2(self.conv2(out)), x)
        return self.relu(out) if self.final_relu else out


class Bottleneck(_Residual):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand x4 (He et al. 2016, Fig. 5 right).

    The 3x3 has ``groups * int(planes * width_per_group / 64)`` channels: ResNeXt's
    cardinality x bottleneck width (Xie et al. 2017, Table 1) and Wide ResNet-50-2's doubled
    inner width, as in torchvision.
    """

    expansion = 4
    preactivated = False

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *,
                 downsample: nn.Module | None = None, drop_path: float = 0.0,
                 opts: BlockOptions = BlockOptions(), final_relu: bool = True) -> None:
        super().__init__()
        width = int(planes * opts.width_per_group / 64) * opts.groups
        out_channels = planes * self.expansion
        # v1 (paper, Table 1 "conv3_1 ... stride 2" on the first 1x1) vs v1.5 (on the 3x3).
        stride_1x1, stride_3x3 = (stride, 1) if opts.stride_in_1x1 else (1, stride)
        self.conv1 = _conv1x1(in_channels, width, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride_3x3, opts.groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.final_relu = final_relu
        self._finish(opts, out_channels, drop_path, downsample)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self._merge(self.bn3(self.conv3(out)), x)
        return self.relu(out) if self.final_relu else out


class _PreAct(_Residual):
    """BN-ReLU before each convolution, nothing after the addition (He et al. 2016b, Fig. 4e).

    ``preact`` says where the first BN-ReLU goes:
    - "residual": on the residual branch only, so the identity path stays clean;
    - "shared": before the split, so a projection/subsampling shortcut sees the activated
      input too (Kaiming He's resnet-1k-layers code when the unit changes shape, and the
      first unit of a network, He et al. 2016b, Sec. 4.1 appendix);
    - "none": the input is already activated (ImageNet layer1.0 after the stem's BN-ReLU).
    """

    preactivated = True

    def _setup_preact(self, in_channels: int, preact: str) -> None:
        if preact not in ("residual", "shared", "none"):
            raise ValueError(f"preact must be 'residual', 'shared' or 'none', got {preact!r}")
        self.preact = preact
        self.bn1 = nn.BatchNorm2d(in_channels) if preact != "none" else None
        self.relu = nn.ReLU(inplace=False)  # the input may be the shortcut: never in place

    def _preactivate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input to the residual branch, input to the shortcut)."""
        if self.bn1 is None:
            return x, x
        act = self.relu(self.bn1(x))
        return act, (act if self.preact == "shared" else x)

    def last_bn(self) -> nn.BatchNorm2d | None:
        return None  # the branch ends with a convolution


class PreActBasicBlock(_PreAct):
    """BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, add (He et al. 2016b; WRN's block)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *,
                 downsample: nn.Module | None = None, drop_path: float = 0.0,
                 opts: BlockOptions = BlockOptions(), preact: str = "residual") -> None:
        super().__init__()
        if opts.groups != 1 or opts.width_per_group != 64:
            raise ValueError("basic blocks take groups=1 and width_per_group=64 only")
        self._setup_preact(in_channels, preact)
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        # Zagoruyko & Komodakis 2016, Sec. 2.4: dropout between the convolutions, after ReLU.
        self.dropout = nn.Dropout(opts.dropout) if opts.dropout > 0 else None
        self.conv2 = _conv3x3(planes, planes)
        self._finish(opts, planes, drop_path, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, shortcut_in = self._preactivate(x)
        out = self.relu(self.bn2(self.conv1(branch)))
        if self.dropout is not None:
            out = self.dropout(out)
        return self._merge(self.conv2(out), shortcut_in)


class PreActBottleneck(_PreAct):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1 (x4), add (He et al. 2016b, Fig. 4e)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *,
                 downsample: nn.Module | None = None, drop_path: float = 0.0,
                 opts: BlockOptions = BlockOptions(), preact: str = "residual") -> None:
        super().__init__()
        width = int(planes * opts.width_per_group / 64) * opts.groups
        out_channels = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if opts.stride_in_1x1 else (1, stride)
        self._setup_preact(in_channels, preact)
        self.conv1 = _conv1x1(in_channels, width, stride_1x1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride_3x3, opts.groups)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_channels)
        self._finish(opts, out_channels, drop_path, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, shortcut_in = self._preactivate(x)
        out = self.relu(self.bn2(self.conv1(branch)))
        out = self.relu(self.bn3(self.conv2(out)))
        return self._merge(self.conv3(out), shortcut_in)


class ZeroPadShortcut(nn.Module):
    """He et al. 2016, Sec. 3.3 option A: strided identity with zero-padded extra channels.

    No parameters: ``x[:, :, ::stride, ::stride]`` followed by zero channels up to
    ``out_channels`` (the CIFAR nets of Sec. 4.2 use this for every shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A cannot shrink channels ({in_channels} -> {out_channels})")
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


def conv_bn_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Option B projection for post-activation nets: 1x1 conv + BN (torchvision's downsample)."""
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


def conv_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Projection for pre-activation nets: a bare 1x1 conv on the activated input (He 2016b)."""
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride))


ShortcutFn = Callable[[int, int, int], nn.Module]

# Block class by (kind, pre-activation): the families' specs name a block as data.
BLOCKS: dict[tuple[str, bool], type[nn.Module]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}


def make_stage(
    block: type[nn.Module],
    in_channels: int,
    planes: int,
    depth: int,
    stride: int,
    *,
    opts: BlockOptions,
    shortcut: ShortcutFn,
    drop_path_rates: Sequence[float],
    first_preact: str | None = None,
    last_final_relu: bool = True,
) -> tuple[nn.Sequential, int]:
    """One stage of ``depth`` blocks, the first with ``stride``; returns (stage, out_channels).

    A shortcut module is built only where the shape changes (He et al. 2016, option A/B);
    plain nets (``opts.residual=False``) get none. ``first_preact`` overrides the first
    pre-activation block's mode; ``last_final_relu=False`` leaves the last post-activation
    block's output before its ReLU (for RoR's outer shortcuts).
    """
    if len(drop_path_rates) != depth:
        raise ValueError(f"need {depth} drop-path rates, got {len(drop_path_rates)}")
    out_channels = planes * block.expansion  # type: ignore[attr-defined]
    blocks = []
    for i in range(depth):
        cin, s = (in_channels, stride) if i == 0 else (out_channels, 1)
        changes_shape = s != 1 or cin != out_channels
        downsample = shortcut(cin, out_channels, s) if opts.residual and changes_shape else None
        kwargs: dict = {}
        if block.preactivated:  # type: ignore[attr-defined]
            kwargs["preact"] = "shared" if changes_shape else "residual"
            if i == 0 and first_preact is not None:
                kwargs["preact"] = first_preact
        elif i == depth - 1:
            kwargs["final_relu"] = last_final_relu
        blocks.append(block(cin, planes, s, downsample=downsample,
                            drop_path=drop_path_rates[i], opts=opts, **kwargs))
    return nn.Sequential(*blocks), out_channels


def linear_drop_path_rates(rate: float, num_blocks: int) -> list[float]:
    """Huang et al. 2016, Eq. (4): block l of L is dropped with probability l/L * p_L."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
    return [rate * (i + 1) / num_blocks for i in range(num_blocks)]


def he_init(model: nn.Module, zero_init_residual: bool = False) -> None:
    """He et al. 2015 initialisation, as ResNet (He et al. 2016, Sec. 3.4) used it.

    Convolutions: N(0, 2 / fan_out) ("kaiming normal, fan_out", the reference code's choice);
    BN: gamma 1, beta 0; linear layers keep PyTorch's default. With ``zero_init_residual``
    every block's last BN gamma starts at 0 (Goyal et al. 2017, Sec. 5.1), so each block
    begins as its shortcut.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if not zero_init_residual:
        return
    blocks = [m for m in model.modules() if isinstance(m, _Residual)]
    for block in blocks:
        bn = block.last_bn()  # type: ignore[operator]
        if bn is None:
            raise ValueError("zero_init_residual needs post-activation blocks (a last BN); "
                             "pre-activation branches end in a convolution")
        nn.init.zeros_(bn.weight)
