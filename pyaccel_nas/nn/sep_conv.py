"""SepConv2d: ReLU -> depthwise kxk -> pointwise 1x1 (+ bias) as one module and one fused op."""

from __future__ import annotations

import math

import torch
from torch import nn

from pyaccel_nas.nn import _args
from pyaccel_nas.nn.fusable import FusableModule


class SepConv2d(FusableModule):
    """Depthwise-separable convolution: ``pointwise(depthwise(relu(x) if pre_relu else x)) + bias``.

    Computes what ``nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, k, stride, padding, dilation, groups=C,
    bias=False), nn.Conv2d(C, C_out, 1, bias=bias))`` computes, in one op that stores no intermediate for
    backward. A dilated convolution is ``dilation > 1``.

    Args:
        in_channels: C, the channels of the input and of the depthwise convolution.
        out_channels: C_out, the channels of the pointwise convolution.
        kernel_size, stride, padding, dilation: of the depthwise convolution, an int or an (h, w) pair.
        bias: learn a (C_out,) bias of the pointwise convolution.
        pre_relu: apply ReLU to the input first (the DARTS SepConv/DilConv order).
        device, dtype: of the parameters, as for ``nn.Conv2d``.

    Parameters: ``dw_weight`` (C, 1, kh, kw), ``pw_weight`` (C_out, C, 1, 1) and ``bias`` (C_out,) or None,
    initialised as the two ``nn.Conv2d`` layers above would be.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        pre_relu: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.in_channels = _args.positive_int(name, "in_channels", in_channels)
        self.out_channels = _args.positive_int(name, "out_channels", out_channels)
        self.kernel_size, self.stride, self.padding, self.dilation = _args.conv_pairs(
            name, kernel_size, stride, padding, dilation
        )
        self.pre_relu = bool(pre_relu)
        factory = {"device": device, "dtype": dtype}
        self.dw_weight = nn.Parameter(torch.empty(in_channels, 1, *self.kernel_size, **factory))
        self.pw_weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1, **factory))
        # Registered even when absent (None), as nn.Conv2d does, so a bias can be assigned later.
        self.register_parameter("bias", nn.Parameter(torch.empty(out_channels, **factory)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialisation of the depthwise, then the pointwise convolution (same RNG order)."""
        nn.init.kaiming_uniform_(self.dw_weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.pw_weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels)  # fan-in of the pointwise convolution
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.sep_conv2d(
            x,
            self.dw_weight,
            self.pw_weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            pre_relu=self.pre_relu,
        )

    def _repr_fields(self) -> list[str]:
        fields = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}", f"stride={self.stride}"]
        if self.padding != (0, 0):
            fields.append(f"padding={self.padding}")
        if self.dilation != (1, 1):
            fields.append(f"dilation={self.dilation}")
        if self.bias is None:
            fields.append("bias=False")
        if not self.pre_relu:
            fields.append("pre_relu=False")
        return fields
