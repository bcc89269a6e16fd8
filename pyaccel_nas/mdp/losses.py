"""The regularisers of MDP's searching stage: L = L_ce + alpha * L_st + eta * L_gate.

- ``L_st`` (:func:`branch_entropy`): the sum, over the blocks with several resolution branches, of the
  entropy ``-sum_k p_k log p_k`` of the branch importance ``p = softmax(a)``; zero exactly when every
  block relies on one branch, so it pushes each block towards one resolution (a sum, like ``L_gate``, so
  the push on each block does not weaken as the network gets deeper).
- ``L_gate`` (:func:`gate_l1`): the L1 norm ``sum |g|`` of all channel gates (as network slimming's
  penalty on BN scales): every SGD step pulls every gate towards 0 by ``lr * eta``, whatever the network's
  width, while the cross-entropy holds up the gates the network needs.
"""

from __future__ import annotations

import torch
from torch import nn

from pyaccel_nas.nn import ChannelGate, MultiResSum


def branch_entropy(model: nn.Module) -> torch.Tensor:
    """L_st: the summed entropy of softmax(logits) over the model's ``MultiResSum`` modules (0 if none)."""
    entropies = [-(torch.log_softmax(m.logits, 0) * m.weights()).sum() for m in model.modules()
                 if isinstance(m, MultiResSum)]
    return torch.stack(entropies).sum() if entropies else _zero(model)


def gate_l1(model: nn.Module) -> torch.Tensor:
    """L_gate: the sum of |g| over every gate of every ``ChannelGate`` in the model (0 if none)."""
    gates = [m.gate for m in model.modules() if isinstance(m, ChannelGate)]
    return torch.cat(gates).abs().sum() if gates else _zero(model)


def mdp_regulariser(alpha: float, eta: float):
    """``model -> alpha * L_st + eta * L_gate``, the part of the searching loss added to cross-entropy."""
    if alpha < 0 or eta < 0:
        raise ValueError(f"mdp_regulariser: `alpha` and `eta` must be >= 0, got {alpha}, {eta}")
    return lambda model: alpha * branch_entropy(model) + eta * gate_l1(model)


def _zero(model: nn.Module) -> torch.Tensor:
    return torch.zeros((), device=next(model.parameters()).device)
