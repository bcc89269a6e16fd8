"""The DARTS SepConv and DilConv operations, state_dict-compatible with DARTS' ``operations.py``.

Each keeps DARTS' ``self.op`` Sequential, so DARTS checkpoints load with ``strict=True`` and keys, shapes and
initialisation are DARTS'. The forward does not run that Sequential module by module: it passes the
convolutions' weights to one ``sep_conv2d`` per ReLU -> depthwise -> pointwise triple, then runs the
BatchNorm module. Replacing or wrapping the ReLU/convolution entries of ``op`` therefore has no effect.
"""

from __future__ import annotations

import torch
from torch import nn

from pyaccel_nas.nn import _args
from pyaccel_nas.nn.batch_norm import BatchNorm2d
from pyaccel_nas.nn.fusable import FusableModule


class _DartsConv(FusableModule):
    def _relu_sep_conv(self, x: torch.Tensor, depthwise: nn.Conv2d, pointwise: nn.Conv2d) -> torch.Tensor:
        """ReLU -> ``depthwise`` -> ``pointwise`` with those modules' weights and geometry, as one op."""
        return self.ops.sep_conv2d(
            x,
            depthwise.weight,
            pointwise.weight,
            pointwise.bias,
            stride=depthwise.stride,
            padding=depthwise.padding,
            dilation=depthwise.dilation,
        )


def _check(owner: str, C_in, C_out, kernel_size, stride, padding, dilation) -> None:
    # nn.Conv2d accepts some of these (e.g. kernel_size 0) and fails only later, or never.
    _args.positive_int(owner, "C_in", C_in)
    _args.positive_int(owner, "C_out", C_out)
    _args.conv_pairs(owner, kernel_size, stride, padding, dilation)


class DilConv(_DartsConv):
    """DARTS DilConv: ReLU -> dilated depthwise conv -> 1x1 conv -> BatchNorm.

    ``op``: ``Sequential(ReLU, Conv2d(C_in, C_in, kernel_size, stride, padding, dilation, groups=C_in,
    bias=False), Conv2d(C_in, C_out, 1, bias=False), BatchNorm2d(C_out, affine=affine))``.
    """

    def __init__(
        self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int, affine: bool = True
    ) -> None:
        super().__init__()
        _check(type(self).__name__, C_in, C_out, kernel_size, stride, padding, dilation)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, depthwise, pointwise, bn = self.op
        return bn(self._relu_sep_conv(x, depthwise, pointwise))


class SepConv(_DartsConv):
    """DARTS SepConv: (ReLU -> depthwise conv -> 1x1 conv -> BatchNorm) twice, striding only the first.

    ``op``: ``Sequential(ReLU, Conv2d(C_in, C_in, k, stride, padding, groups=C_in, bias=False),
    Conv2d(C_in, C_in, 1, bias=False), BatchNorm2d(C_in, affine), ReLU, Conv2d(C_in, C_in, k, 1, padding,
    groups=C_in, bias=False), Conv2d(C_in, C_out, 1, bias=False), BatchNorm2d(C_out, affine))``.
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__()
        _check(type(self).__name__, C_in, C_out, kernel_size, stride, padding, 1)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, dw1, pw1, bn1, _, dw2, pw2, bn2 = self.op
        return bn2(self._relu_sep_conv(bn1(self._relu_sep_conv(x, dw1, pw1)), dw2, pw2))
