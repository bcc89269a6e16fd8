"""MDP: multi-dimensional pruning of channels and spatial / spatio-temporal resolution (Guo et al., CVPR 2020).

    from pyaccel_nas.mdp import MDPNet, branch_costs, model_config, over_parameterise, prune, save_model, load_model

    import torch
    from pyaccel_nas.nn import count_macs

    base = model_config("resnet20", in_channels=1, num_classes=10, input_size=(28, 28))
    net = MDPNet(over_parameterise(base))      # resolution branches + channel gates on every block
    x = torch.zeros(1, 1, 28, 28)
    macs = count_macs(MDPNet(base), x)         # the plain network's
    costs = branch_costs(net, x, macs)         # each branch's MACs, a fraction of the plain network's
    # ... train with loss = ce + mdp_regulariser(alpha, eta, beta, costs)(net) ...
    result = prune(net.eval(), mac_budget=macs / 2, round_to=4)   # a physically smaller MDPNet
    save_model(result.model, "pruned.pt")      # pruned.pt (weights) + pruned.json (architecture)

Modules: :mod:`~pyaccel_nas.mdp.arch` (the JSON architecture), :mod:`~pyaccel_nas.mdp.layers` (blocks),
:mod:`~pyaccel_nas.mdp.models` (built-in bases),
:mod:`~pyaccel_nas.mdp.convert` (a user's CNN, traced with torch.fx), :mod:`~pyaccel_nas.mdp.losses`,
:mod:`~pyaccel_nas.mdp.prune`, :mod:`~pyaccel_nas.mdp.export`, :mod:`~pyaccel_nas.mdp.pipeline` (the CLI's run).
"""

from pyaccel_nas.mdp.arch import ArchConfig, Block
from pyaccel_nas.mdp.convert import ConversionError, config_from_module
from pyaccel_nas.mdp.export import export_model, load_model, save_model
from pyaccel_nas.mdp.layers import MDPNet
from pyaccel_nas.mdp.losses import branch_costs, branch_entropy, expected_cost, gate_l1, mdp_regulariser
from pyaccel_nas.mdp.models import (
    MODELS,
    load_plain_weights,
    model_config,
    over_parameterise,
    plain,
)
from pyaccel_nas.mdp.prune import PruneResult, prune

__all__ = [
    "MODELS",
    "ArchConfig",
    "Block",
    "MDPNet",
    "PruneResult",
    "branch_costs",
    "branch_entropy",
    "ConversionError",
    "config_from_module",
    "expected_cost",
    "export_model",
    "gate_l1",
    "load_model",
    "load_plain_weights",
    "mdp_regulariser",
    "model_config",
    "over_parameterise",
    "plain",
    "prune",
    "save_model",
]
