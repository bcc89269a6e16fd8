"""MAC and parameter counts: fused modules count what their reference compositions count."""

from __future__ import annotations

import torch
from torch import nn

from pyaccel_nas.nn import SepConv, SepConv2d, count_macs, count_parameters, set_fused


def test_sep_conv2d_macs_match_formula_and_reference():
    block = SepConv2d(16, 32, 3, stride=2, padding=1)
    x = torch.randn(2, 16, 9, 9)
    pixels = 2 * 5 * 5  # N * H_out * W_out
    expected = pixels * 16 * 9 + pixels * 16 * 32
    assert count_macs(block, x) == expected
    assert count_macs(set_fused(block, False), x) == expected


def test_counts_of_a_model_mixing_plain_and_fused_layers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), SepConv(8, 8, 3, 1, 1), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    x = torch.randn(1, 3, 6, 6)
    fused = count_macs(model, x)
    assert fused == count_macs(set_fused(model, False), x)
    assert fused == 36 * 3 * 8 * 9 + 2 * (36 * 8 * 9 + 36 * 8 * 8) + 8 * 36 * 10
    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) > 0
    assert model.training  # counting leaves the mode as it was
