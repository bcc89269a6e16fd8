"""Saving, loading and exporting MDP networks without the pruning code.

A network is two files: ``NAME.pt``, its state_dict (tensors only, read with ``weights_only=True``), and
``NAME.json``, the :class:`~pyaccel_nas.mdp.arch.ArchConfig` that rebuilds it (validated on load). A
pruned network is an ordinary ``MDPNet`` of plain convolutions, BatchNorms, pooling and upsampling, so it
exports with ``torch.export`` and scripts with TorchScript.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pyaccel_nas.mdp.arch import ArchConfig
from pyaccel_nas.mdp.layers import MDPNet


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


def export_model(model: MDPNet, batch: int = 1) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` in eval mode for inputs of its config's size and ``batch`` samples."""
    model.eval()
    return torch.export.export(model, (example_input(model.config, batch),))
