"""The eight candidate operations of the search space, as modules (the DARTS set and definitions).

The separable and dilated convolutions are :mod:`pyaccel_nas.nn`'s DARTS-compatible ``SepConv`` and
``DilConv``, which run on the fused ``sep_conv2d`` op (or its reference with ``set_fused(model, False)``).
The cell-input preprocessing (``ReLUConvBN`` with a 1x1 conv, ``FactorizedReduce``) runs its ReLU and 1x1
convs as ``sep_conv2d`` with an identity depthwise part when fused: one pass instead of a ReLU, a copy and
oneDNN's 1x1 conv (fwd+bwd 1.4-5x faster on the preprocessing shapes of the c4r4 proxy and of DARTS'
evaluation networks, 1.1-1.2x on their last stage, 8x8 planes of 256-576 channels;
``python -m benchmarks.relu_conv1x1``, ``benchmarks/NOTES.md``). Unfused, they run module by module, as
DARTS does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pyaccel_nas.nn import AvgPool2d, BatchNorm2d, DilConv, MaxPool2d, SepConv
from pyaccel_nas.nn.fusable import FusableModule


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output shape (strided like the other operations)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def _relu_conv1x1(module: FusableModule, x: torch.Tensor, conv: nn.Conv2d, stride=None) -> torch.Tensor:
    """ReLU -> the 1x1 ``conv`` (at ``stride``, default the conv's) as one fused ``sep_conv2d``: its depthwise
    part multiplies by the module's ``identity`` buffer of ones (a 1x1 depthwise conv that changes nothing)."""
    stride = conv.stride if stride is None else stride
    return module.ops.sep_conv2d(x, module.identity, conv.weight, conv.bias, stride=stride, pre_relu=True)


class FactorizedReduce(FusableModule):
    """Halves the resolution without losing half the pixels: two 1x1 stride-2 convs, one shifted by a pixel."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        # DARTS halves C_out evenly; channel-reduced proxies (36 / 4 = 9) need odd widths too
        self.conv_1 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = BatchNorm2d(C_out, affine=affine)
        self.register_buffer("identity", torch.ones(C_in, 1, 1, 1), persistent=False)  # not in the state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            # Both convs are 1x1 at stride 2: conv_1 reads x's even rows and columns, conv_2 (shifted by a pixel)
            # its odd ones, and for an odd size a last row and column of the padding. Both quarters are
            # gathered in one copy and each conv runs at stride 1 on its own: x is read once and one gradient
            # is scattered back (2.5x faster fwd+bwd than conv_1 at stride 2 beside a padded, shifted copy;
            # 64x48x32x32 -> 32 with its BatchNorm; benchmarks/NOTES.md). The ReLU runs inside the op (it keeps
            # the padding's zeros zero).
            height, width = x.shape[-2:]
            if height % 2 or width % 2:
                x = nn.functional.pad(x, (0, width % 2, 0, height % 2))
            pixels = x.unflatten(3, (x.shape[3] // 2, 2)).unflatten(2, (x.shape[2] // 2, 2))
            even, odd = pixels.diagonal(dim1=3, dim2=5).permute(4, 0, 1, 2, 3).contiguous().unbind(0)
            return self.bn(torch.cat([_relu_conv1x1(self, even, self.conv_1, stride=1),
                                      _relu_conv1x1(self, odd, self.conv_2, stride=1)], dim=1))
        x = self.relu(x)
        # odd sizes: pad so the shifted branch has as many pixels as the first
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class ReLUConvBN(nn.Sequential, FusableModule):
    """ReLU -> Conv2d -> BatchNorm (DARTS' cell-input preprocessing); fused, a 1x1 conv runs with its ReLU."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            BatchNorm2d(C_out, affine=affine),
        )
        self.register_buffer("identity", torch.ones(C_in, 1, 1, 1), persistent=False)  # not in the state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, conv, bn = self
        if not (self.fused and conv.kernel_size == (1, 1) and conv.padding == (0, 0)):
            return super().forward(x)
        return bn(_relu_conv1x1(self, x, conv))


OPERATIONS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
}
