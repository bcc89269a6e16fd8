"""MultiResSum: a learned softmax-weighted sum of branches computed at different resolutions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyaccel_nas.nn import _args
from pyaccel_nas.nn.fusable import FusableModule

MODES = ("nearest", "bilinear", "trilinear")


class MultiResSum(FusableModule):
    """``sum_k softmax(logits)[k] * interpolate(branches[k], size, mode)``, no upsampled branch materialised.

    Args:
        num_branches: K, the number of branches ``forward`` takes.
        mode: "nearest", "bilinear" (4-D branches) or "trilinear" (5-D branches), ``align_corners=False``.
        size: the output spatial size; None means the largest branch's. Every branch's size must divide it.
        device, dtype: of the parameter.

    Parameter: ``logits`` (K,), zeros at first (equal weights).
    """

    def __init__(
        self,
        num_branches: int,
        mode: str = "nearest",
        size: Sequence[int] | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_branches = _args.positive_int(name, "num_branches", num_branches)
        if mode not in MODES:
            raise ValueError(f"{name}: `mode` must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.size = None if size is None else _args.positive_ints(name, "size", size)
        self.logits = nn.Parameter(torch.empty(num_branches, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.logits)

    def weights(self) -> torch.Tensor:
        """The (K,) branch weights, ``softmax(logits)``."""
        return torch.softmax(self.logits, dim=0)

    def forward(self, branches: Sequence[torch.Tensor]) -> torch.Tensor:
        # Anything but a list/tuple is left to the op, which says what it takes.
        if isinstance(branches, (list, tuple)) and len(branches) != self.num_branches:
            raise ValueError(f"{type(self).__name__}: expected {self.num_branches} branches, got {len(branches)}")
        return self.ops.multires_sum(branches, self.weights(), size=self.size, mode=self.mode)

    def _repr_fields(self) -> list[str]:
        fields = [str(self.num_branches), f"mode={self.mode!r}"]
        if self.size is not None:
            fields.append(f"size={self.size}")
        return fields
