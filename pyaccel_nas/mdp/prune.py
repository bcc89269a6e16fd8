"""MDP's pruning stage: pick each block's resolution, remove channels, rebuild a physically smaller network.

1. Resolution: every block keeps the branch of largest importance (``softmax(a)``) and runs at its factor
   alone: pool before, convolutions, nearest upsampling after, as that branch did.
2. Channels: layers whose outputs are added together share one channel set (a *group*: the residual
   stream of a ResNet stage is its first block's projection, or the conv feeding it, plus the second conv
   of every block in the stage). A channel of a group survives when the largest ``|gate|`` among the
   group's members reaches ``threshold``; with ``mac_budget`` instead, the threshold is the smallest that
   brings the pruned network's MACs within the budget. Each group keeps at least one channel, and its count
   is rounded up to a multiple of ``round_to`` (taking the next-strongest channels), capped at its size.
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
from pyaccel_nas.mdp.layers import ConvBlock, MDPNet, ResidualBlock
from pyaccel_nas.nn import ChannelGate, count_macs

# gate members of a block: "out" (conv block, residual second conv), "mid" (residual first conv),
# "proj" (residual projection shortcut)


@dataclass
class Group:
    """Channels that must be kept or removed together, and the gates that act on them."""

    members: list[tuple[int, str]] = field(default_factory=list)  # (block index, member)
    kept: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PruneResult:
    """The pruned network and what was kept: per prunable block, the chosen branch and the kept channel
    indices (into the over-parameterised block's channels) of its members."""

    model: MDPNet
    branches: dict[int, int]
    kept: dict[int, dict[str, list[int]]]
    threshold: float

    def blocks_report(self, source: ArchConfig) -> list[dict]:
        """Per prunable block: type, chosen resolution factor, channels before and after, and the indices of
        the kept channels of each gated layer ("out", "mid", "proj")."""
        rows = []
        for index, branch in self.branches.items():
            before, after = source.blocks[index], self.model.config.blocks[index]
            row = {"block": index, "type": before.type, "factor": list(before.factors[branch]),
                   "candidate_factors": [list(f) for f in before.factors],
                   "channels_before": before.out, "channels_after": after.out, "kept": self.kept[index]}
            if before.type == "residual":
                row.update(mid_before=before.mid, mid_after=after.mid)
            rows.append(row)
        return rows


def _gate_module(block: ConvBlock | ResidualBlock, member: str) -> ChannelGate:
    if member == "proj":
        return block.shortcut[2]
    if isinstance(block, ConvBlock):
        return block.gate
    return block.gate1 if member == "mid" else block.gate2


def channel_groups(model: MDPNet) -> tuple[list[Group], dict[int, dict[str, int]], list[int | None]]:
    """The coupled channel groups; per prunable block, which group each member's output belongs to; and per
    block (plus the classifier, last) the group of its input (None: the network's input)."""
    groups: list[Group] = []
    member_group: dict[int, dict[str, int]] = {}
    inputs: list[int | None] = []
    current = None

    def new_group(*members: tuple[int, str]) -> int:
        groups.append(Group(list(members)))
        return len(groups) - 1

    for i, block in enumerate(model.config.blocks):
        inputs.append(current)
        if block.type == "maxpool":
            continue
        if not block.gated:
            raise ValueError(f"prune: block {i} ({block.type}) has no channel gates; prune an over-parameterised "
                             f"network (see over_parameterise)")
        if block.type == "conv":
            current = new_group((i, "out"))
            member_group[i] = {"out": current}
            continue
        mid = new_group((i, "mid"))
        if block.projection:
            current = new_group((i, "proj"), (i, "out"))
        else:
            groups[current].members.append((i, "out"))
        member_group[i] = {"mid": mid, "out": current, **({"proj": current} if block.projection else {})}
    if not groups:
        raise ValueError("prune: the network has no conv or residual block to prune")
    inputs.append(current)
    return groups, member_group, inputs


def _scores(model: MDPNet, groups: list[Group]) -> list[torch.Tensor]:
    blocks = model.blocks
    return [torch.stack([_gate_module(blocks[i], m).gate.detach().abs() for i, m in g.members]).amax(0)
            for g in groups]


def _keep(score: torch.Tensor, threshold: float, round_to: int) -> list[int]:
    count = max(1, int((score >= threshold).sum()))
    count = min(score.numel(), math.ceil(count / round_to) * round_to)
    order = torch.argsort(score, descending=True, stable=True)  # ties: the lower index first
    return sorted(order[:count].tolist())


def _pruned_config(model: MDPNet, groups: list[Group], member_group, branches: dict[int, int]) -> ArchConfig:
    blocks: list[Block] = []
    for i, block in enumerate(model.config.blocks):
        if not block.prunable:
            blocks.append(block)
            continue
        size = {m: len(groups[g].kept) for m, g in member_group[i].items()}
        blocks.append(dataclasses.replace(block, out=size["out"], mid=size.get("mid", 0), gated=False,
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
    groups, member_group, _ = channel_groups(model)
    for group in groups:
        block, member = over.blocks[group.members[0][0]], group.members[0][1]
        group.kept = list(range(min(round_to, block.mid if member == "mid" else block.out)))
    cheapest = {i: max(range(len(block.factors)), key=lambda k: math.prod(block.factors[k]))
                for i, block in enumerate(over.blocks) if block.prunable}
    return config_macs(_pruned_config(model, groups, member_group, cheapest))


def prune(model: MDPNet, *, threshold: float | None = None, mac_budget: float | None = None,
          round_to: int = 1) -> PruneResult:
    """The physically pruned copy of an over-parameterised ``model`` (which is left unchanged), in the same
    train/eval mode.

    Exactly one of ``threshold`` (remove channels whose gates are all below it) and ``mac_budget`` (MACs
    per input sample the pruned network may cost at most) must be given.
    """
    if (threshold is None) == (mac_budget is None):
        raise ValueError("prune: give exactly one of `threshold` and `mac_budget`")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"prune: `round_to` must be a positive int, got {round_to!r}")
    groups, member_group, inputs = channel_groups(model)
    scores = _scores(model, groups)
    branches = {i: (int(torch.argmax(b.mix.weights().detach())) if b.mix is not None else 0)
                for i, b in model.prunable_blocks()}

    def plan(t: float) -> ArchConfig:
        for group, score in zip(groups, scores):
            group.kept = _keep(score, t, round_to)
        return _pruned_config(model, groups, member_group, branches)

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
    pruned.load_state_dict(_pruned_state(model, groups, member_group, inputs, branches))
    pruned.train(model.training)
    kept = {i: {m: list(groups[g].kept) for m, g in members.items()} for i, members in member_group.items()}
    return PruneResult(pruned, branches, kept, float(threshold))


@torch.no_grad()
def _pruned_state(model: MDPNet, groups, member_group, inputs, branches) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}

    def kept(group: int) -> torch.Tensor:
        return torch.tensor(groups[group].kept)

    def conv(name: str, weight: torch.Tensor, out_idx: torch.Tensor, in_idx: torch.Tensor) -> None:
        state[name + ".weight"] = weight[out_idx][:, in_idx].clone()

    def batchnorm(name: str, bn: torch.nn.Module, gate: ChannelGate, idx: torch.Tensor) -> None:
        g = gate.gate[idx]
        state[name + ".weight"] = bn.weight[idx] * g
        state[name + ".bias"] = bn.bias[idx] * g
        state[name + ".running_mean"] = bn.running_mean[idx].clone()
        state[name + ".running_var"] = bn.running_var[idx].clone()
        state[name + ".num_batches_tracked"] = bn.num_batches_tracked.clone()

    for i, block in model.prunable_blocks():
        p, k = f"blocks.{i}", branches[i]
        members = member_group[i]
        first_conv = block.conv if isinstance(block, ConvBlock) else block.conv1
        in_idx = torch.arange(first_conv.in_channels) if inputs[i] is None else kept(inputs[i])
        out_idx = kept(members["out"])
        if isinstance(block, ConvBlock):
            conv(f"{p}.conv", block.conv.weight, out_idx, in_idx)
            batchnorm(f"{p}.bns.0", block.bns[k], block.gate, out_idx)
            continue
        mid_idx = kept(members["mid"])
        conv(f"{p}.conv1", block.conv1.weight, mid_idx, in_idx)
        batchnorm(f"{p}.bn1s.0", block.bn1s[k], block.gate1, mid_idx)
        conv(f"{p}.conv2", block.conv2.weight, out_idx, mid_idx)
        batchnorm(f"{p}.bn2s.0", block.bn2s[k], block.gate2, out_idx)
        if "proj" in members:
            conv(f"{p}.shortcut.0", block.shortcut[0].weight, out_idx, in_idx)
            batchnorm(f"{p}.shortcut.1", block.shortcut[1], block.shortcut[2], out_idx)
    last = kept(inputs[-1])
    state["classifier.weight"] = model.classifier.weight[:, last].clone()
    state["classifier.bias"] = model.classifier.bias.clone()
    return state

