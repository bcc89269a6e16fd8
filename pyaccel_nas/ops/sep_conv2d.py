"""sep_conv2d: fused ReLU -> depthwise kxk -> pointwise 1x1 (+ bias); a dilated conv is dilation > 1."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from pyaccel_nas import _extension
from pyaccel_nas.ops import reference
from pyaccel_nas.ops._layout import empty_in_format, output_memory_format
from pyaccel_nas.ops._routing import KERNEL, REFERENCE, route
from pyaccel_nas.ops._validation import check_same_device_dtype, check_tensor, int_pair

OP = "sep_conv2d"


def _output_hw(x_hw, kernel, stride, padding, dilation) -> list[int]:
    out = []
    for size, k, s, p, d in zip(x_hw, kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        if size + 2 * p < span:
            raise ValueError(
                f"{OP}: padded input size {size + 2 * p} is smaller than the dilated kernel ({span}); "
                f"input {tuple(x_hw)}, kernel {tuple(kernel)}, padding {padding}, dilation {dilation}"
            )
        out.append((size + 2 * p - span) // s + 1)
    return out


def _check(x, dw_weight, pw_weight, pw_bias, stride, padding, dilation) -> list[int]:
    """Validates the arguments and returns the output shape."""
    check_tensor(OP, "x", x, ranks=(4,))
    check_tensor(OP, "dw_weight", dw_weight)
    check_tensor(OP, "pw_weight", pw_weight)
    check_same_device_dtype(OP, "dw_weight", dw_weight, "x", x)
    check_same_device_dtype(OP, "pw_weight", pw_weight, "x", x)
    n, c, h, w = x.shape
    if c < 1:  # a depthwise conv of no channels has no groups: torch's conv2d (the reference) refuses it too
        raise ValueError(f"{OP}: `x` must have C >= 1 channels, got shape {tuple(x.shape)}")
    if dw_weight.dim() != 4 or dw_weight.shape[0] != c or dw_weight.shape[1] != 1 or min(dw_weight.shape[2:]) < 1:
        raise ValueError(f"{OP}: `dw_weight` must have shape (C, 1, kh, kw) with C = {c}, got {tuple(dw_weight.shape)}")
    if pw_weight.dim() != 4 or pw_weight.shape[0] < 1 or pw_weight.shape[1] != c or tuple(pw_weight.shape[2:]) != (1, 1):
        raise ValueError(f"{OP}: `pw_weight` must have shape (C_out, C, 1, 1) with C = {c}, got {tuple(pw_weight.shape)}")
    c_out = pw_weight.shape[0]
    if pw_bias is not None:
        check_tensor(OP, "pw_bias", pw_bias)
        check_same_device_dtype(OP, "pw_bias", pw_bias, "x", x)
        if tuple(pw_bias.shape) != (c_out,):
            raise ValueError(f"{OP}: `pw_bias` must have shape (C_out,) = ({c_out},), got {tuple(pw_bias.shape)}")
    return [n, c_out, *_output_hw((h, w), dw_weight.shape[2:], stride, padding, dilation)]


def sep_conv2d(
    x: torch.Tensor,
    dw_weight: torch.Tensor,
    pw_weight: torch.Tensor,
    pw_bias: torch.Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    pre_relu: bool = True,
) -> torch.Tensor:
    """Separable convolution in one pass:
    ``conv2d(conv2d(relu(x) if pre_relu else x, dw_weight, stride, padding, dilation, groups=C), pw_weight, pw_bias)``.

    Args:
        x: (N, C, H, W) input, any memory layout.
        dw_weight: (C, 1, kh, kw) depthwise filters.
        pw_weight: (C_out, C, 1, 1) pointwise weights.
        pw_bias: optional (C_out,) bias of the pointwise convolution.
        stride, padding, dilation: of the depthwise convolution, an int or an (h, w) pair.
        pre_relu: apply ReLU to ``x`` first (the DARTS SepConv/DilConv order).

    Returns (N, C_out, H_out, W_out), channels_last if ``x`` is. Training keeps only the inputs for backward:
    the depthwise result is recomputed there instead of stored.
    """
    stride = int_pair(OP, "stride", stride, minimum=1)
    padding = int_pair(OP, "padding", padding, minimum=0)
    dilation = int_pair(OP, "dilation", dilation, minimum=1)
    path = route(OP, x)
    if path == KERNEL:
        # The C++ wrapper validates the arguments (ValueError). Checking them here as well took 4 us a call,
        # and a 20-cell proxy network makes 240 calls a training step (about 1 % of it).
        return torch.ops.pyaccel_nas.sep_conv2d(x, dw_weight, pw_weight, pw_bias, stride, padding, dilation, pre_relu)
    if path == REFERENCE:
        _check(x, dw_weight, pw_weight, pw_bias, stride, padding, dilation)
    return reference.sep_conv2d(
        x, dw_weight, pw_weight, pw_bias, stride=stride, padding=padding, dilation=dilation, pre_relu=pre_relu
    )


def _register() -> None:
    @torch.library.register_fake("pyaccel_nas::sep_conv2d")
    def _fake(x, dw_weight, pw_weight, pw_bias, stride, padding, dilation, pre_relu):
        shape = _check(x, dw_weight, pw_weight, pw_bias, stride, padding, dilation)
        return empty_in_format(shape, x, output_memory_format(x))

    @torch.library.register_fake("pyaccel_nas::sep_conv2d_backward")
    def _fake_backward(grad_out, x, dw_weight, pw_weight, stride, padding, dilation, pre_relu):
        _check(x, dw_weight, pw_weight, None, stride, padding, dilation)
        return (
            empty_in_format(x.shape, x, output_memory_format(x)),
            torch.empty_like(dw_weight, memory_format=torch.contiguous_format),
            torch.empty_like(pw_weight, memory_format=torch.contiguous_format),
            pw_weight.new_empty(pw_weight.shape[0]),
        )


    # FLOP formulas, so torch.utils.flop_counter.FlopCounterMode (and MAC counts built on it) see the op.
    # A 1x1 depthwise kernel is a per-channel scale: element-wise work, which MAC counts leave out (as they
    # leave out BatchNorm's), so ReLU -> 1x1 conv run as this op with an identity depthwise part counts as
    # the plain 1x1 conv does.
    def _depthwise_and_pointwise_flops(x_shape, dw_shape, pw_shape, out_shape) -> tuple[int, int]:
        n, c_out, h_out, w_out = out_shape
        pixels = n * h_out * w_out
        taps = dw_shape[2] * dw_shape[3]
        return (0 if taps == 1 else 2 * pixels * x_shape[1] * taps), 2 * pixels * x_shape[1] * c_out

    @register_flop_formula(torch.ops.pyaccel_nas.sep_conv2d)
    def _flops(x_shape, dw_shape, pw_shape, *args, out_shape=None, **kwargs) -> int:
        return sum(_depthwise_and_pointwise_flops(x_shape, dw_shape, pw_shape, out_shape))

    @register_flop_formula(torch.ops.pyaccel_nas.sep_conv2d_backward)
    def _backward_flops(grad_out_shape, x_shape, dw_shape, pw_shape, *args, out_shape=None, **kwargs) -> int:
        depthwise, pointwise = _depthwise_and_pointwise_flops(x_shape, dw_shape, pw_shape, grad_out_shape)
        # the recomputed depthwise result, its weight and input gradients; the pointwise weight and input gradients
        return 3 * depthwise + 2 * pointwise


if _extension.LOADED:
    _register()
