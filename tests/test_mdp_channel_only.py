"""The channel-only arm: Torch-Pruning's global group pruner, rebuilt as a narrower MDPNet."""

from __future__ import annotations

import sys

import pytest
import torch

from pyaccel_nas.mdp import MDPNet
from pyaccel_nas.mdp.channel_only import _pruned_copy, channel_prune
from pyaccel_nas.mdp.prune import MacBudgetError, config_macs
from pyaccel_nas.nn import count_macs
from mdp_helpers import SHAPES, base_config, randomise, randomised

pytest.importorskip("torch_pruning")


def plain(name: str, seed: int = 0) -> MDPNet:
    torch.manual_seed(seed)
    return randomise(MDPNet(base_config(name)))


@pytest.mark.parametrize("name", ["resnet20", "vgg", "c3d", "i3d", "mixed"])
def test_prunes_to_the_budget_and_rebuilds_what_torch_pruning_pruned(name):
    net = plain(name)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    budget = config_macs(net.config) / 2
    pruned, ratio = channel_prune(net, budget, round_to=4)

    macs = config_macs(pruned.config)
    x = torch.randn(3, 2, *SHAPES[name])
    assert count_macs(pruned, x[:1]) == macs <= budget
    # the smallest ratio that fits: a slightly smaller one does not
    assert count_macs(_pruned_copy(net, ratio - 2e-4, 4), x[:1]) > budget
    # the rebuilt network computes what Torch-Pruning's pruned copy computes, and is an MDPNet of its own config
    torch.testing.assert_close(pruned.eval()(x), _pruned_copy(net, ratio, 4)(x))
    assert type(pruned) is MDPNet and pruned.state_dict().keys() == net.state_dict().keys()
    for block in pruned.config.blocks:
        if block.prunable:
            widths = (block.out, block.mid, block.mid2, *block.columns)
            assert all(width % 4 == 0 for width in widths) and block.factors == ((1,) * len(SHAPES[name]),)
    assert pruned.config.blocks != net.config.blocks
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # the input is left alone


def test_residual_stream_is_pruned_as_one_group():
    pruned, _ = channel_prune(plain("resnet20"), config_macs(plain("resnet20").config) / 2)
    blocks = pruned.config.blocks
    # the stem and each stage's blocks add into one stream: equal widths within a stage
    assert blocks[0].out == blocks[1].out == blocks[2].out == blocks[3].out
    assert blocks[4].out == blocks[5].out == blocks[6].out and blocks[7].out == blocks[8].out == blocks[9].out


def test_budget_already_met_and_unreachable():
    net = plain("vgg")
    copy_, ratio = channel_prune(net, config_macs(net.config))
    assert ratio == 0.0 and copy_ is not net and copy_.config == net.config
    with pytest.raises(MacBudgetError, match="no global pruning ratio brings vgg to the budget of 10 MACs"):
        channel_prune(net, 10)


def test_refuses_an_over_parameterised_network():
    with pytest.raises(ValueError, match="needs a plain network"):
        channel_prune(randomised("vgg"), 1e6)


def test_missing_torch_pruning_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'pyaccel-nas\[prune\]'.*--no-channel-only"):
        channel_prune(plain("vgg"), 1e6)
