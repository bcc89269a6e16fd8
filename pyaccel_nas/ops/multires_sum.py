"""multires_sum: weighted sum of 2-D or 3-D branches at integer-ratio resolutions, upsampled on the fly."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyaccel_nas import _extension
from pyaccel_nas.ops import reference
from pyaccel_nas.ops._layout import empty_in_format, output_memory_format
from pyaccel_nas.ops._routing import AUTOCAST, KERNEL, route
from pyaccel_nas.ops._validation import check_same_device_dtype, check_tensor, int_list

OP = "multires_sum"
LINEAR_MODE = {4: "bilinear", 5: "trilinear"}


def _check(branches, weights, size, mode) -> list[int]:
    """Validates the arguments and returns the output shape."""
    if isinstance(branches, torch.Tensor) or not isinstance(branches, Sequence):
        raise TypeError(f"{OP}: `branches` must be a list of tensors, got {type(branches).__name__}")
    if len(branches) == 0:
        raise ValueError(f"{OP}: `branches` must not be empty")
    first = branches[0]
    check_tensor(OP, "branches[0]", first, ranks=(4, 5))
    rank = first.dim()
    for k, b in enumerate(branches):
        check_tensor(OP, f"branches[{k}]", b, ranks=(rank,))
        check_same_device_dtype(OP, f"branches[{k}]", b, "branches[0]", first)
        if b.shape[:2] != first.shape[:2] or min(b.shape[2:]) < 1:
            raise ValueError(
                f"{OP}: `branches[{k}]` must have (N, C) = {tuple(first.shape[:2])} like branches[0] and non-empty "
                f"spatial sizes, got shape {tuple(b.shape)}"
            )
    check_tensor(OP, "weights", weights)
    check_same_device_dtype(OP, "weights", weights, "branches[0]", first)
    if weights.dim() != 1 or weights.shape[0] != len(branches):
        raise ValueError(f"{OP}: `weights` must have shape ({len(branches)},), one per branch, got {tuple(weights.shape)}")
    if mode not in ("nearest", LINEAR_MODE[rank]):
        raise ValueError(f"{OP}: `mode` must be 'nearest' or '{LINEAR_MODE[rank]}' for rank-{rank} branches, got {mode!r}")
    if size is None:
        size = reference.default_size(branches)
    elif len(size) != rank - 2:
        raise ValueError(f"{OP}: `size` must have {rank - 2} elements for rank-{rank} branches, got {list(size)}")
    for k, b in enumerate(branches):
        if any(s < 1 or s % bs != 0 for s, bs in zip(size, b.shape[2:])):
            raise ValueError(
                f"{OP}: the output size {list(size)} must be a positive integer multiple of every branch's spatial "
                f"size; branches[{k}] has shape {tuple(b.shape)}"
            )
    return [*first.shape[:2], *size]


def multires_sum(
    branches: Sequence[torch.Tensor],
    weights: torch.Tensor,
    *,
    size: Sequence[int] | None = None,
    mode: str = "nearest",
) -> torch.Tensor:
    """``sum_k weights[k] * interpolate(branches[k], size, mode)`` without materialising any upsampled branch.

    Args:
        branches: K tensors of shape (N, C, H_k, W_k) or (N, C, T_k, H_k, W_k); every output size must be an
            integer multiple of every branch's size.
        weights: (K,) branch weights (e.g. a softmax of importance logits); gradients flow to them.
        size: output spatial size; defaults to the largest branch's.
        mode: "nearest", or "bilinear" (4-D) / "trilinear" (5-D) with ``align_corners=False``.

    Returns (N, C, *size), in the memory layout of ``branches[0]``.
    """
    if size is not None:
        size = int_list(OP, "size", size)
    # routed by `weights`, the one tensor every call has (`branches` may be empty or no list: _check says so);
    # _check holds every branch to its device and dtype
    path = route(OP, weights)
    if path != AUTOCAST:
        _check(branches, weights, size, mode)
    if path == KERNEL:
        return torch.ops.pyaccel_nas.multires_sum(list(branches), weights, size, mode)
    return reference.multires_sum(branches, weights, size=size, mode=mode)


def _register() -> None:
    @torch.library.register_fake("pyaccel_nas::multires_sum")
    def _fake(branches, weights, size, mode):
        shape = _check(branches, weights, size, mode)
        return empty_in_format(shape, branches[0], output_memory_format(branches[0]))

    @torch.library.register_fake("pyaccel_nas::multires_sum_backward")
    def _fake_backward(grad_out, branches, weights, mode):
        _check(branches, weights, list(grad_out.shape[2:]), mode)
        fmt = output_memory_format(branches[0])
        return [empty_in_format(b.shape, b, fmt) for b in branches], weights.new_empty(weights.shape)



if _extension.LOADED:
    _register()
