"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998) as published, and two later teaching forms.

- ``lenet5``: the paper's network, layer for layer (Section II.B, Fig. 2): scaled-tanh
  squashing, trainable subsampling, C3's partial connection table (Table I) and the fixed
  Euclidean RBF output layer. 60,000 trainable parameters.
- ``lenet5_modern``: the same widths with ReLU, max-pooling, a full C3 and a linear output
  (the form most courses and d2l call "LeNet"); takes raw 28x28 MNIST.
- ``lenet_lecture``: the Caffe-tutorial LeNet of the lectures (20/50 filters, FC 500).

Data: MNIST digits are 28x28; the paper pads them to 32x32 (Section III.A) and scales the
pixels so that background is -0.1 and foreground 1.175. Both are the data pipeline's job;
``lenet5`` takes exactly 1x32x32 and raises a ValueError for anything else.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.models.base import Classifier
from cnnlab.registry import Paper, register_model

__all__ = [
    "C3_TABLE",
    "DIGIT_BITMAPS",
    "ConnectionTableConv2d",
    "EuclideanRBF",
    "LeNet5",
    "LeNetLecture",
    "LeNetModern",
    "ScaledTanh",
    "TrainableSubsampling",
    "map_criterion",
]

LECUN_1998 = Paper(
    title="Gradient-Based Learning Applied to Document Recognition",
    authors="LeCun, Bottou, Bengio, Haffner",
    year=1998,
    url="https://doi.org/10.1109/5.726791",
)

# Table I: which S2 maps (rows 0-5) each C3 map (columns 0-15) takes as input.
C3_TABLE: tuple[str, ...] = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)

# The RBF prototypes (Section II.B): "a stylized image of the corresponding character class
# drawn on a 7x12 bitmap" with values -1 (white, ".") and +1 (black, "#"). The paper does not
# print its bitmaps; these are cnnlab's drawing of the digits 0-9, 12 rows of 7 pixels.
DIGIT_BITMAPS: tuple[tuple[str, ...], ...] = (
    (".......", "..###..", ".#...#.", "#.....#", "#.....#", "#.....#",
     "#.....#", "#.....#", "#.....#", ".#...#.", "..###..", "......."),
    (".......", "...#...", "..##...", ".#.#...", "...#...", "...#...",
     "...#...", "...#...", "...#...", "...#...", ".#####.", "......."),
    (".......", "..###..", ".#...#.", "#.....#", "......#", ".....#.",
     "....#..", "...#...", "..#....", ".#.....", "#######", "......."),
    (".......", ".####..", "#....#.", "......#", ".....#.", "..###..",
     ".....#.", "......#", "......#", "#....#.", ".####..", "......."),
    (".......", "....#..", "...##..", "..#.#..", ".#..#..", "#...#..",
     "#######", "....#..", "....#..", "....#..", "...###.", "......."),
    (".......", "#######", "#......", "#......", "#####..", ".....#.",
     "......#", "......#", "......#", "#....#.", ".####..", "......."),
    (".......", "...###.", "..#....", ".#.....", "#......", "#.###..",
     "##...#.", "#.....#", "#.....#", ".#...#.", "..###..", "......."),
    (".......", "#######", "......#", ".....#.", "....#..", "....#..",
     "...#...", "...#...", "..#....", "..#....", "..#....", "......."),
    (".......", "..###..", ".#...#.", "#.....#", ".#...#.", "..###..",
     ".#...#.", "#.....#", "#.....#", ".#...#.", "..###..", "......."),
    (".......", "..###..", ".#...#.", "#.....#", "#.....#", ".#...##",
     "..###.#", "......#", ".....#.", "....#..", ".###...", "......."),
)


def digit_prototypes() -> torch.Tensor:
    """The ten 7x12 bitmaps as a (10, 84) tensor of -1/+1, row-major."""
    rows = [[1.0 if ch == "#" else -1.0 for line in bitmap for ch in line]
            for bitmap in DIGIT_BITMAPS]
    return torch.tensor(rows)


class ScaledTanh(nn.Module):
    """The squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (Section II.B, Appendix A).

    Chosen so that f(1) = 1 and f(-1) = -1, the points of maximum curvature of f.
    """

    amplitude = 1.7159
    slope = 2.0 / 3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return "A=1.7159, S=2/3"


class TrainableSubsampling(nn.Module):
    """S2/S4: sum each non-overlapping 2x2 window, times a trainable coefficient per map,
    plus a trainable bias per map (Section II.B). The squashing follows as its own module."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window_sum = F.avg_pool2d(x, 2) * 4
        return window_sum * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, window=2x2"


class ConnectionTableConv2d(nn.Module):
    """A convolution in which output map j only sees the input maps ``table`` marks for it.

    Only the connected kernels are parameters (``weight`` is (connections, k, k)), so the
    count is exact: for C3, 60 connections x 25 + 16 biases = 1,516. The forward scatters them
    into a dense, zero-elsewhere kernel and runs one ordinary convolution.
    """

    out_index: torch.Tensor
    in_index: torch.Tensor

    def __init__(self, table: Sequence[str], kernel_size: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = len(table), len(table[0])
        pairs = [(out, inp) for out in range(self.out_channels)
                 for inp in range(self.in_channels) if table[inp][out] == "X"]
        self.pairs = tuple(pairs)  # (output map, input map) of each kernel in ``weight``
        self.kernel_size = kernel_size
        # Inputs per output unit (connected maps x k x k), for the paper's fan-in init.
        self.fan_in = [sum(o == out for o, _ in pairs) * kernel_size**2
                       for out in range(self.out_channels)]
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(self.out_channels))
        self.register_buffer("out_index", torch.tensor([o for o, _ in pairs]), persistent=False)
        self.register_buffer("in_index", torch.tensor([i for _, i in pairs]), persistent=False)

    def connection_mask(self) -> torch.Tensor:
        """(out, in) booleans: True where output map ``out`` reads input map ``in``."""
        mask = torch.zeros(self.out_channels, self.in_channels, dtype=torch.bool,
                           device=self.out_index.device)
        mask[self.out_index, self.in_index] = True
        return mask

    def dense_weight(self) -> torch.Tensor:
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        return dense.index_put((self.out_index, self.in_index), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"connections={self.weight.shape[0]}")


class EuclideanRBF(nn.Module):
    """Output layer: y_i = sum_j (x_j - w_ij)^2 with fixed prototypes w (Eq. 7).

    The prototypes are a buffer, not parameters: the paper keeps them fixed.
    """

    prototypes: torch.Tensor

    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = x.unsqueeze(1) - self.prototypes.unsqueeze(0)
        return diff.pow(2).sum(dim=-1)

    def extra_repr(self) -> str:
        classes, features = self.prototypes.shape
        return f"{features} -> {classes}, fixed prototypes"


def _check_digit_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= len(DIGIT_BITMAPS):
        raise ValueError(
            f"lenet5: its RBF prototypes are the 10 digit bitmaps, so num_classes must be "
            f"1..10, got {num_classes} (lenet5_modern has a linear output for any count)"
        )


class LeNet5(Classifier):
    """LeNet-5 as in LeCun et al. 1998, Section II.B and Fig. 2.

    C1 6@5x5 -> S2 -> C3 16@5x5 (Table I) -> S4 -> C5 120@5x5 -> F6 84 -> RBF 10, with
    f(a) = 1.7159 tanh(2a/3) after every layer up to F6.

    Logits: the model returns ``-y`` (minus the RBF distances), so argmax is the nearest
    prototype. The paper trains with the MAP criterion (Eq. 9),
    E = mean_p [ y_D(Z^p) + log(e^-j + sum_i e^-y_i(Z^p)) ]; cross-entropy on ``-y`` is exactly
    that criterion without the constant "rubbish class" term e^-j (j -> infinity);
    :func:`map_criterion` is Eq. 9 itself.

    Init (Appendix A): every weight and bias uniform in +-2.4/F_in, F_in = the fan-in of the
    unit the connection belongs to.
    """

    classifier_path = "output"  # the last layer: features -> class scores

    fixed_input_size = (32, 32)

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        _check_digit_classes(num_classes)
        self.in_chans = in_chans
        self.features = nn.Sequential(OrderedDict(
            c1=nn.Conv2d(in_chans, 6, kernel_size=5),
            c1_act=ScaledTanh(),
            s2=TrainableSubsampling(6),
            s2_act=ScaledTanh(),
            c3=ConnectionTableConv2d(C3_TABLE, kernel_size=5),
            c3_act=ScaledTanh(),
            s4=TrainableSubsampling(16),
            s4_act=ScaledTanh(),
            c5=nn.Conv2d(16, 120, kernel_size=5),  # full connection to S4: 5x5 in, 1x1 out
            c5_act=ScaledTanh(),
        ))
        self.f6 = nn.Linear(120, 84)
        self.f6_act = ScaledTanh()
        self.output = EuclideanRBF(digit_prototypes()[:num_classes])
        self.feature_info = [
            {"channels": 6, "reduction": 1, "module": "features.c1_act"},
            {"channels": 6, "reduction": 2, "module": "features.s2_act"},
            {"channels": 16, "reduction": 2, "module": "features.c3_act"},
            {"channels": 16, "reduction": 4, "module": "features.s4_act"},
            {"channels": 120, "reduction": 32, "module": "features.c5_act"},
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, ConnectionTableConv2d):  # C3: 3, 4 or 6 input maps per output map
                bounds = [2.4 / fan_in for fan_in in m.fan_in]
                _uniform_per_map(m.weight, [bounds[out] for out, _ in m.pairs])
                _uniform_per_map(m.bias, bounds)
                continue
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            elif isinstance(m, nn.Linear):
                fan_in = m.in_features
            elif isinstance(m, TrainableSubsampling):
                fan_in = 4  # the four inputs of its 2x2 window
            else:
                continue
            for p in (m.weight, m.bias):
                if p is not None:
                    nn.init.uniform_(p, -2.4 / fan_in, 2.4 / fan_in)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        features = self.f6_act(self.f6(torch.flatten(x, 1)))
        if isinstance(self.output, nn.Identity):  # num_classes=0: F6's 84 features
            return features
        return -self.output(features)

    def reset_classifier(self, num_classes: int) -> None:
        """The RBF output keeps its fixed digit prototypes: ``num_classes`` of the ten (or 0,
        for F6's features)."""
        if num_classes == 0:
            self.output = nn.Identity()
            return
        _check_digit_classes(num_classes)
        self.output = EuclideanRBF(digit_prototypes()[:num_classes]).to(self.f6.weight.device)

    def num_pooled_features(self) -> int:
        return self.f6.out_features


def map_criterion(logits: torch.Tensor, targets: torch.Tensor, j: float = 10.0) -> torch.Tensor:
    """The paper's MAP training criterion (Eq. 9) on ``lenet5``'s logits (= -RBF distances).

    E = mean_p [ y_D + log(e^-j + sum_i e^-y_i) ]: it pulls the right class's distance down
    and, through the log-sum, pushes the others up, with a "rubbish class" of fixed distance
    j. As j grows it tends to cross-entropy on the logits. The paper does not state the j
    it used; 10 is cnnlab's default.
    """
    rubbish = logits.new_full((logits.shape[0], 1), -j)
    return (torch.logsumexp(torch.cat([rubbish, logits], dim=1), dim=1)
            - logits.gather(1, targets.unsqueeze(1)).squeeze(1)).mean()


def _uniform_per_map(param: torch.Tensor, bounds: Sequence[float]) -> None:
    """Uniform in +-bounds[i] for each leading index i."""
    with torch.no_grad():
        scale = torch.tensor(bounds, dtype=param.dtype, device=param.device)
        param.uniform_(-1.0, 1.0).mul_(scale.view((-1,) + (1,) * (param.dim() - 1)))


class LeNetModern(Classifier):
    """LeNet-5's widths with today's layers: ReLU, 2x2 max-pooling, a full C3, a linear output.

    conv1 pads by 2 so raw 28x28 MNIST gives C1's 28x28 maps (as the paper's 32x32 did).
    PyTorch's default (Kaiming-uniform) init.
    """

    classifier_path = "classifier.4"  # the last layer: features -> class scores

    fixed_input_size = (28, 28)

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )
        self.feature_info = [
            {"channels": 6, "reduction": 2, "module": "features.2"},
            {"channels": 16, "reduction": 4, "module": "features.5"},
        ]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))


class LeNetLecture(Classifier):
    """The lectures' LeNet (the Caffe MNIST tutorial's widths, with "same" padding):
    conv 20@5x5 -> ReLU -> pool -> conv 50@5x5 -> ReLU -> pool -> FC 500 -> ReLU -> FC 10.

    Maps: 20x28x28, 20x14x14, 50x14x14, 50x7x7. PyTorch's default init.
    """

    classifier_path = "classifier.2"  # the last layer: features -> class scores

    fixed_input_size = (28, 28)

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 20, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(50 * 7 * 7, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, num_classes),
        )
        self.feature_info = [
            {"channels": 20, "reduction": 2, "module": "features.2"},
            {"channels": 50, "reduction": 4, "module": "features.5"},
        ]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))


@register_model(
    family="lenet",
    paper=LECUN_1998,
    input_size=(1, 32, 32),
    dataset="mnist",
    num_classes=10,
    params=60_000,
    top1_error=0.95,
    error_source="LeCun et al. 1998, Sec. III.C: MNIST test error without distortions",
    recipe="lecun1998",
    deviations=(
        "the RBF prototypes are cnnlab's own 7x12 digit bitmaps (the paper does not print its)",
        "returns -RBF distances as logits; train with cross-entropy, the MAP criterion (Eq. 9) "
        "without its constant e^-j term",
    ),
)
def lenet5(**kwargs) -> LeNet5:
    return LeNet5(**kwargs)


@register_model(
    family="lenet",
    paper=LECUN_1998,
    input_size=(1, 28, 28),
    dataset="mnist",
    num_classes=10,
    params=61_706,
    recipe="fast_cpu",
    deviations=(
        "ReLU instead of scaled tanh, max- instead of trainable subsampling",
        "C3 fully connected to S2 (no Table I), linear 84->10 output instead of RBF units",
        "conv1 pads by 2 so it takes raw 28x28 MNIST",
    ),
)
def lenet5_modern(**kwargs) -> LeNetModern:
    return LeNetModern(**kwargs)


@register_model(
    family="lenet",
    paper=LECUN_1998,
    input_size=(1, 28, 28),
    dataset="mnist",
    num_classes=10,
    params=1_256_080,
    recipe="fast_cpu",
    deviations=(
        "the lectures' (Caffe tutorial) widths 20/50/500 with padding 2, ReLU and max-pooling",
    ),
)
def lenet_lecture(**kwargs) -> LeNetLecture:
    return LeNetLecture(**kwargs)

