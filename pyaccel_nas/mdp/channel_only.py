"""The channel-only arm of an MDP run: the standard alternative that MDP has to beat.

MDP prunes resolution *and* channels; the question a user asks is whether that beats pruning channels
alone, done well. This arm answers it with a well-kept library rather than a pruner of our own: Torch-Pruning's
global pruner over dependency groups (``MetaPruner``, group L2-magnitude importance). Channels that must go
together (a residual stream and every layer adding into it, a conv and its BatchNorm and the layers reading
it) form one group; groups are ranked across the whole network by the mean L2 norm of their weights, and
the weakest channels are removed until the network fits the MAC budget. Every block stays at full
resolution.

The pruned network is rebuilt as an :class:`~pyaccel_nas.mdp.layers.MDPNet` of the narrower config, so it
is saved, folded, exported and timed exactly as MDP's pruned network is.
"""

from __future__ import annotations

import copy
import dataclasses

from pyaccel_nas.mdp.arch import ArchConfig
from pyaccel_nas.mdp.export import example_input
from pyaccel_nas.mdp.layers import MDPNet
from pyaccel_nas.mdp.prune import MacBudgetError
from pyaccel_nas.nn import count_macs

# The search over Torch-Pruning's global pruning ratio: a scan in coarse steps for the first ratio that fits
# (MACs do not fall monotonically near ratio 1, where Torch-Pruning stops pruning layers it would empty),
# then bisection below it down to a tolerance far finer than one `round_to` channel group moves the MACs.
_RATIO_STEP = 0.05
_RATIO_TOLERANCE = 1e-4


def require_torch_pruning():
    """The torch_pruning module; ImportError saying how to install it."""
    try:
        import torch_pruning
    except ImportError as exc:
        raise ImportError("the channel-only arm needs Torch-Pruning: pip install 'pyaccel-nas[prune]' "
                          "(or run without it: `prune --no-channel-only`)") from exc
    return torch_pruning


def _require_plain(model: MDPNet) -> None:
    over = [i for i, block in enumerate(model.config.blocks)
            if block.prunable and (len(block.factors) > 1 or block.gated or max(block.factors[0]) > 1)]
    if over:
        raise ValueError(f"channel_prune: needs a plain network (one full-resolution branch per block, no gates); "
                         f"block(s) {over} are not")


def _pruned_copy(model: MDPNet, ratio: float, round_to: int) -> MDPNet:
    """A copy of ``model`` with Torch-Pruning's global pruning ratio ``ratio`` applied (the classifier's
    outputs, the classes, are kept)."""
    tp = require_torch_pruning()
    candidate = copy.deepcopy(model).eval()
    if ratio > 0:  # Torch-Pruning traces the graph through autograd: not under no_grad
        pruner = tp.pruner.MetaPruner(
            candidate, example_input(model.config), importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, global_pruning=True, round_to=round_to, ignored_layers=[candidate.classifier])
        pruner.step()
    return candidate


def _rebuilt(pruned: MDPNet, source: ArchConfig) -> MDPNet:
    """``pruned`` (source's modules, made narrower in place) as a network of its own, narrower config."""
    blocks = list(source.blocks)
    for index, module in pruned.prunable_blocks():
        widths = {unit.channels: unit.conv.out_channels for unit in module.channel_layout().units}
        blocks[index] = blocks[index].with_widths(widths)
    net = MDPNet(dataclasses.replace(source, blocks=tuple(blocks)))
    net.load_state_dict(pruned.state_dict())
    return net.train(pruned.training)


def channel_prune(model: MDPNet, mac_budget: float, round_to: int = 4) -> tuple[MDPNet, float]:
    """A copy of the plain network ``model`` pruned channels-only to at most ``mac_budget`` MACs, removing
    as few channels as that allows; and the global pruning ratio used (the smallest that fits). ``model``
    itself is left as it is. Channel counts are multiples of ``round_to`` (Torch-Pruning keeps at least that
    many per group). MacBudgetError when no ratio fits."""
    require_torch_pruning()
    _require_plain(model)
    example = example_input(model.config)

    def macs(ratio: float) -> int:
        return count_macs(_pruned_copy(model, ratio, round_to), example)

    if macs(0.0) <= mac_budget:
        return copy.deepcopy(model), 0.0
    fits_not, smallest = 0.0, None
    for step in range(1, round(1 / _RATIO_STEP)):
        fits = step * _RATIO_STEP
        found = macs(fits)
        if found <= mac_budget:
            while fits - fits_not > _RATIO_TOLERANCE:
                middle = (fits + fits_not) / 2
                if macs(middle) <= mac_budget:
                    fits = middle
                else:
                    fits_not = middle
            return _rebuilt(_pruned_copy(model, fits, round_to), model.config), fits
        fits_not, smallest = fits, found if smallest is None else min(smallest, found)
    raise MacBudgetError(f"channel_prune: no global pruning ratio brings {model.config.name} to the budget of "
                         f"{mac_budget:.0f} MACs (the fewest reached: {smallest})", smallest)
