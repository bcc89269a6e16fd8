"""BatchNorm modules whose training-mode forward runs the fused ``batch_norm`` op.

``BatchNorm1d/2d/3d`` are ``nn.BatchNorm1d/2d/3d`` (subclasses: same arguments, parameters, buffers,
state_dict and evaluation-mode forward) whose training forward normalizes with
:func:`pyaccel_nas.ops.batch_norm`, the running statistics updated by the op itself.
"""

from __future__ import annotations

import torch
from torch import nn

from pyaccel_nas.nn.fusable import FusableModule


class _FusedTrainingForward(FusableModule):
    """The forward shared by the three classes (they differ only in the input ranks they accept)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(input)  # normalization by the running statistics: torch's
        self._check_input_dim(input)
        # nn.BatchNorm's bookkeeping, kept as it is: batches counted, cumulative average when momentum is None
        momentum = self.momentum if self.momentum is not None else 0.0
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        tracked = self.track_running_stats
        return self.ops.batch_norm(input, self.running_mean if tracked else None, self.running_var if tracked else None,
                                   self.weight, self.bias, momentum=momentum, eps=self.eps)

    def _repr_fields(self) -> list[str]:
        return [nn.modules.batchnorm._NormBase.extra_repr(self)]


class BatchNorm1d(_FusedTrainingForward, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` (inputs (N, C) or (N, C, L)) running the fused op in training."""


class BatchNorm2d(_FusedTrainingForward, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` running the fused op in training."""


class BatchNorm3d(_FusedTrainingForward, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` running the fused op in training."""


_FUSED_CLASS = {nn.BatchNorm1d: BatchNorm1d, nn.BatchNorm2d: BatchNorm2d, nn.BatchNorm3d: BatchNorm3d}


def fused_batchnorm(bn: nn.modules.batchnorm._BatchNorm) -> nn.modules.batchnorm._BatchNorm:
    """The fused module of ``bn``'s class holding ``bn``'s own Parameters and buffers (the same tensor
    objects: optimizers, tied weights and checkpoints see no difference)."""
    fused = _FUSED_CLASS[type(bn)](bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                                   device="meta")
    for name, value in [*bn._parameters.items(), *bn._buffers.items()]:
        setattr(fused, name, value)
    return fused.train(bn.training)


FUSED_BATCHNORM = dict.fromkeys(_FUSED_CLASS, fused_batchnorm)
