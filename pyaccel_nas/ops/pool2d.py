"""pool2d: max or average pooling of an (N, C, H, W) tensor (F.max_pool2d / F.avg_pool2d, dilation 1,
ceil_mode False)."""

from __future__ import annotations

import torch

from pyaccel_nas import _extension
from pyaccel_nas.ops import reference
from pyaccel_nas.ops._layout import empty_in_format, output_memory_format
from pyaccel_nas.ops._routing import AUTOCAST, KERNEL, route
from pyaccel_nas.ops._validation import check_tensor, int_pair

OP = "pool2d"
MODES = ("max", "avg")


def _check(x, mode, kernel_size, stride, padding) -> list[int]:
    """Validates the arguments and returns the output shape."""
    check_tensor(OP, "x", x, ranks=(4,))
    if mode not in MODES:
        raise ValueError(f'{OP}: `mode` must be "max" or "avg", got {mode!r}')
    if kernel_size[0] * kernel_size[1] >= 2**24:  # the CPU backward numbers taps in the activation's dtype
        raise ValueError(f"{OP}: `kernel_size` {kernel_size} has 2^24 taps or more")
    out = []
    for size, k, s, p in zip(x.shape[2:], kernel_size, stride, padding):
        if p > k // 2:  # torch's rule: a window is never all padding
            raise ValueError(f"{OP}: `padding` must be at most half of `kernel_size`, got {padding} for {kernel_size}")
        if size + 2 * p < k:
            raise ValueError(f"{OP}: the padded input {tuple(x.shape[2:])} + 2 x {padding} is smaller than the "
                             f"window {kernel_size}")
        out.append((size + 2 * p - k) // s + 1)
    return [x.shape[0], x.shape[1], *out]


def pool2d(
    x: torch.Tensor,
    mode: str,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    *,
    count_include_pad: bool = True,
) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size, stride, padding)`` (mode ``"max"``) or ``F.avg_pool2d(x, kernel_size,
    stride, padding, count_include_pad=count_include_pad)`` (mode ``"avg"``).

    ``stride`` defaults to ``kernel_size``, as in torch; ``padding`` is at most half the kernel. The result
    has the memory layout of ``x``. Training keeps only ``x`` for the backward, which finds each window's
    maximum again instead of storing indices (torch stores 8 bytes per output).
    """
    kernel_size = int_pair(OP, "kernel_size", kernel_size, minimum=1)
    stride = kernel_size if stride is None else int_pair(OP, "stride", stride, minimum=1)
    padding = int_pair(OP, "padding", padding, minimum=0)
    count_include_pad = bool(count_include_pad)
    path = route(OP, x)
    if path != AUTOCAST:
        _check(x, mode, kernel_size, stride, padding)
    if path == KERNEL:
        return torch.ops.pyaccel_nas.pool2d(x, mode, kernel_size, stride, padding, count_include_pad)
    return reference.pool2d(x, mode, kernel_size, stride, padding, count_include_pad=count_include_pad)


def _register() -> None:
    @torch.library.register_fake("pyaccel_nas::pool2d")
    def _fake(x, mode, kernel_size, stride, padding, count_include_pad):
        return empty_in_format(_check(x, mode, kernel_size, stride, padding), x, output_memory_format(x))

    @torch.library.register_fake("pyaccel_nas::pool2d_backward")
    def _fake_backward(grad_out, x, mode, kernel_size, stride, padding, count_include_pad):
        _check(x, mode, kernel_size, stride, padding)
        return empty_in_format(x.shape, x, output_memory_format(x))


if _extension.LOADED:
    _register()
