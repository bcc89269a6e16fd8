"""MDP's searching losses: branch entropy (L_st), gate L1 (L_gate), resolution cost (L_cost), and their use in
training."""

from __future__ import annotations

import math

import pytest
import torch

from mdp_helpers import randomised
from pyaccel_nas.data import load_dataset
from pyaccel_nas.mdp import MDPNet, branch_entropy, gate_l1, mdp_regulariser, model_config, over_parameterise
from pyaccel_nas.mdp.losses import branch_costs, expected_cost
from pyaccel_nas.nn import ChannelGate, MultiResSum, count_macs
from pyaccel_nas.training import ModelTrainer, TrainRecipe


def test_branch_entropy_is_the_summed_entropy_of_the_branch_importances():
    net = randomised("resnet20")
    mixes = [m for m in net.modules() if isinstance(m, MultiResSum)]
    assert len(mixes) >= 3
    expected = sum(-sum(p * math.log(p) for p in torch.softmax(m.logits.detach().double(), 0).tolist())
                   for m in mixes)
    assert branch_entropy(net).item() == pytest.approx(expected, rel=1e-5)


def test_branch_entropy_is_largest_at_uniform_importance_and_vanishes_at_one_branch():
    net = randomised("c3d")
    mixes = [m for m in net.modules() if isinstance(m, MultiResSum)]
    with torch.no_grad():
        for m in mixes:
            m.logits.zero_()
    uniform = branch_entropy(net).item()
    assert uniform == pytest.approx(sum(math.log(m.num_branches) for m in mixes), rel=1e-6)
    with torch.no_grad():
        for m in mixes:
            m.logits.copy_(torch.tensor([0.0] + [-50.0] * (m.num_branches - 1)))
    assert branch_entropy(net).item() < 1e-12 < uniform


def test_gate_l1_is_the_l1_norm_of_all_gates():
    net = randomised("vgg")
    gates = torch.cat([m.gate.detach() for m in net.modules() if isinstance(m, ChannelGate)])
    with torch.no_grad():  # signs must not matter
        next(m for m in net.modules() if isinstance(m, ChannelGate)).gate.neg_()
    assert gate_l1(net).item() == pytest.approx(gates.abs().sum().item(), rel=1e-6)


def test_regulariser_weights_and_gradients():
    net = randomised("resnet20")
    alpha, eta = 0.3, 0.7
    total = mdp_regulariser(alpha, eta)(net)
    assert total.item() == pytest.approx(alpha * branch_entropy(net).item() + eta * gate_l1(net).item(), rel=1e-6)
    total.backward()
    gate = next(m for m in net.modules() if isinstance(m, ChannelGate))
    torch.testing.assert_close(gate.gate.grad, eta * torch.sign(gate.gate.detach()))
    assert all(m.logits.grad.abs().sum() > 0 for m in net.modules() if isinstance(m, MultiResSum))
    with pytest.raises(ValueError, match="alpha"):
        mdp_regulariser(-1, 0)


def test_branch_costs_count_each_branch_convolutions_on_its_pooled_input():
    net = randomised("vgg", in_channels=3)  # vgg's first block: a 3x3 conv, 3 -> out channels, stride 1
    example = torch.randn(2, 3, 16, 16)
    network_macs = 1e6
    costs = branch_costs(net, example, network_macs)
    mixes = [m for m in net.modules() if isinstance(m, MultiResSum)]
    assert list(costs) == mixes
    first = net.blocks[0]
    for cost, factor in zip(costs[first.mix], first.factors):  # by hand: C_in * C_out * 3 * 3 * pixels
        pixels = (16 // factor[0]) * (16 // factor[1])
        assert cost.item() == pytest.approx(3 * first.conv.out_channels * 9 * pixels / network_macs, rel=1e-9)
    for (_, block), cost in zip([b for b in net.prunable_blocks() if b[1].mix is not None], costs.values()):
        reductions = torch.tensor([math.prod(f) for f in block.factors], dtype=torch.float64)
        torch.testing.assert_close(cost * reductions, cost[:1].expand(len(reductions)))  # MACs / pixels pooled


def test_expected_cost_is_the_importance_weighted_cost_and_pulls_towards_cheap_branches():
    net = randomised("resnet20")
    example = torch.randn(1, 2, 16, 16)
    costs = branch_costs(net, example, count_macs(net, example))
    expected = sum((torch.softmax(m.logits.detach().double(), 0) * c).sum() for m, c in costs.items())
    loss = expected_cost(costs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    for mix, cost in costs.items():  # d/da_k sum_j p_j c_j = p_k (c_k - E_p[c])
        p = torch.softmax(mix.logits.detach().double(), 0)
        torch.testing.assert_close(mix.logits.grad.double(), p * (cost - (p * cost).sum()), rtol=1e-4, atol=1e-9)
        assert mix.logits.grad[0] > 0 > mix.logits.grad[-1]  # descent raises the cheapest, lowers full resolution


def test_regulariser_adds_the_cost_term_only_with_costs():
    net = randomised("c3d")
    example = torch.randn(1, 2, 4, 16, 16)
    costs = branch_costs(net, example, count_macs(net, example))
    alpha, eta, beta = 0.3, 0.7, 5.0
    total = mdp_regulariser(alpha, eta, beta, costs)(net)
    expected = alpha * branch_entropy(net) + eta * gate_l1(net) + beta * expected_cost(costs)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="costs"):
        mdp_regulariser(alpha, eta, beta)
    with pytest.raises(ValueError, match="beta"):
        mdp_regulariser(alpha, eta, -1.0, costs)


def test_training_with_the_cost_term_moves_importance_to_lower_resolutions():
    digits = load_dataset("digits")
    config = over_parameterise(model_config("vgg", in_channels=1, num_classes=10, input_size=(8, 8)))
    recipe = TrainRecipe(batch_size=128, learning_rate=0.05, augment=False)

    def cost_after_training(beta):
        torch.manual_seed(0)
        net = MDPNet(config)
        costs = branch_costs(net, torch.zeros(1, 1, 8, 8), count_macs(net, torch.zeros(1, 1, 8, 8)))
        ModelTrainer(net, digits, 2, recipe, extra_loss=mdp_regulariser(0.0, 0.0, beta, costs)).train(2)
        return expected_cost(costs).item()

    assert cost_after_training(20.0) < 0.9 * cost_after_training(0.0)


def test_plain_networks_have_zero_regularisers():
    net = MDPNet(model_config("vgg", in_channels=1, num_classes=10, input_size=(8, 8)))
    assert branch_entropy(net).item() == 0 and gate_l1(net).item() == 0


def test_training_with_the_gate_penalty_shrinks_the_gates():
    digits = load_dataset("digits")
    config = over_parameterise(model_config("vgg", in_channels=1, num_classes=10, input_size=(8, 8)))
    recipe = TrainRecipe(batch_size=128, learning_rate=0.05, augment=False)

    def mean_gate(eta):
        torch.manual_seed(0)
        trainer = ModelTrainer(MDPNet(config), digits, 2, recipe, extra_loss=mdp_regulariser(0.0, eta))
        trainer.train(2)
        gates = [m.gate for m in trainer.model.modules() if isinstance(m, ChannelGate)]
        return torch.cat(gates).abs().mean().item()

    assert mean_gate(0.1) < mean_gate(0.0) - 0.05


@pytest.mark.parametrize("name", ["resnet20", "c3d"])
def test_branch_latency_costs_time_each_branch_against_the_plain_network(name, monkeypatch):
    from pyaccel_nas.mdp import latency

    net = randomised(name)
    timed = []

    def fake_interleaved(calls, repeats, threads=None):  # the calls run; their "times" are their order
        timed.extend(call() for call in calls)
        return [{"median": float(i + 1), "min": 0.0, "max": 0.0} for i in range(len(calls))]

    monkeypatch.setattr(latency, "interleaved_ms", fake_interleaved)
    costs = latency.branch_latency_costs(net, batch=3, repeats=2)
    blocks = [block for _, block in net.prunable_blocks() if block.mix is not None]
    assert list(costs) == [block.mix for block in blocks]
    # call 0 is the whole plain network (its logits), then each block at each factor alone, in order
    assert timed[0].shape == (3, 7)
    position = 1
    for block in blocks:
        assert costs[block.mix].tolist() == [float(position + k + 1) for k in range(len(block.factors))]
        for k in range(len(block.factors)):
            x_shape = timed[position + k].shape
            assert x_shape[0] == 3 and x_shape[1] == block.channel_layout().units[-1].conv.out_channels
        position += len(block.factors)
    assert position == len(timed)


def test_branch_latency_costs_are_measured_fractions():
    from pyaccel_nas.mdp.latency import branch_latency_costs

    net = randomised("vgg").train()
    costs = branch_latency_costs(net, batch=2, repeats=2)
    assert net.training  # measured in eval mode, handed back as it came
    for mix, cost in costs.items():
        assert cost.dtype == torch.float64 and cost.shape == (len(mix.logits),)
        assert torch.isfinite(cost).all() and (cost > 0).all()
