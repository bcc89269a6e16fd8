"""The memory-format rule shared with the C++ wrappers (csrc/common/tensor_checks.h).

An op computes in, and returns, channels_last when its input is strictly channels_last (rank 4 or 5) and
contiguous otherwise. Fake kernels use this rule so compiled graphs see the strides the kernels produce.
"""

from __future__ import annotations

import torch


def output_memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.is_contiguous():
        return torch.contiguous_format
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def empty_in_format(shape, like: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)
