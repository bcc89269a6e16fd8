"""The architecture of an MDP network as data: a JSON config that rebuilds the network, validated on load.

A network is a stem of ``blocks`` followed by global average pooling, dropout (``dropout``, default 0) and a
linear classifier. Blocks:

- ``conv``: a k x k (x k) convolution with padding k // 2, BatchNorm, activation; ``out`` channels; its
  ``activation`` is ReLU (default) or ReLU6.
- ``residual``: a basic block (ResNet-18/20/56), ``relu(F(x) + shortcut(x))`` with ``F`` = 3x3 conv-BN-ReLU-
  3x3 conv-BN (``mid`` then ``out`` channels; the first conv has the block's stride) and a 1x1 conv-BN
  ``shortcut`` when ``projection`` is set (identity otherwise).
- ``bottleneck``: ResNet-50's block, ``F`` = 1x1 conv-BN-ReLU (``mid``), 3x3 conv-BN-ReLU with the stride
  (``mid2``), 1x1 conv-BN (``out``), shortcut as ``residual``'s.
- ``inverted_residual``: MobileNetV2's block, 1x1 conv-BN-ReLU6 expanding to ``mid`` channels (only with
  ``expand``; without, ``mid`` is the input's width), depthwise k x k conv-BN-ReLU6 with the stride, 1x1
  conv-BN to ``out`` (no activation), plus the input when ``shortcut`` (an identity: stride 1, as many
  input as output channels).
- ``inception``: an inflated Inception block (I3D; GoogLeNet's in 2-D), stride 1, four columns run side by
  side on the input and concatenated: 1x1 conv-BN-ReLU (``b0``); 1x1 conv-BN-ReLU (``b1_reduce``) then
  3x3 conv-BN-ReLU (``b1``); the same again (``b2_reduce``, ``b2``); 3x3 max pool (stride 1) then 1x1
  conv-BN-ReLU (``b3``). ``columns`` holds the six widths in that order; ``out`` is b0 + b1 + b2 + b3.
- ``maxpool``: max pooling with window ``kernel``, ``stride`` (default: the window) and ``padding``
  (default 0).

Every block but ``maxpool`` is prunable: it computes its convolutions at each of its resolution
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
BLOCK_TYPES = ("conv", "residual", "bottleneck", "inverted_residual", "inception", "maxpool")
INCEPTION_SETS = ("b0", "b1_reduce", "b1", "b2_reduce", "b2", "b3")  # the channel sets of `columns`, in order
INCEPTION_OUTPUT = ("b0", "b1", "b2", "b3")  # concatenated into the block's output
ACTIVATIONS = ("relu", "relu6")


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
    out: int = 0  # prunable blocks: output channels
    mid: int = 0  # residual, bottleneck, inverted_residual: channels after the first conv
    mid2: int = 0  # bottleneck: channels after its second (3x3) conv
    kernel: tuple[int, ...] = ()  # conv, inverted_residual (depthwise): kernel per spatial dim (odd); maxpool: window
    stride: tuple[int, ...] = ()  # per spatial dim; maxpool: () means the window
    padding: tuple[int, ...] = ()  # maxpool: per spatial dim; () means 0
    projection: bool = False  # residual, bottleneck: 1x1 conv shortcut instead of identity
    expand: bool = True  # inverted_residual: a 1x1 conv first widens the input to `mid`
    shortcut: bool = False  # inverted_residual: the input is added to the output
    activation: str = "relu"  # conv: "relu" or "relu6"
    columns: tuple[int, ...] = ()  # inception: the widths of INCEPTION_SETS
    factors: tuple[tuple[int, ...], ...] = ()  # prunable blocks: resolution factors, one per branch
    gated: bool = False  # prunable blocks: channel gates on every conv output

    def __post_init__(self) -> None:
        if self.type == "maxpool":  # the defaults filled in, so that equal pools compare equal
            object.__setattr__(self, "stride", self.stride or self.kernel)
            object.__setattr__(self, "padding", self.padding or (0,) * len(self.kernel))

    @property
    def prunable(self) -> bool:
        return self.type != "maxpool"

    def width(self, channel_set: str) -> int:
        """The width of the channel set ``channel_set`` ("out", "mid", "b1", ...)."""
        if self.type == "inception" and channel_set in INCEPTION_SETS:
            return self.columns[INCEPTION_SETS.index(channel_set)]
        return getattr(self, channel_set)

    def with_widths(self, widths: dict[str, int]) -> Block:
        """This block with the channel sets in ``widths`` at those widths. An Inception block's ``out`` is
        recomputed as the sum of its concatenated columns; a width given for "out" itself is ignored."""
        if self.type != "inception":
            return dataclasses.replace(self, **widths)
        columns = tuple(widths.get(name, width) for name, width in zip(INCEPTION_SETS, self.columns))
        return dataclasses.replace(self, columns=columns, out=inception_out(columns))

    def to_dict(self) -> dict[str, Any]:
        d = {"type": self.type}
        if self.type == "maxpool":
            d["kernel"] = list(self.kernel)
            if self.stride != self.kernel:  # defaults stay unwritten: older configs keep their digest
                d["stride"] = list(self.stride)
            if any(self.padding):
                d["padding"] = list(self.padding)
            return d
        d.update(out=self.out, stride=list(self.stride), factors=[list(f) for f in self.factors], gated=self.gated)
        if self.type == "conv":
            d["kernel"] = list(self.kernel)
            if self.activation != "relu":
                d["activation"] = self.activation
        elif self.type == "inverted_residual":
            d.update(mid=self.mid, kernel=list(self.kernel), expand=self.expand, shortcut=self.shortcut)
        elif self.type == "inception":
            d["columns"] = list(self.columns)
        else:
            d.update(mid=self.mid, projection=self.projection)
            if self.type == "bottleneck":
                d["mid2"] = self.mid2
        return d

    @classmethod
    def from_dict(cls, data: Any, dims: int, where: str) -> Block:
        if not isinstance(data, dict) or data.get("type") not in BLOCK_TYPES:
            raise ValueError(f"{where}: a block must be an object with `type` one of {BLOCK_TYPES}, got {quote(data)}")
        kind = data["type"]
        prunable = {"type", "out", "stride", "factors", "gated"}
        required = {"maxpool": {"type", "kernel"},
                    "conv": prunable | {"kernel"},
                    "residual": prunable | {"mid", "projection"},
                    "bottleneck": prunable | {"mid", "mid2", "projection"},
                    "inverted_residual": prunable | {"mid", "kernel", "expand", "shortcut"},
                    "inception": prunable | {"columns"}}[kind]
        optional = {"maxpool": {"stride", "padding"}, "conv": {"activation"}}.get(kind, set())
        if not required <= set(data) <= required | optional:
            raise ValueError(f"{where}: a {kind} block has the keys {sorted(required)}"
                             + (f" and optionally {sorted(optional)}" if optional else "")
                             + f", got {quote(sorted(data))}")
        if kind == "maxpool":
            kernel = _ints(where, "kernel", data["kernel"], dims)
            return cls(kind, kernel=kernel, stride=_ints(where, "stride", data.get("stride", kernel), dims),
                       padding=_ints(where, "padding", data.get("padding", [0] * dims), dims, minimum=0))
        factors = data["factors"]
        if not isinstance(factors, list) or not factors:
            raise ValueError(f"{where}: `factors` must be a non-empty list, got {quote(factors)}")
        factors = tuple(_ints(where, "factors", f, dims) for f in factors)
        if len(set(factors)) != len(factors):
            raise ValueError(f"{where}: `factors` repeat: {quote(data['factors'])}")
        for flag in ("gated", "projection", "expand", "shortcut"):
            if flag in data and not isinstance(data[flag], bool):
                raise ValueError(f"{where}: `{flag}` must be a bool, got {quote(data[flag])}")
        fields = dict(out=_int(where, "out", data["out"]), stride=_ints(where, "stride", data["stride"], dims),
                      factors=factors, gated=data["gated"])
        fields.update({flag: data[flag] for flag in ("projection", "expand", "shortcut") if flag in data})
        fields.update({name: _int(where, name, data[name]) for name in ("mid", "mid2") if name in data})
        if "kernel" in data:
            fields["kernel"] = _ints(where, "kernel", data["kernel"], dims)
            if any(k % 2 == 0 for k in fields["kernel"]):
                raise ValueError(f"{where}: `kernel` must be odd (padding k // 2 keeps the size), got "
                                 f"{fields['kernel']}")
        if kind == "inception":
            fields["columns"] = _ints(where, "columns", data["columns"], len(INCEPTION_SETS))
            if fields["out"] != inception_out(fields["columns"]):
                raise ValueError(f"{where}: an inception block's `out` is the sum of its columns b0, b1, b2, b3: "
                                 f"{inception_out(fields['columns'])}, got {fields['out']}")
            if max(fields["stride"]) != 1:
                raise ValueError(f"{where}: an inception block has stride 1, got {fields['stride']}")
        if data.get("activation", "relu") not in ACTIVATIONS:
            raise ValueError(f"{where}: `activation` must be one of {ACTIVATIONS}, got {quote(data['activation'])}")
        return cls(kind, activation=data.get("activation", "relu"), **fields)


def inception_out(columns: tuple[int, ...]) -> int:
    """An Inception block's output width: its concatenated columns."""
    return sum(width for name, width in zip(INCEPTION_SETS, columns) if name in INCEPTION_OUTPUT)


@dataclass(frozen=True)
class ArchConfig:
    """A whole network. ``input_size``: the spatial size of its input, (H, W) or (T, H, W); ``dropout``: the
    probability of the dropout before the classifier."""

    name: str
    in_channels: int
    num_classes: int
    input_size: tuple[int, ...]
    blocks: tuple[Block, ...]
    dropout: float = 0.0

    @property
    def dims(self) -> int:
        return len(self.input_size)

    def replace_blocks(self, blocks: list[Block] | tuple[Block, ...]) -> ArchConfig:
        return dataclasses.replace(self, blocks=tuple(blocks))

    def to_dict(self) -> dict[str, Any]:
        d = {"format": ARCH_FORMAT, "name": self.name, "in_channels": self.in_channels,
             "num_classes": self.num_classes, "input_size": list(self.input_size),
             "blocks": [b.to_dict() for b in self.blocks]}
        if self.dropout:  # unwritten when 0: configs saved before it existed keep their digest
            d["dropout"] = self.dropout
        return d

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        where = "MDP architecture config"
        keys = {"format", "name", "in_channels", "num_classes", "input_size", "blocks"}
        if not isinstance(data, dict) or not keys <= set(data) <= keys | {"dropout"}:
            raise ValueError(f"{where}: expected an object with keys {sorted(keys)} and optionally 'dropout'")
        dropout = data.get("dropout", 0.0)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"{where}: `dropout` must be a probability in [0, 1), got {quote(dropout)}")
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
                     tuple(Block.from_dict(b, dims, f"{where}, block {i}") for i, b in enumerate(data["blocks"])),
                     float(dropout))
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
            kernel, stride, padding = block.kernel, block.stride, block.padding
            if any(2 * p > k for k, p in zip(kernel, padding)):
                raise ValueError(f"{where}: padding {padding} is more than half the window {kernel}")
            if any(k > n + 2 * p for k, n, p in zip(kernel, size, padding)):
                raise ValueError(f"{where}: pool {kernel} is larger than its (padded) input {size}")
            size = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))
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
