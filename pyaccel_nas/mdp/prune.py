"""MDP's pruning stage: pick each block's resolution, remove channels, rebuild a physically smaller network.

1. Resolution: every block keeps the branch of largest importance (``softmax(a)``) and runs at its factor
   alone: pool before, convolutions, nearest upsampling after, as that branch did.
2. Channels: layers whose outputs are added together share one channel set (a *group*: the residual
   stream of a ResNet stage is its first block's projection, or the conv feeding it, plus the second conv
   of every block in the stage); each block says which of its layers share one, and which sets its output
   concatenates (an Inception block's columns)
   (:meth:`~pyaccel_nas.mdp.layers.PrunableBlock.channel_layout`). A layer reading a concatenation keeps the
   kept channels of each part. A channel of a group survives when the
   largest ``|gate|`` among the group's members reaches ``threshold``; with ``mac_budget`` instead, the
   threshold is the smallest that brings the pruned network's MACs within the budget. Each group keeps at
   least one channel, and its count is rounded up to a multiple of ``round_to`` (taking the next-strongest
   channels), capped at its size.
3. Rebuild: convolutions, BatchNorms and the classifier are sliced to the kept channels (outputs and the
   inputs that follow them); each surviving gate is folded into its BatchNorm's affine parameters
   (``g * bn(x) = bn'(x)`` with ``weight' = g * weight``, ``bias' = g * bias``), so the pruned network has
   no gates.

Before any fine-tuning the pruned network computes exactly what the over-parameterised one computes with
each block's other branches given weight 0 and the removed channels' gates set to 0 (in eval mode).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from pyaccel_nas.mdp.arch import ArchConfig, Block
from pyaccel_nas.mdp.layers import MDPNet, PrunableBlock, PrunableUnit
from pyaccel_nas.nn import count_macs


@dataclass
class Group:
    """``channels`` channels that must be kept or removed together (a channel set of one block, or the one
    the blocks of a residual stream share), and the units whose gates act on them."""

    channels: int
    members: list[tuple[int, str]] = field(default_factory=list)  # (block index, unit name)
    kept: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PruneResult:
    """The pruned network and what was kept: per prunable block, the chosen branch and the kept channel
    indices (into the over-parameterised block's channels) of its units, by unit name."""

    model: MDPNet
    branches: dict[int, int]
    kept: dict[int, dict[str, list[int]]]
    threshold: float

    def blocks_report(self, source: ArchConfig) -> list[dict]:
        """Per prunable block: :func:`channel_widths`, the chosen resolution factor and the candidates, and
        the indices of the kept channels of each unit ("out", "mid", "proj"; into the over-parameterised
        block's channels)."""
        rows = channel_widths(source, self.model)
        for row in rows:
            factors = source.blocks[row["block"]].factors
            row.update(factor=list(factors[self.branches[row["block"]]]), candidate_factors=[list(f) for f in factors],
                       kept=self.kept[row["block"]])
        return rows


def channel_widths(source: ArchConfig, pruned: MDPNet) -> list[dict]:
    """Per prunable block of ``pruned``: its index and type, and the width of each of its channel sets in
    ``source`` and in ``pruned``: ``channels_before``/``channels_after`` for the output, ``mid_before``/
    ``mid_after`` for a residual block's middle, and so on for the other sets its units name."""
    rows = []
    for index, module in pruned.prunable_blocks():
        before, after = source.blocks[index], pruned.config.blocks[index]
        row = {"block": index, "type": before.type, "channels_before": before.out, "channels_after": after.out}
        for name in dict.fromkeys(u.channels for u in module.channel_layout().units):
            if name != "out":
                row.update({f"{name}_before": before.width(name), f"{name}_after": after.width(name)})
        rows.append(row)
    return rows


# A channel set as the groups it concatenates, in order (one group but for an Inception block's output);
# None stands for the network's input, which is never pruned
ChannelSet = tuple[int, ...] | None


def channel_groups(model: MDPNet) -> tuple[list[Group], dict[int, dict[str, ChannelSet]], list[ChannelSet]]:
    """The coupled channel groups; per prunable block, the groups of each of its channel sets (see
    :class:`~pyaccel_nas.mdp.layers.PrunableUnit`: "in", its input, and those its units name); and per block
    (plus the classifier, last) the groups of its input."""
    groups: list[Group] = []
    channel_sets: dict[int, dict[str, ChannelSet]] = {}
    inputs: list[ChannelSet] = []
    current: ChannelSet = None
    for i, module in enumerate(model.blocks):
        inputs.append(current)
        if not isinstance(module, PrunableBlock):
            continue
        block = model.config.blocks[i]
        if not block.gated:
            raise ValueError(f"prune: block {i} ({block.type}) has no channel gates; prune an over-parameterised "
                             f"network (see over_parameterise)")
        layout = module.channel_layout()
        sets = {"in": current}
        if layout.input_sets and current is None:
            raise ValueError(f"prune: block {i} ({block.type}) shares channels with the network's input "
                             f"({', '.join(layout.input_sets)}), which then cannot be pruned")
        sets.update({name: current for name in layout.input_sets})
        for unit in layout.units:
            if unit.channels not in sets:
                groups.append(Group(unit.conv.out_channels))
                sets[unit.channels] = (len(groups) - 1,)
            if len(sets[unit.channels]) != 1:  # a gate would span several groups
                raise ValueError(f"prune: block {i} ({block.type}), unit {unit.name}: its output channels are a "
                                 f"concatenation of several channel sets; prune cannot score them")
            groups[sets[unit.channels][0]].members.append((i, unit.name))
        if layout.output != ("out",):
            sets["out"] = sum((sets[name] for name in layout.output), ())
        channel_sets[i] = sets
        current = sets["out"]
    if not groups:
        raise ValueError("prune: the network has no conv or residual block to prune")
    inputs.append(current)
    return groups, channel_sets, inputs


def prunable_units(model: MDPNet) -> dict[tuple[int, str], PrunableUnit]:
    """Every unit of the model's prunable blocks, by (block index, unit name)."""
    return {(i, unit.name): unit for i, block in model.prunable_blocks() for unit in block.channel_layout().units}


# How a group of coupled channels (several units' outputs added together) scores a channel from its units'
# gates: "max" keeps it if any unit needs it; "mean" weighs every unit alike, so a residual stream many
# blocks add into is pruned like any other channel set instead of almost never.
GROUP_SCORES = {"max": lambda gates: gates.amax(0), "mean": lambda gates: gates.mean(0)}


def _scores(model: MDPNet, groups: list[Group], group_score: str) -> list[torch.Tensor]:
    gated = prunable_units(model)
    combine = GROUP_SCORES[group_score]
    return [combine(torch.stack([gated[m].gate.gate.detach().abs() for m in g.members])) for g in groups]


def _keep(score: torch.Tensor, threshold: float, round_to: int) -> list[int]:
    count = max(1, int((score >= threshold).sum()))
    count = min(score.numel(), math.ceil(count / round_to) * round_to)
    order = torch.argsort(score, descending=True, stable=True)  # ties: the lower index first
    return sorted(order[:count].tolist())


def kept_channels(groups: list[Group], channels: ChannelSet) -> list[int]:
    """The kept channels of a channel set: those of each group it concatenates, offset by the groups before."""
    kept, offset = [], 0
    for group in channels:
        kept += [offset + k for k in groups[group].kept]
        offset += groups[group].channels
    return kept


def _pruned_config(model: MDPNet, groups: list[Group], channel_sets, branches: dict[int, int]) -> ArchConfig:
    blocks: list[Block] = []
    for i, block in enumerate(model.config.blocks):
        if not block.prunable:
            blocks.append(block)
            continue
        widths = {name: len(kept_channels(groups, g)) for name, g in channel_sets[i].items() if name != "in"}
        blocks.append(dataclasses.replace(block.with_widths(widths), gated=False,
                                          factors=(block.factors[branches[i]],)))
    return model.config.replace_blocks(blocks)


def config_macs(config: ArchConfig) -> int:
    """MACs per input sample of the network ``config`` describes, counted on the meta device (no weights)."""
    with torch.device("meta"):
        net = MDPNet(config)
        x = torch.empty(1, config.in_channels, *config.input_size)
    return count_macs(net, x)


class MacBudgetError(ValueError):
    """No threshold brings the pruned network within the MAC budget; ``smallest_macs`` is the closest it gets."""

    def __init__(self, message: str, smallest_macs: int) -> None:
        super().__init__(message)
        self.smallest_macs = smallest_macs


def smallest_macs(over: ArchConfig, round_to: int) -> int:
    """The fewest MACs pruning a network over-parameterised as ``over`` can reach, whatever it learns: every
    block at its cheapest resolution, every channel group at one channel rounded up to ``round_to``.
    Counted without weights, so a run can refuse a MAC budget out of reach before it trains anything."""
    with torch.device("meta"):
        model = MDPNet(over)
    groups, channel_sets, _ = channel_groups(model)
    for group in groups:
        group.kept = list(range(min(round_to, group.channels)))
    cheapest = {i: max(range(len(block.factors)), key=lambda k: math.prod(block.factors[k]))
                for i, block in enumerate(over.blocks) if block.prunable}
    return config_macs(_pruned_config(model, groups, channel_sets, cheapest))


def prune(model: MDPNet, *, threshold: float | None = None, mac_budget: float | None = None,
          round_to: int = 1, group_score: str = "max") -> PruneResult:
    """The physically pruned copy of an over-parameterised ``model`` (which is left unchanged), in the same
    train/eval mode.

    Exactly one of ``threshold`` (remove channels whose score is below it) and ``mac_budget`` (MACs per
    input sample the pruned network may cost at most) must be given. A channel's score is its gate's
    magnitude; for channels that several units add together, ``group_score`` of their gates: "max" (kept
    if any unit needs it) or "mean".
    """
    if group_score not in GROUP_SCORES:
        raise ValueError(f"prune: `group_score` must be one of {', '.join(GROUP_SCORES)}, got {group_score!r}")
    if (threshold is None) == (mac_budget is None):
        raise ValueError("prune: give exactly one of `threshold` and `mac_budget`")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"prune: `round_to` must be a positive int, got {round_to!r}")
    groups, channel_sets, inputs = channel_groups(model)
    scores = _scores(model, groups, group_score)
    branches = {i: (int(torch.argmax(b.mix.weights().detach())) if b.mix is not None else 0)
                for i, b in model.prunable_blocks()}

    def plan(t: float) -> ArchConfig:
        for group, score in zip(groups, scores):
            group.kept = _keep(score, t, round_to)
        return _pruned_config(model, groups, channel_sets, branches)

    if mac_budget is not None:
        if mac_budget <= 0:
            raise ValueError(f"prune: `mac_budget` must be > 0, got {mac_budget}")
        candidates = torch.cat([torch.zeros(1), *scores]).unique().tolist()  # ascending
        smallest = config_macs(plan(candidates[-1]))
        if smallest > mac_budget:
            raise MacBudgetError(f"prune: even the smallest network at the chosen resolutions ({smallest:.4g} MACs, "
                                 f"one channel per group rounded to {round_to}) exceeds mac_budget={mac_budget:.4g}",
                                 smallest)
        low, high = 0, len(candidates) - 1  # MACs fall as the threshold rises: find the first that fits
        while low < high:
            middle = (low + high) // 2
            if config_macs(plan(candidates[middle])) <= mac_budget:
                high = middle
            else:
                low = middle + 1
        threshold = candidates[low]
    config = plan(float(threshold))
    pruned = MDPNet(config)
    pruned.load_state_dict(_pruned_state(model, pruned, groups, channel_sets, inputs, branches))
    pruned.train(model.training)
    kept = {i: {u.name: kept_channels(groups, channel_sets[i][u.channels]) for u in block.channel_layout().units}
            for i, block in model.prunable_blocks()}
    return PruneResult(pruned, branches, kept, float(threshold))


@torch.no_grad()
def _pruned_state(model: MDPNet, pruned: MDPNet, groups, channel_sets, inputs, branches) -> dict[str, torch.Tensor]:
    """The state_dict of ``pruned`` (built from the pruned config): each unit's conv sliced to the kept
    channels of its output and input sets, the chosen branch's BatchNorm sliced with the gate folded in,
    the classifier's inputs sliced."""
    names = {module: name for name, module in pruned.named_modules()}
    state: dict[str, torch.Tensor] = {}

    def kept(channels: ChannelSet) -> torch.Tensor:
        return torch.tensor(kept_channels(groups, channels))

    for i, block in model.prunable_blocks():
        sets = channel_sets[i]
        targets = {unit.name: unit for unit in pruned.blocks[i].channel_layout().units}
        for unit in block.channel_layout().units:
            out_idx = kept(sets[unit.channels])
            in_idx = torch.arange(unit.conv.in_channels) if sets[unit.inputs] is None else kept(sets[unit.inputs])
            target = targets[unit.name]
            weight = unit.conv.weight[out_idx]  # a depthwise conv's filters each read their own channel
            state[names[target.conv] + ".weight"] = (weight if unit.depthwise else weight[:, in_idx]).clone()
            bn, g, name = unit.batchnorm(branches[i]), unit.gate.gate[out_idx], names[target.batchnorm(0)]
            state[name + ".weight"] = bn.weight[out_idx] * g
            state[name + ".bias"] = bn.bias[out_idx] * g
            state[name + ".running_mean"] = bn.running_mean[out_idx].clone()
            state[name + ".running_var"] = bn.running_var[out_idx].clone()
            state[name + ".num_batches_tracked"] = bn.num_batches_tracked.clone()
    last = kept(inputs[-1])
    state["classifier.weight"] = model.classifier.weight[:, last].clone()
    state["classifier.bias"] = model.classifier.bias.clone()
    return state
