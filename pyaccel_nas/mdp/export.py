"""Saving, loading and exporting MDP networks without the pruning code.

A network is two files: ``NAME.pt``, its state_dict (tensors only, read with ``weights_only=True``) with
the digest of its config, and ``NAME.json``, the :class:`~pyaccel_nas.mdp.arch.ArchConfig` that rebuilds
it (validated on load). The digest ties the two together, which shapes alone do not: networks that differ
only in a block's resolution factor have the same state_dict layout. A pruned network is an ordinary
``MDPNet`` of plain convolutions, BatchNorms, pooling and upsampling (a residual block below full resolution
adds its upsampled output to the shortcut's with the ``pyaccel_nas::multires_sum`` op: its exported program
runs where pyaccel_nas is imported), so it exports with ``torch.export`` and traces with ``torch.jit.trace``
(``torch.jit.script`` refuses its indexed ModuleLists).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pyaccel_nas.exec.files import atomic_writer
from pyaccel_nas.mdp.arch import ArchConfig
from pyaccel_nas.mdp.layers import MDPNet, PrunableBlock
from pyaccel_nas.validation import load_tensors


WEIGHTS_FORMAT = "pyaccel_nas.mdp.weights/1"


def config_path(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def config_digest(config: ArchConfig) -> str:
    """The sha256 of ``config``'s canonical JSON: the same for any formatting of its file."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()


def save_model(model: MDPNet, path: str | Path) -> Path:
    """Writes ``path`` (the state_dict and the digest of the config) and ``path`` with suffix ``.json`` (the
    config); returns ``path``. A crash between the two leaves a pair that :func:`load_model` refuses."""
    path = Path(path)
    model.config.save(config_path(path))
    weights = {"format": WEIGHTS_FORMAT, "config_sha256": config_digest(model.config),
               "state_dict": model.state_dict()}
    with atomic_writer(path) as f:
        torch.save(weights, f)
    return path


def load_model(path: str | Path) -> MDPNet:
    """The network saved by :func:`save_model` at ``path``, in eval mode.

    The config beside ``path`` must be the one saved with it (ValueError otherwise). Weights saved before the
    digest was recorded, a bare state_dict, are refused too: nothing tells whether the config beside them is
    theirs. Whoever knows it is can adopt them: ``model = MDPNet(ArchConfig.load(json_path));
    model.load_state_dict(torch.load(path, weights_only=True)); save_model(model, path)``.
    """
    path = Path(path)
    config = ArchConfig.load(config_path(path))
    weights = load_tensors(path)
    if not isinstance(weights, dict) or weights.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not MDP weights of format {WEIGHTS_FORMAT} (weights saved without the digest "
                         f"of their config are refused: load_model's docstring says how to adopt them)")
    if weights.get("config_sha256") != config_digest(config):
        raise ValueError(f"{path} and {config_path(path)} do not belong together: the weights were saved with "
                         f"another architecture config")
    model = MDPNet(config)
    try:
        model.load_state_dict(weights.get("state_dict"))
    except (RuntimeError, TypeError) as err:  # the details, a line per tensor, stay in the chained exception
        raise ValueError(f"{path}: the weights do not fit the architecture in {config_path(path)}") from err
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
        fold_block_batchnorms(block)
    return folded


def fold_block_batchnorms(block: PrunableBlock) -> PrunableBlock:
    """Folds, in place, each BatchNorm of a single-resolution eval-mode ``block`` into the convolution before
    it (which gains a bias); returns ``block``."""
    names = {module: name for name, module in block.named_modules()}
    for unit in block.channel_layout().units:
        batchnorm = unit.batchnorm(0)
        block.set_submodule(names[unit.conv], fuse_conv_bn_eval(unit.conv, batchnorm), strict=True)
        block.set_submodule(names[batchnorm], nn.Identity(), strict=True)
    return block


def export_model(model: MDPNet, batch: int = 1, *, fold: bool = False) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` in eval mode for inputs of its config's size and ``batch`` samples;
    with ``fold``, of :func:`fold_batchnorms` of it."""
    model = fold_batchnorms(model) if fold else model.eval()
    return torch.export.export(model, (example_input(model.config, batch),))
