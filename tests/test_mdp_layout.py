"""Prunable blocks describe themselves (``channel_layout``): the description covers every conv, BatchNorm and
gate of a block exactly once with consistent widths, and a block type defined here alone, on nothing but
that description, is pruned, has its BatchNorms folded, exports and loads plain weights. (Saving it to JSON
would take its schema in arch.py, the one other place that declares a block type.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mdp_helpers import example, randomise, randomised, restricted_reference
from pyaccel_nas.mdp import ArchConfig, Block, MDPNet, export_model, load_plain_weights, over_parameterise, plain, prune
from pyaccel_nas.mdp import layers
from pyaccel_nas.mdp.export import fold_batchnorms
from pyaccel_nas.mdp.layers import ChannelLayout, PrunableBlock, PrunableUnit
from pyaccel_nas.mdp.prune import smallest_macs
from pyaccel_nas.nn import ChannelGate, count_macs

CONVS = (nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


class ToyBlock(PrunableBlock):
    """``relu(mix(expand(reduce(x)) + side(x)) + x)``: two convs in series beside a third, all inside the
    resolution branches, and an identity shortcut; its modules live in dicts, under names of its own."""

    def __init__(self, in_channels: int, block: Block, dims: int) -> None:
        super().__init__(block, dims)
        assert dims == 2 and in_channels == block.out and block.stride == (1, 1)
        shapes = {"reduce": (in_channels, block.mid, 1), "expand": (block.mid, block.out, 3),
                  "side": (in_channels, block.out, 3)}
        self.convs = nn.ModuleDict({name: nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
                                    for name, (c_in, c_out, k) in shapes.items()})
        self.norms = nn.ModuleDict({name: nn.ModuleList(nn.BatchNorm2d(c_out) for _ in block.factors)
                                    for name, (_, c_out, _) in shapes.items()})
        self.scales = nn.ModuleDict({name: ChannelGate(c_out) if block.gated else nn.Identity()
                                     for name, (_, c_out, _) in shapes.items()})

    def _unit(self, name: str, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.scales[name](self.norms[name][index](self.convs[name](x)))

    def branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self._unit("expand", F.relu(self._unit("reduce", x, index)), index) + self._unit("side", x, index)

    def channel_layout(self) -> ChannelLayout:
        sets = {"reduce": ("mid", "in"), "expand": ("out", "mid"), "side": ("out", "in")}
        return ChannelLayout(tuple(
            PrunableUnit(name, self.convs[name], tuple(self.norms[name]),
                         self.scales[name] if isinstance(self.scales[name], ChannelGate) else None,
                         channels=channels, inputs=inputs)
            for name, (channels, inputs) in sets.items()), input_sets=("out",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.multi_resolution(x) + x)


@pytest.fixture
def toy_type(monkeypatch):
    monkeypatch.setitem(layers.BLOCK_MODULES, "toy", ToyBlock)


def toy_config() -> ArchConfig:
    """A plain network with two toy blocks on the stream of a conv stem."""
    conv = Block("conv", out=8, kernel=(3, 3), stride=(1, 1), factors=((1, 1),))
    toy = Block("toy", out=8, mid=6, stride=(1, 1), factors=((1, 1),))
    return ArchConfig("toy", 2, 7, (16, 16), (conv, toy, Block("maxpool", kernel=(2, 2)), toy))


def check_layout(net: MDPNet) -> None:
    """Every block's description lists each of its convs, BatchNorms and gates once, nothing else holds
    its state, and the widths agree with its config."""
    channels = net.config.in_channels
    for i, config in enumerate(net.config.blocks):
        block = net.blocks[i]
        if not config.prunable:
            continue
        layout = block.channel_layout()
        listed = [m for unit in layout.units for m in (unit.conv, *unit.batchnorms, unit.gate) if m is not None]
        assert len(listed) == len(set(listed)), f"block {i}: a module in two units"
        assert set(listed) == {m for m in block.modules() if isinstance(m, (*CONVS, *NORMS, ChannelGate))}, i
        owners = [*listed, *([block.mix] if block.mix is not None else [])]
        assert ({id(t) for m in owners for t in (*m.parameters(), *m.buffers())}
                == {id(t) for t in (*block.parameters(), *block.buffers())}), f"block {i}: state no unit lists"
        assert len({unit.name for unit in layout.units}) == len(layout.units)
        width = {"in": channels}
        for name in layout.input_sets:
            assert config.width(name) == channels, f"block {i}: {name} is the input's"
            width[name] = channels
        for unit in layout.units:
            out = unit.conv.out_channels
            assert out == config.width(unit.channels), f"block {i}, unit {unit.name}"
            width[unit.channels] = out
        assert config.out == sum(width[name] for name in layout.output), f"block {i}: its output's width"
        for unit in layout.units:
            assert isinstance(unit.conv, CONVS) and unit.conv.bias is None
            assert unit.conv.groups == (unit.conv.in_channels if unit.depthwise else 1)
            assert not unit.depthwise or unit.channels == unit.inputs
            assert unit.conv.in_channels == width[unit.inputs], f"block {i}, unit {unit.name}"
            assert len(unit.batchnorms) in (1, len(config.factors))
            assert all(bn.num_features == unit.conv.out_channels for bn in unit.batchnorms)
            assert (unit.gate is not None) == config.gated
            assert unit.gate is None or unit.gate.gate.numel() == unit.conv.out_channels
        channels = config.out


@pytest.mark.parametrize("name", ["resnet20", "vgg", "c3d", "i3d", "mixed"])
def test_built_in_blocks_describe_every_conv_batchnorm_and_gate_once(name):
    over = randomised(name)
    check_layout(over)
    check_layout(MDPNet(plain(over.config)))
    check_layout(prune(over, threshold=0.5, round_to=2).model)


def test_a_block_type_defined_only_here_prunes_folds_exports_and_loads_plain_weights(toy_type):
    base = toy_config()
    torch.manual_seed(0)
    over = randomise(MDPNet(over_parameterise(base)))
    assert [len(block.factors) for _, block in over.prunable_blocks()] == [3, 3, 3]
    check_layout(over)

    result = prune(over, threshold=0.6)
    pruned = result.model
    check_layout(pruned)
    assert isinstance(pruned.blocks[1], ToyBlock) and not any(isinstance(m, ChannelGate) for m in pruned.modules())
    kept = result.kept
    # the stream: the stem's output, added to by each toy block's expand and side convs
    assert kept[0]["out"] == kept[1]["expand"] == kept[1]["side"] == kept[3]["side"]
    assert len(kept[1]["reduce"]) < 6 and len(kept[0]["out"]) < 8  # pruning removed channels of both sets
    assert [pruned.config.blocks[i].mid for i in (1, 3)] == [len(kept[1]["reduce"]), len(kept[3]["reduce"])]
    x = example(over)
    with torch.no_grad():
        expected = restricted_reference(over, result)(x)
        torch.testing.assert_close(pruned(x), expected, rtol=1e-5, atol=1e-5)
        assert count_macs(pruned, x[:1]) < count_macs(over, x[:1])

        folded = fold_batchnorms(pruned)
        assert not any(isinstance(m, NORMS) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(export_model(pruned, fold=True).module()(x[:1]), expected[:1], rtol=1e-4, atol=1e-5)

    assert smallest_macs(over.config, round_to=2) < count_macs(pruned, x[:1])

    trained = randomise(MDPNet(base))
    loaded = load_plain_weights(MDPNet(over.config), trained.state_dict())
    for source, into in zip(trained.blocks[1].channel_layout().units, loaded.blocks[1].channel_layout().units):
        assert torch.equal(into.conv.weight, source.conv.weight)
        for batchnorm in into.batchnorms:  # every branch's copy of the one BatchNorm
            assert all(torch.equal(a, b) for a, b in zip(batchnorm.state_dict().values(),
                                                         source.batchnorm(0).state_dict().values()))
