"""The architecture of an MDP network as data: a JSON config that rebuilds the network, validated on load.

A network is a stem of ``blocks`` followed by global average pooling and a linear classifier. Blocks:

- ``conv``: a k x k (x k) convolution with padding k // 2, BatchNorm, ReLU; ``out`` channels.
- ``residual``: a CIFAR-style basic block, ``relu(F(x) + shortcut(x))`` with ``F`` = conv-BN-ReLU-conv-BN
  (``mid`` then ``out`` channels) and a 1x1 conv-BN ``shortcut`` when ``projection`` is set (identity
  otherwise).
- ``maxpool``: max pooling with kernel = stride = ``kernel``.

Every ``conv`` and ``residual`` block is prunable: it computes its convolutions at each of its resolution
``factors`` (the block input average-pooled by the factor, the result upsampled back by nearest
neighbour), and, when ``gated``, scales every conv output by a channel gate. An over-parameterised block
has several factors, the first being no reduction; a pruned block has one and no gates.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyaccel_nas.exec.files import write_text_atomically
from pyaccel_nas.validation import parse_json, quote

ARCH_FORMAT = "pyaccel_nas.mdp.arch/1"
BLOCK_TYPES = ("conv", "residual", "maxpool")


def _ints(where: str, name: str, value: Any, length: int, minimum: int = 1) -> tuple[int, ...]:
    if (not isinstance(value, (list, tuple)) or len(value) != length
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)):
        raise ValueError(f"{where}: `{name}` must be {length} ints >= {minimum}, got {quote(value)}")
    return tuple(value)


def _int(where: str, name: str, value: Any, minimum: int = 1) -> int:
    return _ints(where, name, [value], 1, minimum)[0]


@dataclass(frozen=True)
class Block:
    """One block; the fields a type does not use keep their defaults."""

    type: str
    out: int = 0  # conv, residual: output channels
    mid: int = 0  # residual: channels between its two convs
    kernel: tuple[int, ...] = ()  # conv: kernel size per spatial dim (odd); maxpool: window = stride
    stride: tuple[int, ...] = ()  # conv, residual: stride per spatial dim
    projection: bool = False  # residual: 1x1 conv shortcut instead of identity
    factors: tuple[tuple[int, ...], ...] = ()  # conv, residual: resolution factors, one per branch
    gated: bool = False  # conv, residual: channel gates on every conv output

    @property
    def prunable(self) -> bool:
        return self.type != "maxpool"

    def to_dict(self) -> dict[str, Any]:
        d = {"type": self.type}
        if self.type == "maxpool":
            d["kernel"] = list(self.kernel)
            return d
        d.update(out=self.out, stride=list(self.stride), factors=[list(f) for f in self.factors], gated=self.gated)
        if self.type == "conv":
            d["kernel"] = list(self.kernel)
        else:
            d.update(mid=self.mid, projection=self.projection)
        return d

    @classmethod
    def from_dict(cls, data: Any, dims: int, where: str) -> Block:
        if not isinstance(data, dict) or data.get("type") not in BLOCK_TYPES:
            raise ValueError(f"{where}: a block must be an object with `type` one of {BLOCK_TYPES}, got {quote(data)}")
        kind = data["type"]
        allowed = {"maxpool": {"type", "kernel"},
                   "conv": {"type", "out", "kernel", "stride", "factors", "gated"},
                   "residual": {"type", "out", "mid", "stride", "projection", "factors", "gated"}}[kind]
        if set(data) != allowed:
            raise ValueError(f"{where}: a {kind} block has exactly the keys {sorted(allowed)}, "
                             f"got {quote(sorted(data))}")
        if kind == "maxpool":
            return cls(kind, kernel=_ints(where, "kernel", data["kernel"], dims))
        factors = data["factors"]
        if not isinstance(factors, list) or not factors:
            raise ValueError(f"{where}: `factors` must be a non-empty list, got {quote(factors)}")
        factors = tuple(_ints(where, "factors", f, dims) for f in factors)
        if len(set(factors)) != len(factors):
            raise ValueError(f"{where}: `factors` repeat: {quote(data['factors'])}")
        if not isinstance(data["gated"], bool):
            raise ValueError(f"{where}: `gated` must be a bool, got {quote(data['gated'])}")
        common = dict(out=_int(where, "out", data["out"]), stride=_ints(where, "stride", data["stride"], dims),
                      factors=factors, gated=data["gated"])
        if kind == "conv":
            kernel = _ints(where, "kernel", data["kernel"], dims)
            if any(k % 2 == 0 for k in kernel):
                raise ValueError(f"{where}: `kernel` must be odd (padding k // 2 keeps the size), got {kernel}")
            return cls(kind, kernel=kernel, **common)
        if not isinstance(data["projection"], bool):
            raise ValueError(f"{where}: `projection` must be a bool, got {quote(data['projection'])}")
        return cls(kind, mid=_int(where, "mid", data["mid"]), projection=data["projection"], **common)


@dataclass(frozen=True)
class ArchConfig:
    """A whole network. ``input_size``: the spatial size of its input, (H, W) or (T, H, W)."""

    name: str
    in_channels: int
    num_classes: int
    input_size: tuple[int, ...]
    blocks: tuple[Block, ...]

    @property
    def dims(self) -> int:
        return len(self.input_size)

    def replace_blocks(self, blocks: list[Block] | tuple[Block, ...]) -> ArchConfig:
        return dataclasses.replace(self, blocks=tuple(blocks))

    def to_dict(self) -> dict[str, Any]:
        return {"format": ARCH_FORMAT, "name": self.name, "in_channels": self.in_channels,
                "num_classes": self.num_classes, "input_size": list(self.input_size),
                "blocks": [b.to_dict() for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        where = "MDP architecture config"
        keys = {"format", "name", "in_channels", "num_classes", "input_size", "blocks"}
        if not isinstance(data, dict) or set(data) != keys:
            raise ValueError(f"{where}: expected an object with keys {sorted(keys)}")
        if data["format"] != ARCH_FORMAT:
            raise ValueError(f"{where}: format {quote(data['format'])}, expected {ARCH_FORMAT!r}")
        input_size = data["input_size"]
        if not isinstance(input_size, list) or len(input_size) not in (2, 3):
            raise ValueError(f"{where}: `input_size` must be (H, W) or (T, H, W), got {quote(input_size)}")
        dims = len(input_size)
        if not isinstance(data["blocks"], list) or not data["blocks"]:
            raise ValueError(f"{where}: `blocks` must be a non-empty list")
        if not isinstance(data["name"], str):
            raise ValueError(f"{where}: `name` must be a string")
        config = cls(data["name"], _int(where, "in_channels", data["in_channels"]),
                     _int(where, "num_classes", data["num_classes"]), _ints(where, "input_size", input_size, dims),
                     tuple(Block.from_dict(b, dims, f"{where}, block {i}") for i, b in enumerate(data["blocks"])))
        block_input_sizes(config)  # the sizes flowing through the blocks must fit
        return config

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> ArchConfig:
        try:
            data = parse_json(text)
        except ValueError as exc:
            raise ValueError(f"MDP architecture config: not JSON: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_text_atomically(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ArchConfig:
        """The config in the JSON file ``path``; ValueError naming the file if it holds no valid one."""
        try:
            return cls.from_json(Path(path).read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc


def conv_output_size(size: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """Output size of a convolution with an odd kernel and padding k // 2 (the only kind MDP builds)."""
    return tuple((n - 1) // s + 1 for n, s in zip(size, stride))


def factor_fits(size: tuple[int, ...], stride: tuple[int, ...], factor: tuple[int, ...]) -> bool:
    """Whether a block can run at ``1/factor`` resolution: the input pools by ``factor`` exactly and the
    pooled output, upsampled by ``factor``, has the full output's size."""
    if any(n % f for n, f in zip(size, factor)):
        return False
    low = conv_output_size(tuple(n // f for n, f in zip(size, factor)), stride)
    return all(o * f == n for o, f, n in zip(low, factor, conv_output_size(size, stride)))


def block_input_sizes(config: ArchConfig) -> list[tuple[int, ...]]:
    """The spatial size entering each block, plus the size entering the classifier; a ValueError naming the
    block where a size does not fit (a factor that does not divide it, a pool larger than it)."""
    size = config.input_size
    sizes = []
    for i, block in enumerate(config.blocks):
        where = f"block {i} ({block.type})"
        sizes.append(size)
        if block.type == "maxpool":
            if any(k > n for k, n in zip(block.kernel, size)):
                raise ValueError(f"{where}: pool {block.kernel} is larger than its input {size}")
            size = tuple(n // k for n, k in zip(size, block.kernel))
            continue
        if len(block.factors) > 1 and any(f != 1 for f in block.factors[0]):
            raise ValueError(f"{where}: the first of several `factors` must be no reduction, got {block.factors[0]}")
        for factor in block.factors:
            if not factor_fits(size, block.stride, factor):
                raise ValueError(f"{where}: resolution factor {factor} does not fit its input {size} "
                                 f"(stride {block.stride}): the pooled output must upsample back by an integer")
        size = conv_output_size(size, block.stride)
    sizes.append(size)
    return sizes
