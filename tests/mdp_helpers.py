"""Shared helpers of the MDP tests: small networks with random (never trivial) gates, importances and BN."""

from __future__ import annotations

import copy

import torch
from torch import nn

from pyaccel_nas.mdp import ArchConfig, Block, MDPNet, model_config, over_parameterise
from pyaccel_nas.mdp.prune import PruneResult, prunable_units
from pyaccel_nas.nn import ChannelGate, MultiResSum

# small inputs keep the tests fast; every size still admits more than one resolution factor somewhere
SHAPES = {"resnet20": (16, 16), "vgg": (16, 16), "c3d": (4, 16, 16), "i3d": (4, 16, 16), "mixed": (16, 16)}


def _block(kind: str, **fields) -> Block:
    return Block(kind, stride=fields.pop("stride", (1, 1)), factors=((1, 1),), **fields)


def mixed_config(in_channels: int = 2, num_classes: int = 7) -> ArchConfig:
    """A small plain network of the block types torchvision's ResNet-50 and MobileNetV2 convert to: a ReLU6
    conv stem, a padded max pool, bottlenecks with projection and identity shortcuts, and inverted residuals
    without expansion, with a shortcut and without one; dropout before the classifier."""
    return ArchConfig("mixed", in_channels, num_classes, SHAPES["mixed"], (
        _block("conv", out=8, kernel=(3, 3), activation="relu6"),
        Block("maxpool", kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
        _block("bottleneck", out=16, mid=4, mid2=6, projection=True),
        _block("bottleneck", out=16, mid=4, mid2=4),
        _block("inverted_residual", out=8, mid=16, kernel=(3, 3), expand=False, stride=(2, 2)),
        _block("inverted_residual", out=8, mid=24, kernel=(3, 3), shortcut=True),
        _block("inverted_residual", out=12, mid=24, kernel=(5, 5)),
    ), dropout=0.2)


def base_config(name: str, in_channels: int = 2) -> ArchConfig:
    """The plain network ``name`` (a built-in model, or "mixed") at its test size, 7 classes."""
    if name == "mixed":
        return mixed_config(in_channels)
    return model_config(name, in_channels=in_channels, num_classes=7, input_size=SHAPES[name])


def randomised(name: str, seed: int = 0, in_channels: int = 2) -> MDPNet:
    """The over-parameterised ``name`` with random gates in [0, 1), branch logits and BN statistics."""
    torch.manual_seed(seed)
    return randomise(MDPNet(over_parameterise(base_config(name, in_channels))))


def randomise(net: MDPNet) -> MDPNet:
    """``net`` with random gates in [0, 1), branch logits and BN statistics, in eval mode."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ChannelGate):
                m.gate.copy_(torch.rand_like(m.gate))
            elif isinstance(m, MultiResSum):
                m.logits.copy_(torch.randn_like(m.logits))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
    return net.eval()


def restricted_reference(net: MDPNet, result: PruneResult) -> MDPNet:
    """The over-parameterised ``net`` with each block's other branches weighted 0 and the removed channels'
    gates set to 0: what the pruned network must compute."""
    ref = copy.deepcopy(net)
    units = prunable_units(ref)
    with torch.no_grad():
        for i, block in ref.prunable_blocks():
            if block.mix is not None:
                logits = torch.full_like(block.mix.logits, float("-inf"))
                logits[result.branches[i]] = 0
                block.mix.logits.copy_(logits)
            for name, kept in result.kept[i].items():
                gate = units[i, name].gate.gate
                mask = torch.zeros_like(gate)
                mask[kept] = 1
                gate.mul_(mask)
    return ref.eval()


def example(net: MDPNet, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, net.config.in_channels, *net.config.input_size)
