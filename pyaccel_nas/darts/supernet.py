"""The DARTS supernet over the EcoNAS search space, and the genotype its architecture parameters describe.

Every edge of a cell (each cell input and each earlier node, into each of the ``NODES`` nodes: 14 edges)
carries all eight operations; its output is ``sum_k softmax(alpha_edge)[k] * op_k(x)``. That weighted sum
runs on the fused ``multires_sum`` op (branches of equal resolution: nothing is upsampled) and the
separable/dilated convolutions on the fused ``sep_conv2d``; :func:`pyaccel_nas.nn.set_fused` switches
the whole supernet to the reference compositions, with the same numbers out. ``none`` contributes zeros,
so its branch is not computed, but its alpha stays in the softmax (it still takes weight from the others).

Architecture parameters: ``alphas_normal`` and ``alphas_reduce`` of shape (14, 8), shared by all cells of
their kind, in :data:`~pyaccel_nas.econas.genotype.PRIMITIVES` order. The supernet's cells concatenate all
four nodes (DARTS); the derived :class:`Genotype` concatenates its unused nodes (the EcoNAS space's rule).
"""

from __future__ import annotations

import torch
from torch import nn

from pyaccel_nas.econas.genotype import CELL_INPUTS, EDGES_PER_NODE, NODES, PRIMITIVES, Genotype
from pyaccel_nas.econas.network import NetworkConfig, build_body, sum_tensors
from pyaccel_nas.econas.operations import OPERATIONS, FactorizedReduce, ReLUConvBN
from pyaccel_nas.nn import BatchNorm2d, FusableModule

EDGES = sum(CELL_INPUTS + node for node in range(NODES))  # 14 for 4 nodes
SKIP = PRIMITIVES.index("skip_connect")
NONE = PRIMITIVES.index("none")


def edge_index(node: int, source: int) -> int:
    """Row of ``alphas`` for the edge from ``source`` (0, 1: cell inputs; 2..: nodes) into ``node`` (0-based)."""
    return sum(CELL_INPUTS + n for n in range(node)) + source


class MixedOp(FusableModule):
    """All eight operations on one edge, mixed by the edge's softmaxed alphas with one ``multires_sum``."""

    def __init__(self, C: int, stride: int) -> None:
        super().__init__()
        computed = [k for k, name in enumerate(PRIMITIVES) if name != "none"]
        ops = []
        for k in computed:
            op = OPERATIONS[PRIMITIVES[k]](C, stride, False)
            if "pool" in PRIMITIVES[k]:  # DARTS normalises the parameter-free pools in the supernet
                op = nn.Sequential(op, BatchNorm2d(C, affine=False))
            ops.append(op)
        self._ops = nn.ModuleList(ops)
        self.register_buffer("_computed_index", torch.tensor(computed), persistent=False)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights``: this edge's (8,) softmaxed alphas."""
        return self.ops.multires_sum([op(x) for op in self._ops], weights.index_select(0, self._computed_index))


class SearchCell(nn.Module):
    """A cell whose 14 edges are :class:`MixedOp`; its output concatenates all ``NODES`` nodes."""

    def __init__(self, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(C, 2 if reduction and source < CELL_INPUTS else 1)
            for node in range(NODES) for source in range(CELL_INPUTS + node)
        )
        self.out_channels = C * NODES

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(NODES):
            states.append(sum_tensors(self.edges[edge_index(node, j)](h, weights[edge_index(node, j)])
                                      for j, h in enumerate(states)))
        return torch.cat(states[CELL_INPUTS:], dim=1)


class Supernet(nn.Module):
    """The DARTS search network at the size ``config`` gives (stem, cells with reductions at 1/3 and 2/3
    of the depth, global pooling, classifier), with architecture parameters ``alphas_normal`` and
    ``alphas_reduce`` initialised as DARTS does (1e-3 * N(0, 1))."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        build_body(self, config, SearchCell)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(EDGES, len(PRIMITIVES)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(EDGES, len(PRIMITIVES)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normal, reduce = self.alphas_normal.softmax(dim=-1), self.alphas_reduce.softmax(dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def genotype(self, max_skips: int | None = None) -> Genotype:
        return derive_genotype(self.alphas_normal, self.alphas_reduce, max_skips)


def _derive_cell(weights: torch.Tensor, max_skips: int | None) -> tuple[tuple[str, int], ...]:
    """The DARTS rule on one cell's (14, 8) softmaxed alphas; then at most ``max_skips`` skip connections."""
    strength = weights.detach().double().clone()
    strength[:, NONE] = float("-inf")  # the strongest operation other than 'none' on each edge
    chosen = []  # [alphas row, input, operation] per kept edge
    for node in range(NODES):
        rows = [edge_index(node, j) for j in range(CELL_INPUTS + node)]
        # the node's inputs ranked by their best operation's weight (ties: the earlier input)
        ranked = sorted(range(len(rows)), key=lambda j: (-strength[rows[j]].max().item(), j))
        chosen += [[rows[j], j, int(strength[rows[j]].argmax())] for j in sorted(ranked[:EDGES_PER_NODE])]
    if max_skips is not None:
        skips = sorted((c for c in chosen if c[2] == SKIP), key=lambda c: strength[c[0], SKIP].item())
        for edge in skips[: max(0, len(skips) - max_skips)]:  # the weakest skips give way
            row = strength[edge[0]].clone()
            row[SKIP] = float("-inf")
            edge[2] = int(row.argmax())
    return tuple((PRIMITIVES[op], source) for _, source, op in chosen)


def derive_genotype(alphas_normal: torch.Tensor, alphas_reduce: torch.Tensor, max_skips: int | None = None) -> Genotype:
    """The discrete cell pair of the standard DARTS rule: each edge keeps its strongest operation other than
    ``none``; each node keeps the two inputs whose kept operation is strongest (by softmaxed alpha).

    ``max_skips`` caps the skip connections of the normal cell (the remedy for DARTS' collapse onto skips):
    the weakest surplus skips are replaced by the next-best operation of their edge other than ``none``.
    """
    for name, alphas in (("alphas_normal", alphas_normal), ("alphas_reduce", alphas_reduce)):
        if not isinstance(alphas, torch.Tensor) or tuple(alphas.shape) != (EDGES, len(PRIMITIVES)):
            raise ValueError(f"derive_genotype: `{name}` must be a ({EDGES}, {len(PRIMITIVES)}) tensor, got "
                             f"{tuple(alphas.shape) if isinstance(alphas, torch.Tensor) else type(alphas).__name__}")
        if not torch.isfinite(alphas).all():
            raise ValueError(f"derive_genotype: `{name}` has non-finite values")
    if max_skips is not None and (isinstance(max_skips, bool) or not isinstance(max_skips, int) or max_skips < 0):
        raise ValueError(f"derive_genotype: `max_skips` must be None or an int >= 0, got {max_skips!r}")
    return Genotype(normal=_derive_cell(alphas_normal.softmax(dim=-1), max_skips),
                    reduce=_derive_cell(alphas_reduce.softmax(dim=-1), None))


def skip_count(edges) -> int:
    """How many of a cell's edges are skip connections."""
    return sum(op == "skip_connect" for op, _ in edges)
