"""Pooling modules that run the fused ``pool2d`` op.

``MaxPool2d`` and ``AvgPool2d`` are ``nn.MaxPool2d`` and ``nn.AvgPool2d`` (subclasses: same arguments and
attributes) whose forward calls :func:`pyaccel_nas.ops.pool2d`. What the op does not cover (dilation,
ceil_mode, return_indices, divisor_override, unbatched (C, H, W) input) runs torch's forward, and so does a
channels-last input: torch's channels-last kernels are vectorised over the channels, and its max pooling
ran 1.25-2.6x faster than the op's channels-last loops (fwd+bwd, DARTS shapes; benchmarks/NOTES.md).
"""

from __future__ import annotations

import torch
from torch import nn

from pyaccel_nas.nn.fusable import FusableModule


def _channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class MaxPool2d(FusableModule, nn.MaxPool2d):
    """``nn.MaxPool2d`` running the fused op."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (input.dim() != 4 or _channels_last(input) or self.dilation not in (1, (1, 1)) or self.ceil_mode
                or self.return_indices):
            return super().forward(input)
        return self.ops.pool2d(input, "max", self.kernel_size, self.stride, self.padding)

    def _repr_fields(self) -> list[str]:
        return [nn.MaxPool2d.extra_repr(self)]


class AvgPool2d(FusableModule, nn.AvgPool2d):
    """``nn.AvgPool2d`` running the fused op."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() != 4 or _channels_last(input) or self.ceil_mode or self.divisor_override is not None:
            return super().forward(input)
        return self.ops.pool2d(input, "avg", self.kernel_size, self.stride, self.padding,
                               count_include_pad=self.count_include_pad)

    def _repr_fields(self) -> list[str]:
        return [nn.AvgPool2d.extra_repr(self)]


def fused_pool(pool: nn.MaxPool2d | nn.AvgPool2d) -> MaxPool2d | AvgPool2d:
    """The fused module of ``pool``'s class, with its arguments."""
    if type(pool) is nn.MaxPool2d:
        fused = MaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.return_indices,
                          pool.ceil_mode)
    else:
        fused = AvgPool2d(pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, pool.count_include_pad,
                          pool.divisor_override)
    return fused.train(pool.training)


FUSED_POOL = {nn.MaxPool2d: fused_pool, nn.AvgPool2d: fused_pool}
