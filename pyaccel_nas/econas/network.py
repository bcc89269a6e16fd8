"""The macro network a genotype describes: stem, a stack of cells with reductions at 1/3 and 2/3 of the
depth, global average pooling and a linear classifier (the NASNet / DARTS CIFAR network)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pyaccel_nas.econas.genotype import CELL_INPUTS, EDGES_PER_NODE, CellEdges, Genotype, output_nodes
from pyaccel_nas.econas.operations import OPERATIONS, FactorizedReduce, ReLUConvBN
from pyaccel_nas.nn import BatchNorm2d


@dataclass(frozen=True)
class NetworkConfig:
    """Macro-architecture settings. ``channels`` is C of the first cells (36 in the paper); it doubles at
    each reduction."""

    channels: int = 36
    layers: int = 20
    in_channels: int = 3
    num_classes: int = 10
    stem_multiplier: int = 3

    def __post_init__(self) -> None:
        for name in ("channels", "layers", "in_channels", "num_classes", "stem_multiplier"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"NetworkConfig: `{name}` must be a positive int, got {value!r}")

    @property
    def reduction_layers(self) -> tuple[int, ...]:
        return tuple(sorted({self.layers // 3, 2 * self.layers // 3} - {0})) if self.layers >= 3 else ()


class Cell(nn.Module):
    """One cell: preprocess both inputs to C channels, compute each node as the sum of its two edges,
    concatenate the unused nodes."""

    def __init__(self, edges: CellEdges, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        # after a reduction the older input has twice the resolution of the newer one
        self.preprocess0 = FactorizedReduce(C_prev_prev, C) if reduction_prev else ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self.inputs = [source for _, source in edges]
        self.concat = output_nodes(edges)
        self.ops = nn.ModuleList(
            OPERATIONS[op](C, 2 if reduction and source < CELL_INPUTS else 1, True) for op, source in edges
        )
        self.out_channels = C * len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // EDGES_PER_NODE):
            edges = range(node * EDGES_PER_NODE, (node + 1) * EDGES_PER_NODE)
            states.append(sum_tensors(self.ops[e](states[self.inputs[e]]) for e in edges))
        return torch.cat([states[i] for i in self.concat], dim=1)


def sum_tensors(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of one or more tensors. Python's sum() starts from 0, and 0 + t is a copy of t: one more
    elementwise op per node of a cell (80 of them in a 20-cell network's forward)."""
    first, *rest = tensors
    return sum(rest, first)


def build_body(net: nn.Module, config: NetworkConfig, make_cell: Callable[..., nn.Module]) -> None:
    """Gives ``net`` the DARTS network body at the size ``config`` gives: ``stem``, ``cells`` (one
    ``make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev)`` per layer, the channels doubling
    at each reduction layer), ``global_pooling`` and ``classifier``. Shared by the searched network and the
    DARTS supernet so both have the same channel plan."""
    C_curr = config.stem_multiplier * config.channels
    net.stem = nn.Sequential(nn.Conv2d(config.in_channels, C_curr, 3, padding=1, bias=False), BatchNorm2d(C_curr))
    C_prev_prev, C_prev, C_curr = C_curr, C_curr, config.channels
    net.cells = nn.ModuleList()
    reduction_prev = False
    for layer in range(config.layers):
        reduction = layer in config.reduction_layers
        if reduction:
            C_curr *= 2
        cell = make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
        net.cells.append(cell)
        reduction_prev = reduction
        C_prev_prev, C_prev = C_prev, cell.out_channels
    net.global_pooling = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Linear(C_prev, config.num_classes)


class Network(nn.Module):
    """The classification network of ``genotype`` at the size ``config`` gives."""

    def __init__(self, genotype: Genotype, config: NetworkConfig = NetworkConfig()) -> None:
        super().__init__()
        self.genotype = genotype
        self.config = config

        def make_cell(C_prev_prev: int, C_prev: int, C_curr: int, reduction: bool, reduction_prev: bool) -> Cell:
            edges = genotype.reduce if reduction else genotype.normal
            return Cell(edges, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)

        build_body(self, config, make_cell)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1))
