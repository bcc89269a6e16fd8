"""Saving, loading and exporting MDP networks without the pruning code.

A network is two files: ``NAME.pt``, its state_dict (tensors only, read with ``weights_only=True``), and
``NAME.json``, the :class:`~pyaccel_nas.mdp.arch.ArchConfig` that rebuilds it (validated on load). A
pruned network is an ordinary ``MDPNet`` of plain convolutions, BatchNorms, pooling and upsampling, so it
exports with ``torch.export`` and scripts with TorchScript.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pyaccel_nas.mdp.arch import ArchConfig
from pyaccel_nas.mdp.layers import ConvBlock, MDPNet, ResidualBlock


def config_path(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_model(model: MDPNet, path: str | Path) -> Path:
    """Writes ``path`` (the state_dict) and ``path`` with suffix ``.json`` (the config); returns ``path``."""
    path = Path(path)
    model.config.save(config_path(path))
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # a crash leaves the previous weights or the new ones, never half
    return path


def load_model(path: str | Path) -> MDPNet:
    """The network saved by :func:`save_model` at ``path``, in eval mode."""
    path = Path(path)
    config = ArchConfig.load(config_path(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    model = MDPNet(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit the architecture in {config_path(path)}: {err}") from err
    return model.eval()


def example_input(config: ArchConfig, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, config.in_channels, *config.input_size)


def fold_batchnorms(model: MDPNet) -> MDPNet:
    """An eval-mode copy of a single-resolution (plain or pruned) ``model`` with every BatchNorm folded into
    the convolution before it (which gains a bias), for inference: the same outputs, fewer passes over
    memory. The copy no longer matches its config's state_dict layout: export it, do not save it."""
    if any(block.mix is not None for _, block in model.prunable_blocks()):
        raise ValueError("fold_batchnorms: the model has resolution branches; prune it first")
    folded = copy.deepcopy(model).eval()
    for _, block in folded.prunable_blocks():
        if isinstance(block, ConvBlock):
            block.conv, block.bns[0] = fuse_conv_bn_eval(block.conv, block.bns[0]), nn.Identity()
            continue
        assert isinstance(block, ResidualBlock)
        block.conv1, block.bn1s[0] = fuse_conv_bn_eval(block.conv1, block.bn1s[0]), nn.Identity()
        block.conv2, block.bn2s[0] = fuse_conv_bn_eval(block.conv2, block.bn2s[0]), nn.Identity()
        if isinstance(block.shortcut, nn.Sequential):
            block.shortcut[0], block.shortcut[1] = fuse_conv_bn_eval(block.shortcut[0], block.shortcut[1]), nn.Identity()
    return folded


def export_model(model: MDPNet, batch: int = 1, *, fold: bool = False) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` in eval mode for inputs of its config's size and ``batch`` samples;
    with ``fold``, of :func:`fold_batchnorms` of it."""
    model = fold_batchnorms(model) if fold else model.eval()
    return torch.export.export(model, (example_input(model.config, batch),))
