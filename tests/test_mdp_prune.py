"""Physical pruning: the pruned network computes what the gated over-parameterised network restricted to the
kept branches computes; coupled residual channels stay consistent; round_to and MAC budgets hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mdp_helpers import example, randomised, restricted_reference
from pyaccel_nas.mdp import MDPNet, model_config, prune
from pyaccel_nas.mdp.prune import _scores, channel_groups
from pyaccel_nas.nn import ChannelGate, count_macs


@pytest.mark.parametrize("name", ["resnet20", "vgg", "c3d", "i3d", "mixed"])
@pytest.mark.parametrize("round_to, group_score", [(1, "max"), (4, "max"), (4, "mean")])
def test_pruned_network_equals_the_restricted_gated_network(name, round_to, group_score):
    net = randomised(name, seed=round_to)
    result = prune(net, threshold=0.5, round_to=round_to, group_score=group_score)
    x = example(net)
    with torch.no_grad():
        expected = restricted_reference(net, result)(x)
        got = result.model.eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, ChannelGate) for m in result.model.modules())
    before, after = count_macs(net, x[:1]), count_macs(result.model, x[:1])
    assert after < before
    # a real network can tell the difference: keeping every other branch's weight changes the output
    assert not torch.allclose(net(x), got, atol=1e-3)


def test_threshold_pruning_with_round_to_1_is_channel_gate_thresholding():
    """With round_to=1 the kept channels are exactly the gates at or above the threshold (at least one)."""
    net = randomised("vgg", seed=5)
    result = prune(net, threshold=0.6)
    for i, block in net.prunable_blocks():
        gate = block.gate.gate.detach()
        expected = (gate >= 0.6).nonzero().flatten().tolist() or [int(gate.argmax())]
        assert result.kept[i]["out"] == expected


def test_residual_stream_channels_are_shared_and_kept_if_any_member_needs_them():
    net = randomised("resnet20", seed=2)
    groups, channel_sets, _ = channel_groups(net)
    stream = groups[channel_sets[1]["out"][0]]
    assert stream.members == [(0, "out"), (1, "out"), (2, "out"), (3, "out")]
    stage2 = groups[channel_sets[4]["out"][0]]
    assert stage2.members == [(4, "out"), (4, "proj"), (5, "out"), (6, "out")]
    # channel 3 of stage 1's stream: below the threshold everywhere except in block 2's second conv
    with torch.no_grad():
        for block in (net.blocks[0].gate, net.blocks[1].gate2, net.blocks[2].gate2, net.blocks[3].gate2):
            block.gate[3] = 0.01
        net.blocks[2].gate2.gate[3] = 0.9
        for block in (net.blocks[0].gate, net.blocks[1].gate2, net.blocks[2].gate2, net.blocks[3].gate2):
            block.gate[5] = 0.01  # channel 5: below everywhere
    result = prune(net, threshold=0.3)
    kept = result.kept
    assert 3 in kept[1]["out"] and 5 not in kept[1]["out"]
    for i in (0, 1, 2, 3):
        assert kept[i]["out"] == kept[1]["out"]
    for i in (4, 5, 6):
        assert kept[i]["out"] == kept[4]["proj"] == kept[4]["out"]
    config = result.model.config
    assert {config.blocks[i].out for i in (0, 1, 2, 3)} == {len(kept[1]["out"])}
    assert result.model.blocks[4].conv1.in_channels == len(kept[1]["out"])
    assert result.model.classifier.in_features == len(kept[7]["out"])
    x = example(net)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), restricted_reference(net, result)(x), rtol=1e-5, atol=1e-5)


def test_residual_stream_scored_by_the_mean_of_its_gates():
    net = randomised("resnet20", seed=2)
    with torch.no_grad():
        for block in (net.blocks[0].gate, net.blocks[1].gate2, net.blocks[2].gate2, net.blocks[3].gate2):
            block.gate[3] = 0.01
        net.blocks[2].gate2.gate[3] = 0.9  # one member needs channel 3; the mean (0.23) is below 0.3
    assert 3 in prune(net, threshold=0.3).kept[1]["out"]
    kept = prune(net, threshold=0.3, group_score="mean").kept
    assert 3 not in kept[1]["out"] and all(kept[i]["out"] == kept[1]["out"] for i in (0, 2, 3))
    with pytest.raises(ValueError, match="`group_score` must be one of max, mean"):
        prune(net, threshold=0.3, group_score="sum")


@pytest.mark.parametrize("round_to", [1, 8])
def test_mac_budget_is_met_with_channel_counts_rounded(round_to):
    net = randomised("resnet20", seed=3)
    x = example(net, 1)
    base = count_macs(MDPNet(model_config("resnet20", in_channels=2, num_classes=7, input_size=(16, 16))), x)
    result = prune(net, mac_budget=base / 3, round_to=round_to)
    assert count_macs(result.model, x) <= base / 3
    for block in result.model.config.blocks:
        for count, full in ((block.out, 64), (block.mid, 64)):
            assert count == 0 or count % round_to == 0 or count == full
    # the threshold is the smallest that meets the budget: the next lower gate score would not
    groups, _, _ = channel_groups(net)
    scores = torch.cat(_scores(net, groups, "max"))
    lower = scores[scores < result.threshold].max().item()
    assert count_macs(prune(net, threshold=lower, round_to=round_to).model, x) > base / 3


def test_prune_refuses_bad_requests():
    net = randomised("vgg")
    with pytest.raises(ValueError, match="exactly one"):
        prune(net)
    with pytest.raises(ValueError, match="exactly one"):
        prune(net, threshold=0.1, mac_budget=1e6)
    with pytest.raises(ValueError, match="round_to"):
        prune(net, threshold=0.1, round_to=0)
    with pytest.raises(ValueError, match="mac_budget"):
        prune(net, mac_budget=10)
    plain_net = MDPNet(model_config("vgg", in_channels=1, num_classes=10, input_size=(8, 8)))
    with pytest.raises(ValueError, match="block 0 .*no channel gates"):
        prune(plain_net, threshold=0.1)


def test_pruned_network_trains():
    net = randomised("resnet20")
    model = prune(net, threshold=0.5, round_to=2).model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = example(net, 8), torch.randint(0, 7, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None for p in model.parameters())
