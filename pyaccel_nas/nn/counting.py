"""Model size and cost: parameters and multiply-accumulates (MACs) of one forward pass.

MACs are counted by torch.utils.flop_counter on the ops the model actually runs (convolutions, matrix
products and the fused sep_conv2d, which registers its formula), so fused and reference modules count the
same. Element-wise work (activations, BatchNorm, pooling, gates) is not counted, as is customary.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """MACs of ``model(example_input)`` for the whole batch of ``example_input`` (in eval mode, no grad)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
