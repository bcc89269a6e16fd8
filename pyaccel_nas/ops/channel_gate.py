"""channel_gate: per-channel gating of a rank 2-5 tensor, with an optional hard threshold."""

from __future__ import annotations

import torch

from pyaccel_nas import _extension
from pyaccel_nas.ops import reference
from pyaccel_nas.ops._layout import empty_in_format, output_memory_format
from pyaccel_nas.ops._routing import KERNEL, REFERENCE, route
from pyaccel_nas.ops._validation import check_same_device_dtype, check_tensor

OP = "channel_gate"


def _check(x, gate, threshold) -> None:
    check_tensor(OP, "x", x, ranks=(2, 3, 4, 5))
    check_tensor(OP, "gate", gate)
    check_same_device_dtype(OP, "gate", gate, "x", x)
    if gate.dim() != 1 or gate.shape[0] != x.shape[1]:
        raise ValueError(
            f"{OP}: `gate` must have shape (C,) = ({x.shape[1]},) to match x of shape {tuple(x.shape)}, "
            f"got {tuple(gate.shape)}"
        )
    if threshold is not None and not threshold >= 0:
        raise ValueError(f"{OP}: `threshold` must be None or >= 0, got {threshold!r}")


def channel_gate(x: torch.Tensor, gate: torch.Tensor, *, threshold: float | None = None) -> torch.Tensor:
    """``x * gate.view(1, C, 1, ...)`` for x of shape (N, C, *spatial) with 0 to 3 spatial dimensions.

    With ``threshold``, gates with ``|g| < threshold`` count as zero and receive no gradient (pruning-aware
    evaluation). Gradients flow to ``x`` and ``gate``. The result has the memory layout of ``x``
    (channels_last stays channels_last).
    """
    if threshold is not None:
        threshold = float(threshold)
    path = route(OP, x)
    if path == KERNEL:
        # The C++ wrapper validates the arguments (ValueError). The op is one multiply per element, so at NAS
        # shapes checking them here as well would cost about as much as the kernel.
        return torch.ops.pyaccel_nas.channel_gate.default(x, gate, threshold)
    if path == REFERENCE:
        _check(x, gate, threshold)
    return reference.channel_gate(x, gate, threshold=threshold)


def _register() -> None:
    @torch.library.register_fake("pyaccel_nas::channel_gate")
    def _fake(x, gate, threshold):
        _check(x, gate, threshold)
        return empty_in_format(x.shape, x, output_memory_format(x))

    @torch.library.register_fake("pyaccel_nas::channel_gate_backward")
    def _fake_backward(grad_out, x, gate, threshold):
        _check(x, gate, threshold)
        return empty_in_format(x.shape, x, output_memory_format(x)), gate.new_empty(gate.shape)



if _extension.LOADED:
    _register()
