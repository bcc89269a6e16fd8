"""The meaning of every pyaccel_nas op, as a composition of standard PyTorch ops.

Tests compare the compiled kernels to these functions, benchmarks time them as "eager" (and under
torch.compile), and the public ops fall back to them where the extension has no kernel. They take the
same arguments as the public functions in :mod:`pyaccel_nas.ops` and do no validation of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def sep_conv2d(
    x: torch.Tensor,
    dw_weight: torch.Tensor,
    pw_weight: torch.Tensor,
    pw_bias: torch.Tensor | None = None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    pre_relu: bool = True,
) -> torch.Tensor:
    """ReLU (optional) -> depthwise conv (groups = C) -> pointwise 1x1 conv (+ bias).

    A 1x1 depthwise kernel is a per-channel scale of the padded, strided input, and is computed as one, so
    that MAC counts (which leave element-wise work out) agree with the fused op's formula."""
    h = F.relu(x) if pre_relu else x
    if dw_weight.shape[-2:] == (1, 1):
        pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
        stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
        h = F.pad(h, (pad_w, pad_w, pad_h, pad_h))[:, :, ::stride_h, ::stride_w] * dw_weight.view(1, -1, 1, 1)
    else:
        h = F.conv2d(h, dw_weight, stride=stride, padding=padding, dilation=dilation, groups=x.shape[1])
    return F.conv2d(h, pw_weight, pw_bias)


def effective_gate(gate: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """The gate as applied: entries with |g| < threshold count as zero (and get no gradient)."""
    if threshold is None:
        return gate
    return torch.where(gate.abs() < threshold, torch.zeros_like(gate), gate)


def channel_gate(x: torch.Tensor, gate: torch.Tensor, *, threshold: float | None = None) -> torch.Tensor:
    """x * gate broadcast over dim 1 of a rank 2-5 tensor."""
    return x * effective_gate(gate, threshold).view(1, -1, *([1] * (x.dim() - 2)))


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Training-mode batch normalization: batch statistics, running statistics updated in place."""
    return F.batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum=momentum, eps=eps)


def pool2d(
    x: torch.Tensor,
    mode: str,
    kernel_size,
    stride=None,
    padding=0,
    *,
    count_include_pad: bool = True,
) -> torch.Tensor:
    """F.max_pool2d (mode "max") or F.avg_pool2d (mode "avg")."""
    if mode == "max":
        return F.max_pool2d(x, kernel_size, stride, padding)
    return F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=count_include_pad)


def default_size(branches: Sequence[torch.Tensor]) -> list[int]:
    """The output size multires_sum uses when none is given: the largest branch's, dimension by dimension."""
    return [max(b.shape[d] for b in branches) for d in range(2, branches[0].dim())]


def multires_sum(
    branches: Sequence[torch.Tensor],
    weights: torch.Tensor,
    *,
    size: Sequence[int] | None = None,
    mode: str = "nearest",
) -> torch.Tensor:
    """sum_k weights[k] * interpolate(branches[k], size, mode) with align_corners=False for linear modes."""
    size = list(size) if size is not None else default_size(branches)
    out = None
    for k, branch in enumerate(branches):
        if list(branch.shape[2:]) != size:
            align = None if mode == "nearest" else False
            branch = F.interpolate(branch, size=size, mode=mode, align_corners=align)
        term = weights[k] * branch
        out = term if out is None else out + term
    return out
