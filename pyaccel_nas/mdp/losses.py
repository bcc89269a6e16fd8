"""The regularisers of MDP's searching stage: L = L_ce + alpha * L_st + eta * L_gate + beta * L_cost.

- ``L_st`` (:func:`branch_entropy`): the sum, over the blocks with several resolution branches, of the
  entropy ``-sum_k p_k log p_k`` of the branch importance ``p = softmax(a)``; zero exactly when every
  block relies on one branch, so it pushes each block towards one resolution (a sum, like ``L_gate``, so
  the push on each block does not weaken as the network gets deeper).
- ``L_gate`` (:func:`gate_l1`): the L1 norm ``sum |g|`` of all channel gates (as network slimming's
  penalty on BN scales): every SGD step pulls every gate towards 0 by ``lr * eta``, whatever the network's
  width, while the cross-entropy holds up the gates the network needs.
- ``L_cost`` (:func:`expected_cost`): the expected MACs of the blocks' resolution branches,
  ``sum_b sum_k p_bk * c_bk``, with ``c_bk`` the MACs of block b's branch k as a fraction of the whole
  (single-resolution) network's (:func:`branch_costs`). Entropy alone only asks each block to pick *some*
  branch, and the full-resolution one always fits the data best; this term makes a block give up resolution
  where that costs the cross-entropy less than the MACs it saves, so resolution shares the MAC reduction
  with channel removal (the term's gradient on a block's logits is ``p_k (c_k - E_p[c])``).
"""

from __future__ import annotations

import torch
from torch import nn

from pyaccel_nas.nn import ChannelGate, MultiResSum, count_macs


def branch_entropy(model: nn.Module) -> torch.Tensor:
    """L_st: the summed entropy of softmax(logits) over the model's ``MultiResSum`` modules (0 if none)."""
    entropies = [-(torch.log_softmax(m.logits, 0) * m.weights()).sum() for m in model.modules()
                 if isinstance(m, MultiResSum)]
    return torch.stack(entropies).sum() if entropies else _zero(model)


def gate_l1(model: nn.Module) -> torch.Tensor:
    """L_gate: the sum of |g| over every gate of every ``ChannelGate`` in the model (0 if none)."""
    gates = [m.gate for m in model.modules() if isinstance(m, ChannelGate)]
    return torch.cat(gates).abs().sum() if gates else _zero(model)


def branch_costs(model: nn.Module, example_input: torch.Tensor, network_macs: float) -> dict[MultiResSum, torch.Tensor]:
    """Per multi-resolution block of ``model`` (an ``MDPNet``), keyed by its ``MultiResSum``: the MACs of
    each branch on one image of ``example_input``'s size, divided by ``network_macs``."""
    inputs = multi_resolution_inputs(model, example_input[:1])
    costs = {}
    for block in inputs:
        branch_macs = [count_macs(_Branch(block, k), inputs[block]) for k in range(len(block.factors))]
        costs[block.mix] = torch.tensor(branch_macs, dtype=torch.float64) / network_macs
    return costs


def multi_resolution_inputs(model: nn.Module, example_input: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    """Each block of ``model`` (an ``MDPNet``) with several resolution branches, in order, and its input when
    the model runs ``example_input`` (in eval mode, no grad; the model's mode is kept)."""
    blocks = [block for _, block in model.prunable_blocks() if block.mix is not None]
    inputs = {}
    hooks = [block.register_forward_pre_hook(lambda block, args: inputs.__setitem__(block, args[0]))
             for block in blocks]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return {block: inputs[block] for block in blocks}


class _Branch(nn.Module):
    """One resolution branch of a block, as a module (for counting its MACs)."""

    def __init__(self, block: nn.Module, index: int) -> None:
        super().__init__()
        self.block, self.index = block, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.branch(self.block.pooled(x, self.index), self.index)


def expected_cost(costs: dict[MultiResSum, torch.Tensor]) -> torch.Tensor:
    """L_cost: ``sum_b sum_k softmax(a_b)_k * costs[b]_k`` over the blocks of ``costs`` (from :func:`branch_costs`)."""
    terms = [(mix.weights() * cost.to(mix.logits)).sum() for mix, cost in costs.items()]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def mdp_regulariser(alpha: float, eta: float, beta: float = 0.0, costs: dict[MultiResSum, torch.Tensor] | None = None):
    """``model -> alpha * L_st + eta * L_gate + beta * L_cost``, the part of the searching loss added to
    cross-entropy; ``costs`` (:func:`branch_costs` of the model) is needed when ``beta > 0``."""
    if alpha < 0 or eta < 0 or beta < 0:
        raise ValueError(f"mdp_regulariser: `alpha`, `eta` and `beta` must be >= 0, got {alpha}, {eta}, {beta}")
    if beta > 0 and costs is None:
        raise ValueError("mdp_regulariser: `beta` > 0 needs the branch `costs` (mdp.losses.branch_costs)")

    def regulariser(model: nn.Module) -> torch.Tensor:
        total = alpha * branch_entropy(model) + eta * gate_l1(model)
        return total + beta * expected_cost(costs) if beta > 0 else total

    return regulariser


def _zero(model: nn.Module) -> torch.Tensor:
    return torch.zeros((), device=next(model.parameters()).device)
