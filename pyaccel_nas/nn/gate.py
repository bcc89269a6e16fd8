"""ChannelGate: a learnable per-channel scale, the pruning signal of multi-dimensional pruning."""

from __future__ import annotations

import torch
from torch import nn

from pyaccel_nas.nn import _args
from pyaccel_nas.nn.fusable import FusableModule


class ChannelGate(FusableModule):
    """``x * gate`` over dim 1 of an (N, C, *spatial) input with 0 to 3 spatial dimensions.

    Args:
        num_channels: C.
        threshold: None, or gates with ``|g| < threshold`` act as zero and get no gradient (pruning-aware
            evaluation); a plain attribute, so it can be changed after construction.
        init: the initial value of every gate.
        device, dtype: of the parameter.

    Parameter: ``gate`` (C,).
    """

    def __init__(
        self,
        num_channels: int,
        threshold: float | None = None,
        init: float = 1.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_channels = _args.positive_int(name, "num_channels", num_channels)
        self.threshold = _args.threshold(name, threshold)
        self.init = float(init)
        self.gate = nn.Parameter(torch.empty(num_channels, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gate, self.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.channel_gate(x, self.gate, threshold=self.threshold)

    def _repr_fields(self) -> list[str]:
        fields = [str(self.num_channels)]
        if self.threshold is not None:
            fields.append(f"threshold={self.threshold}")
        return fields
