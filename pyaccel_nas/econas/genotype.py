"""The EcoNAS search space: NASNet/DARTS-style cells as immutable, validated genotypes.

A cell has two inputs (the outputs of the two previous cells, indices 0 and 1) and ``NODES`` intermediate
nodes (indices 2 .. NODES + 1). Node ``i`` sums two edges, each an (operation, input) pair whose input is a
cell input or an earlier node. Nodes that no other node uses are concatenated as the cell's output (the
NASNet/EcoNAS rule). A genotype is one normal cell and one reduction cell; genotypes are values: hashable,
compared by content, serialised as JSON and validated on load (never code).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from pyaccel_nas.exec.files import write_text_atomically
from pyaccel_nas.validation import parse_json, quote

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
NODES = 4
CELL_INPUTS = 2
EDGES_PER_NODE = 2

Edge = tuple[str, int]  # (operation, input index)
CellEdges = tuple[Edge, ...]  # EDGES_PER_NODE edges per node, node by node


class GenotypeError(ValueError):
    """A genotype (or genotype file) that does not describe a valid cell pair."""


def _validate_cell(name: str, edges) -> CellEdges:
    if not isinstance(edges, (list, tuple)) or len(edges) != NODES * EDGES_PER_NODE:
        raise GenotypeError(
            f"`{name}` must list {NODES * EDGES_PER_NODE} (operation, input) edges, got {quote(edges)}"
        )
    cell = []
    for index, edge in enumerate(edges):
        node = index // EDGES_PER_NODE
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise GenotypeError(f"`{name}` edge {index} must be an (operation, input) pair, got {quote(edge)}")
        op, source = edge
        if op not in PRIMITIVES:
            raise GenotypeError(f"`{name}` edge {index}: unknown operation {quote(op)}; expected one of {PRIMITIVES}")
        if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source < node + CELL_INPUTS:
            raise GenotypeError(
                f"`{name}` edge {index} (node {node}): input must be an int in [0, {node + CELL_INPUTS}), "
                f"got {quote(source)}"
            )
        cell.append((op, source))
    return tuple(cell)


def output_nodes(edges: CellEdges) -> tuple[int, ...]:
    """Indices (2 .. NODES + 1) of the intermediate nodes no other node reads: the cell's concatenated output."""
    used = {source for _, source in edges}
    return tuple(i for i in range(CELL_INPUTS, CELL_INPUTS + NODES) if i not in used)


@dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell, each ``NODES * EDGES_PER_NODE`` (operation, input) edges."""

    normal: CellEdges
    reduce: CellEdges

    def __post_init__(self) -> None:
        object.__setattr__(self, "normal", _validate_cell("normal", self.normal))
        object.__setattr__(self, "reduce", _validate_cell("reduce", self.reduce))

    @property
    def normal_concat(self) -> tuple[int, ...]:
        return output_nodes(self.normal)

    @property
    def reduce_concat(self) -> tuple[int, ...]:
        return output_nodes(self.reduce)

    # --- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "normal": [list(e) for e in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(e) for e in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data) -> Genotype:
        if not isinstance(data, dict) or "normal" not in data or "reduce" not in data:
            raise GenotypeError(f"a genotype must be an object with `normal` and `reduce` cells, got {quote(data)}")
        genotype = cls(normal=data["normal"], reduce=data["reduce"])  # validated, and made tuples, on construction
        for cell in ("normal", "reduce"):
            given, found = data.get(f"{cell}_concat"), list(getattr(genotype, f"{cell}_concat"))
            if given is not None and (not isinstance(given, (list, tuple)) or list(given) != found):
                raise GenotypeError(f"`{cell}_concat` {quote(given)} does not match the unused nodes {found}")
        return genotype

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> Genotype:
        try:
            data = parse_json(text)
        except ValueError as exc:
            raise GenotypeError(f"not a JSON genotype: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        """The genotype in the JSON file ``path``; GenotypeError naming the file if it holds none."""
        try:
            return cls.from_json(Path(path).read_bytes())
        except GenotypeError as exc:
            raise GenotypeError(f"{path}: {exc}") from exc

    def __str__(self) -> str:
        lines = []
        for cell in ("normal", "reduce"):
            edges = getattr(self, cell)
            lines.append(f"{cell} cell (output: concat of nodes {list(getattr(self, cell + '_concat'))})")
            for node in range(NODES):
                pair = edges[node * EDGES_PER_NODE : (node + 1) * EDGES_PER_NODE]
                terms = " + ".join(f"{op}({_input_name(source)})" for op, source in pair)
                lines.append(f"  node {node + CELL_INPUTS} = {terms}")
        return "\n".join(lines)

    # --- sampling and mutation -----------------------------------------------------------------------

    @classmethod
    def random(cls, rng: random.Random) -> Genotype:
        """Uniform over operations and, per edge, over the inputs available to its node."""

        def cell() -> CellEdges:
            return tuple(
                (rng.choice(PRIMITIVES), rng.randrange(index // EDGES_PER_NODE + CELL_INPUTS))
                for index in range(NODES * EDGES_PER_NODE)
            )

        return cls(normal=cell(), reduce=cell())

    def mutate(self, rng: random.Random) -> Genotype:
        """One mutation, returned as a new genotype (``self`` is a value and never changes).

        Half the time an edge is rewired to another input of its node, half the time its operation is
        swapped for another; the cell (normal or reduction) and the edge are chosen uniformly.
        """
        cell_name = rng.choice(("normal", "reduce"))
        edges = list(getattr(self, cell_name))
        index = rng.randrange(len(edges))
        op, source = edges[index]
        if rng.random() < 0.5:
            choices = [i for i in range(index // EDGES_PER_NODE + CELL_INPUTS) if i != source]
            edges[index] = (op, rng.choice(choices))
        else:
            edges[index] = (rng.choice([p for p in PRIMITIVES if p != op]), source)
        return Genotype(**{**{"normal": self.normal, "reduce": self.reduce}, cell_name: tuple(edges)})


def _input_name(source: int) -> str:
    return ("c_{k-2}", "c_{k-1}")[source] if source < CELL_INPUTS else f"node {source}"
