"""The modules of an MDP network: prunable blocks that run at several resolutions with channel gates.

A prunable block with factors f_1..f_K computes ``multires_sum([up(F_k(pool(x, f_k)))], softmax(a))``:
its convolutions (weights shared by all branches) run on the input average-pooled by each factor, and the
branches are upsampled back (nearest) and mixed by the learnable branch importance ``a`` (``MultiResSum``).
Each branch has its own BatchNorms, since statistics differ between resolutions. With ``gated``, every
conv output (after its BatchNorm) is scaled by a ``ChannelGate``. A block with one factor is a pruned
block: pool, convolutions, upsample; a block with the factor 1 alone is a plain block.

Every prunable block describes itself (:meth:`PrunableBlock.channel_layout`): its gated convolutions and
which of them share a channel set. Pruning, BatchNorm folding and weight loading work from that
description alone, so a new block type is a class here (with its entry in :data:`BLOCK_MODULES`) and its
config in :mod:`~pyaccel_nas.mdp.arch`, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pyaccel_nas import ops
from pyaccel_nas.mdp.arch import INCEPTION_OUTPUT, INCEPTION_SETS, ArchConfig, Block, block_input_sizes
from pyaccel_nas.nn import ChannelGate, MultiResSum

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BATCHNORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_AVGPOOL = {2: F.avg_pool2d, 3: F.avg_pool3d}
_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_GLOBAL_POOL = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


def _gate(channels: int, gated: bool) -> nn.Module:
    return ChannelGate(channels) if gated else nn.Identity()


def _batchnorms(dims: int, channels: int, branches: int) -> nn.ModuleList:
    return nn.ModuleList(_BATCHNORM[dims](channels) for _ in range(branches))


def _gate_or_none(gate: nn.Module) -> ChannelGate | None:
    return gate if isinstance(gate, ChannelGate) else None


@dataclass(frozen=True)
class PrunableUnit:
    """A convolution whose output channels pruning can remove: ``conv`` (an ``nn.Conv2d`` / ``nn.Conv3d``
    without bias, either dense or depthwise), then its BatchNorm, then its channel ``gate`` (None in an
    ungated block). A depthwise conv (one group per channel) keeps its input's channel set: ``channels``
    and ``inputs`` name the same set, and removing a channel removes its filter.

    ``batchnorms`` holds one BatchNorm per resolution branch, in branch order, or a single one for a unit
    that runs outside the branches (a shortcut, at full resolution). ``channels`` names the channel set of
    the unit's output and ``inputs`` that of its conv's input: "in" is the block's input; any other name is
    the field of the block's :class:`~pyaccel_nas.mdp.arch.Block` config that holds the set's width ("out":
    the block's output, which the next block reads). Units of one set have their outputs added, so their
    channels are kept or removed together. ``name`` names the unit in a prune report's kept channels.
    """

    name: str
    conv: nn.Conv2d | nn.Conv3d
    batchnorms: tuple[nn.BatchNorm2d | nn.BatchNorm3d, ...]
    gate: ChannelGate | None
    channels: str = "out"
    inputs: str = "in"

    def batchnorm(self, branch: int) -> nn.BatchNorm2d | nn.BatchNorm3d:
        """The BatchNorm that follows the conv in resolution branch ``branch``."""
        return self.batchnorms[branch if len(self.batchnorms) > 1 else 0]

    @property
    def depthwise(self) -> bool:
        return self.conv.groups > 1


@dataclass(frozen=True)
class ChannelLayout:
    """A prunable block as pruning sees it: its units (a prune report lists their kept channels in this
    order); ``input_sets``, the channel sets that are the block input's own: the set to which an identity
    shortcut adds the input, the set a depthwise conv reads straight from the input; and ``output``, the sets
    the block's output concatenates, in order ("out" alone but for an Inception block)."""

    units: tuple[PrunableUnit, ...]
    input_sets: tuple[str, ...] = ()
    output: tuple[str, ...] = ("out",)


class PrunableBlock(nn.Module):
    """Base of the prunable blocks: the resolution branches and their mix. Subclasses define ``branch``."""

    def __init__(self, block: Block, dims: int) -> None:
        super().__init__()
        self.dims = dims
        self.factors = block.factors
        self.gated = block.gated
        self.mix = MultiResSum(len(block.factors), mode="nearest") if len(block.factors) > 1 else None

    def branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        raise NotImplementedError

    def channel_layout(self) -> ChannelLayout:
        """The block's gated convolutions and how their channels connect."""
        raise NotImplementedError

    def gates(self) -> list[ChannelGate]:
        return [m for m in self.modules() if isinstance(m, ChannelGate)]

    def pooled(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The block input at branch ``index``'s resolution."""
        factor = self.factors[index]
        return x if max(factor) == 1 else _AVGPOOL[self.dims](x, factor, factor)

    def multi_resolution(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The branches, upsampled to full size and mixed, plus ``residual`` (a shortcut's output) if given.
        A residual is summed in the same ``multires_sum`` pass, so that a branch below full resolution is never
        upsampled into a tensor of its own (on a CPU that copy and the add after it cost as much as the
        branch's convolutions save: ``benchmarks/mdp_resolution_cost.py``)."""
        outputs = [self.branch(self.pooled(x, index), index) for index in range(len(self.factors))]
        if self.mix is not None:
            if residual is None:
                return self.mix(outputs)  # the first branch is at full size: the others upsample to it
            weights = self.mix.weights()
            return self.mix.ops.multires_sum([residual, *outputs], torch.cat([weights.new_ones(1), weights]),
                                             mode=self.mix.mode)
        factor = self.factors[0]
        if max(factor) == 1:
            return outputs[0] if residual is None else outputs[0] + residual
        if residual is None:
            return F.interpolate(outputs[0], scale_factor=[float(f) for f in factor], mode="nearest")
        return ops.multires_sum([residual, outputs[0]], outputs[0].new_ones(2))


_ACTIVATIONS = {"relu": F.relu, "relu6": F.relu6}


class ConvBlock(PrunableBlock):
    """``act(gate(bn(conv(x))))`` at each resolution factor, mixed; ``act`` is ReLU or ReLU6."""

    def __init__(self, in_channels: int, block: Block, dims: int) -> None:
        super().__init__(block, dims)
        self.activation = _ACTIVATIONS[block.activation]
        self.conv = _CONV[dims](in_channels, block.out, block.kernel, block.stride,
                                padding=tuple(k // 2 for k in block.kernel), bias=False)
        self.bns = _batchnorms(dims, block.out, len(block.factors))
        self.gate = _gate(block.out, block.gated)

    def branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.gate(self.bns[index](self.conv(x)))

    def channel_layout(self) -> ChannelLayout:
        return ChannelLayout((PrunableUnit("out", self.conv, tuple(self.bns), _gate_or_none(self.gate)),))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.multi_resolution(x))


class ResidualBlock(PrunableBlock):
    """``relu(F(x) + shortcut(x))``, F = conv-bn-gate-relu-conv-bn-gate at each resolution factor, mixed;
    the shortcut (identity, or 1x1 conv-bn-gate) runs at full resolution."""

    def __init__(self, in_channels: int, block: Block, dims: int) -> None:
        super().__init__(block, dims)
        branches = len(block.factors)
        self.conv1 = _CONV[dims](in_channels, block.mid, 3, block.stride, padding=1, bias=False)
        self.bn1s = _batchnorms(dims, block.mid, branches)
        self.gate1 = _gate(block.mid, block.gated)
        self.conv2 = _CONV[dims](block.mid, block.out, 3, 1, padding=1, bias=False)
        self.bn2s = _batchnorms(dims, block.out, branches)
        self.gate2 = _gate(block.out, block.gated)
        self.shortcut = _shortcut(in_channels, block, dims)

    def branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        x = F.relu(self.gate1(self.bn1s[index](self.conv1(x))))
        return self.gate2(self.bn2s[index](self.conv2(x)))

    def channel_layout(self) -> ChannelLayout:
        units = (PrunableUnit("mid", self.conv1, tuple(self.bn1s), _gate_or_none(self.gate1), channels="mid"),
                 PrunableUnit("out", self.conv2, tuple(self.bn2s), _gate_or_none(self.gate2), inputs="mid"))
        return _with_shortcut(units, self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.multi_resolution(x, self.shortcut(x)))


def _shortcut(in_channels: int, block: Block, dims: int) -> nn.Module:
    """A residual block's shortcut: identity, or (``projection``) a strided 1x1 conv-bn-gate at full resolution."""
    if not block.projection:
        return nn.Identity()
    return nn.Sequential(_CONV[dims](in_channels, block.out, 1, block.stride, bias=False),
                         _BATCHNORM[dims](block.out), _gate(block.out, block.gated))


def _with_shortcut(units: tuple[PrunableUnit, ...], shortcut: nn.Module) -> ChannelLayout:
    """The layout of a residual block's ``units`` and its ``shortcut``: an identity makes the output set the
    input's own, a projection is one more unit of the output set."""
    if isinstance(shortcut, nn.Identity):
        return ChannelLayout(units, input_sets=("out",))
    conv, batchnorm, gate = shortcut
    return ChannelLayout((*units, PrunableUnit("proj", conv, (batchnorm,), _gate_or_none(gate))))


class BottleneckBlock(PrunableBlock):
    """ResNet-50's block: ``relu(F(x) + shortcut(x))``, F = 1x1 conv-bn-gate-relu, 3x3 conv (the stride)-bn-
    gate-relu, 1x1 conv-bn-gate, at each resolution factor, mixed; the shortcut as :class:`ResidualBlock`'s."""

    def __init__(self, in_channels: int, block: Block, dims: int) -> None:
        super().__init__(block, dims)
        branches = len(block.factors)
        self.conv1 = _CONV[dims](in_channels, block.mid, 1, bias=False)
        self.bn1s = _batchnorms(dims, block.mid, branches)
        self.gate1 = _gate(block.mid, block.gated)
        self.conv2 = _CONV[dims](block.mid, block.mid2, 3, block.stride, padding=1, bias=False)
        self.bn2s = _batchnorms(dims, block.mid2, branches)
        self.gate2 = _gate(block.mid2, block.gated)
        self.conv3 = _CONV[dims](block.mid2, block.out, 1, bias=False)
        self.bn3s = _batchnorms(dims, block.out, branches)
        self.gate3 = _gate(block.out, block.gated)
        self.shortcut = _shortcut(in_channels, block, dims)

    def branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        x = F.relu(self.gate1(self.bn1s[index](self.conv1(x))))
        x = F.relu(self.gate2(self.bn2s[index](self.conv2(x))))
        return self.gate3(self.bn3s[index](self.conv3(x)))

    def channel_layout(self) -> ChannelLayout:
        units = (PrunableUnit("mid", self.conv1, tuple(self.bn1s), _gate_or_none(self.gate1), channels="mid"),
                 PrunableUnit("mid2", self.conv2, tuple(self.bn2s), _gate_or_none(self.gate2), channels="mid2",
                              inputs="mid"),
                 PrunableUnit("out", self.conv3, tuple(self.bn3s), _gate_or_none(self.gate3), inputs="mid2"))
        return _with_shortcut(units, self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.multi_resolution(x, self.shortcut(x)))


class InvertedResidualBlock(PrunableBlock):
    """MobileNetV2's block at each resolution factor, mixed: [1x1 conv-bn-gate-relu6 to ``mid`` channels,
    with ``expand``], depthwise k x k conv (the stride)-bn-gate-relu6, 1x1 conv-bn-gate; plus the input when
    ``shortcut``. No activation after the sum (the block's output is linear, as in the paper)."""

    def __init__(self, in_channels: int, block: Block, dims: int) -> None:
        super().__init__(block, dims)
        branches = len(block.factors)
        self.shortcut = block.shortcut
        self.expand = _CONV[dims](in_channels, block.mid, 1, bias=False) if block.expand else None
        if block.expand:
            self.expand_bns = _batchnorms(dims, block.mid, branches)
            self.expand_gate = _gate(block.mid, block.gated)
        self.depthwise = _CONV[dims](block.mid, block.mid, block.kernel, block.stride,
                                     padding=tuple(k // 2 for k in block.kernel), groups=block.mid, bias=False)
        self.depthwise_bns = _batchnorms(dims, block.mid, branches)
        self.depthwise_gate = _gate(block.mid, block.gated)
        self.project = _CONV[dims](block.mid, block.out, 1, bias=False)
        self.project_bns = _batchnorms(dims, block.out, branches)
        self.project_gate = _gate(block.out, block.gated)

    def branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if self.expand is not None:
            x = F.relu6(self.expand_gate(self.expand_bns[index](self.expand(x))))
        x = F.relu6(self.depthwise_gate(self.depthwise_bns[index](self.depthwise(x))))
        return self.project_gate(self.project_bns[index](self.project(x)))

    def channel_layout(self) -> ChannelLayout:
        units = [PrunableUnit("depthwise", self.depthwise, tuple(self.depthwise_bns),
                              _gate_or_none(self.depthwise_gate), channels="mid", inputs="mid"),
                 PrunableUnit("out", self.project, tuple(self.project_bns), _gate_or_none(self.project_gate),
                              inputs="mid")]
        own = ("out",) if self.shortcut else ()
        if self.expand is not None:
            units.insert(0, PrunableUnit("mid", self.expand, tuple(self.expand_bns), _gate_or_none(self.expand_gate),
                                         channels="mid"))
        else:  # the depthwise conv reads the block input: its channels are the input's
            own = ("mid", *own)
        return ChannelLayout(tuple(units), input_sets=own)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.multi_resolution(x, x if self.shortcut else None)


class InceptionBlock(PrunableBlock):
    """An inflated Inception block (I3D), its columns concatenated, at each resolution factor, mixed, then
    ReLU: 1x1 conv (``b0``); 1x1 (``b1_reduce``) then 3x3 conv (``b1``); the same (``b2_reduce``, ``b2``);
    3x3 max pool (stride 1) then 1x1 conv (``b3``); every conv followed by its BatchNorm and gate, and ReLU
    (the output's after the mix: ReLU commutes with concatenation, not with the mix)."""

    def __init__(self, in_channels: int, block: Block, dims: int) -> None:
        super().__init__(block, dims)
        widths = dict(zip(INCEPTION_SETS, block.columns))
        sources = {"b0": in_channels, "b1_reduce": in_channels, "b1": widths["b1_reduce"], "b2_reduce": in_channels,
                   "b2": widths["b2_reduce"], "b3": in_channels}
        kernel = {"b1": 3, "b2": 3}
        self.convs = nn.ModuleDict({name: _CONV[dims](sources[name], widths[name], kernel.get(name, 1),
                                                      padding=kernel.get(name, 1) // 2, bias=False)
                                    for name in INCEPTION_SETS})
        self.bns = nn.ModuleDict({name: _batchnorms(dims, widths[name], len(block.factors)) for name in INCEPTION_SETS})
        self.channel_gates = nn.ModuleDict({name: _gate(widths[name], block.gated) for name in INCEPTION_SETS})
        self.pool = _MAXPOOL[dims](3, 1, 1)

    def _unit(self, name: str, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.channel_gates[name](self.bns[name][index](self.convs[name](x)))

    def branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        columns = [self._unit("b0", x, index),
                   self._unit("b1", F.relu(self._unit("b1_reduce", x, index)), index),
                   self._unit("b2", F.relu(self._unit("b2_reduce", x, index)), index),
                   self._unit("b3", self.pool(x), index)]
        return torch.cat(columns, 1)

    def channel_layout(self) -> ChannelLayout:
        inputs = {"b1": "b1_reduce", "b2": "b2_reduce"}
        return ChannelLayout(tuple(PrunableUnit(name, self.convs[name], tuple(self.bns[name]),
                                                _gate_or_none(self.channel_gates[name]), channels=name,
                                                inputs=inputs.get(name, "in"))
                                   for name in INCEPTION_SETS), output=INCEPTION_OUTPUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.multi_resolution(x))


# the module of each prunable block type of an ArchConfig
BLOCK_MODULES: dict[str, type[PrunableBlock]] = {"conv": ConvBlock, "residual": ResidualBlock,
                                                 "bottleneck": BottleneckBlock,
                                                 "inverted_residual": InvertedResidualBlock,
                                                 "inception": InceptionBlock}


class MDPNet(nn.Module):
    """The network ``config`` describes: its blocks, global average pooling, dropout, a linear classifier.

    ``config`` stays on the module (``net.config``): with the state_dict, it rebuilds the network.
    """

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        block_input_sizes(config)
        self.config = config
        dims = config.dims
        channels = config.in_channels
        blocks = []
        for i, block in enumerate(config.blocks):
            if block.type == "maxpool":
                blocks.append(_MAXPOOL[dims](block.kernel, block.stride, block.padding))
                continue
            _check_channels(i, block, channels)
            blocks.append(BLOCK_MODULES[block.type](channels, block, dims))
            channels = block.out
        self.blocks = nn.Sequential(*blocks)
        self.pool = _GLOBAL_POOL[dims](1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(channels, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def prunable_blocks(self) -> list[tuple[int, PrunableBlock]]:
        """(index in ``config.blocks``, module) of every prunable block."""
        return [(i, m) for i, m in enumerate(self.blocks) if isinstance(m, PrunableBlock)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.blocks(x)), 1)))


def _check_channels(index: int, block: Block, in_channels: int) -> None:
    """A ValueError where ``block``'s channel counts cannot fit its input of ``in_channels`` channels."""
    identity = (block.type in ("residual", "bottleneck") and not block.projection
                or block.type == "inverted_residual" and block.shortcut)
    if identity and (in_channels != block.out or max(block.stride) != 1):
        fix = "set `projection`" if block.type != "inverted_residual" else "unset `shortcut`"
        raise ValueError(f"block {index} ({block.type}): an identity shortcut needs stride 1 and as many input as "
                         f"output channels ({in_channels} in, {block.out} out): {fix}")
    if block.type == "inverted_residual" and not block.expand and block.mid != in_channels:
        raise ValueError(f"block {index} (inverted_residual): without `expand`, the depthwise conv runs on the "
                         f"input: `mid` must be its {in_channels} channels, got {block.mid}")
