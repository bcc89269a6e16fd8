"""batch_norm: training-mode batch normalization (batch statistics, running statistics updated in place)."""

from __future__ import annotations

import torch

from pyaccel_nas import _extension
from pyaccel_nas.ops import reference
from pyaccel_nas.ops._layout import empty_in_format, output_memory_format
from pyaccel_nas.ops._routing import KERNEL, REFERENCE, route
from pyaccel_nas.ops._validation import check_same_device_dtype, check_tensor

OP = "batch_norm"


def _check(x, weight, bias, running_mean, running_var, eps) -> None:
    check_tensor(OP, "x", x, ranks=(2, 3, 4, 5))
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is None:
            continue
        check_tensor(OP, name, t)
        check_same_device_dtype(OP, name, t, "x", x)
        if t.dim() != 1 or t.shape[0] != x.shape[1]:
            raise ValueError(
                f"{OP}: `{name}` must have shape (C,) = ({x.shape[1]},) to match x of shape {tuple(x.shape)}, "
                f"got {tuple(t.shape)}"
            )
    if x.numel() != 0 and x.numel() // x.shape[1] <= 1:  # torch's rule and message
        raise ValueError(f"{OP}: Expected more than 1 value per channel when training, got input size {x.shape}")
    if not eps >= 0:
        raise ValueError(f"{OP}: `eps` must be >= 0, got {eps!r}")


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
    """``F.batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum=momentum, eps=eps)``.

    Normalizes each channel (dim 1) of an (N, C, *spatial) tensor with 0 to 3 spatial dimensions by its batch
    mean and biased variance, then scales by ``weight`` and shifts by ``bias`` (each optional, shape (C,)).
    ``running_mean`` and ``running_var``, when given, are updated in place as torch does:
    ``(1 - momentum) * running + momentum * batch``, with the unbiased batch variance. Gradients flow to
    ``x``, ``weight`` and ``bias``. The result has the memory layout of ``x``. Evaluation-mode normalization
    (by the running statistics) is an affine map: use ``F.batch_norm`` for it.
    """
    momentum, eps = float(momentum), float(eps)
    path = route(OP, x)
    if path == KERNEL:
        # The C++ wrapper validates the arguments (ValueError). At the 4x4 and 8x8 planes of proxy networks
        # the op takes 10-20 us, and checking them here as well would add a third.
        return torch.ops.pyaccel_nas.batch_norm.default(x, weight, bias, running_mean, running_var, momentum, eps)[0]
    if path == REFERENCE:
        _check(x, weight, bias, running_mean, running_var, eps)
    return reference.batch_norm(x, running_mean, running_var, weight, bias, momentum=momentum, eps=eps)


def _register() -> None:
    @torch.library.register_fake("pyaccel_nas::batch_norm")
    def _fake(x, weight, bias, running_mean, running_var, momentum, eps):
        _check(x, weight, bias, running_mean, running_var, eps)
        return empty_in_format(x.shape, x, output_memory_format(x)), x.new_empty(x.shape[1]), x.new_empty(x.shape[1])

    @torch.library.register_fake("pyaccel_nas::batch_norm_backward")
    def _fake_backward(grad_out, x, weight, mean, invstd):
        _check(x, weight, None, None, None, 0.0)
        return empty_in_format(x.shape, x, output_memory_format(x)), x.new_empty(x.shape[1]), x.new_empty(x.shape[1])


if _extension.LOADED:
    _register()
