"""Built-in base networks for MDP, and the conversion of a user's plain ``nn.Sequential`` CNN.

    config = model_config("resnet20", in_channels=1, num_classes=10, input_size=(28, 28))
    net = MDPNet(over_parameterise(config))     # K resolution branches and channel gates per block

    config, state = config_from_sequential(users_model, input_size=(32, 32))   # a trained nn.Sequential
    net = load_plain_weights(MDPNet(over_parameterise(config)), state)

- ``resnet20`` / ``resnet56``: CIFAR-style ResNets (He et al., 2016): a 3x3 stem and three stages of
  (depth - 2) / 6 basic blocks with 16, 32, 64 channels (the later stages halve the resolution with a
  projection shortcut: a 1x1 conv, which keeps the stages' channels prunable independently).
- ``vgg``: a VGG-style 2-D net, 32-32-M-64-64-M-128-128 convs with max pooling ``M``.
- ``c3d``: a C3D-style 3-D net (Tran et al., 2015) scaled for small clips: 3x3x3 convs 16-M(1,2,2)-32-
  M(2,2,2)-64-64-M(2,2,2)-128; global average pooling replaces C3D's large fully connected layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pyaccel_nas.mdp.arch import ArchConfig, Block, block_input_sizes, factor_fits
from pyaccel_nas.mdp.layers import MDPNet

DEFAULT_FACTORS = {
    2: ((1, 1), (2, 2), (4, 4)),
    3: ((1, 1, 1), (1, 2, 2), (2, 2, 2)),
}


def _conv(out: int, dims: int, stride: int = 1) -> Block:
    return Block("conv", out=out, kernel=(3,) * dims, stride=(stride,) * dims, factors=((1,) * dims,))


def _resnet(depth: int) -> Callable[[int], list[Block]]:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
    per_stage = (depth - 2) // 6

    def blocks(dims: int) -> list[Block]:
        layers = [_conv(16, dims)]
        for stage, width in enumerate((16, 32, 64)):
            for i in range(per_stage):
                downsample = stage > 0 and i == 0
                layers.append(Block("residual", out=width, mid=width, stride=((2 if downsample else 1),) * dims,
                                    projection=downsample, factors=((1,) * dims,)))
        return layers

    return blocks


def _plain(spec: Sequence[int | tuple[int, ...]]) -> Callable[[int], list[Block]]:
    """Convs (an int: channels) and max pools (a tuple: the kernel)."""
    return lambda dims: [Block("maxpool", kernel=s) if isinstance(s, tuple) else _conv(s, dims) for s in spec]


# name -> (spatial dims, blocks)
MODELS: dict[str, tuple[int, Callable[[int], list[Block]]]] = {
    "resnet20": (2, _resnet(20)),
    "resnet56": (2, _resnet(56)),
    "vgg": (2, _plain([32, 32, (2, 2), 64, 64, (2, 2), 128, 128])),
    "c3d": (3, _plain([16, (1, 2, 2), 32, (2, 2, 2), 64, 64, (2, 2, 2), 128])),
}


def model_config(name: str, *, in_channels: int, num_classes: int, input_size: Sequence[int]) -> ArchConfig:
    """The plain (unpruned, ungated, full-resolution) base network ``name`` for inputs of ``input_size``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    dims, blocks = MODELS[name]
    if len(input_size) != dims:
        raise ValueError(f"model {name!r} is {dims}-D: `input_size` must have {dims} entries, got {tuple(input_size)}")
    config = ArchConfig(name, in_channels, num_classes, tuple(input_size), tuple(blocks(dims)))
    block_input_sizes(config)
    return config


def over_parameterise(config: ArchConfig, factors: Sequence[Sequence[int]] | None = None) -> ArchConfig:
    """``config`` with channel gates and the resolution ``factors`` (default: :data:`DEFAULT_FACTORS`) on
    every prunable block; a block keeps only the factors its sizes allow (see :func:`factor_fits`)."""
    candidates = [tuple(f) for f in (factors or DEFAULT_FACTORS[config.dims])]
    identity = (1,) * config.dims
    if identity in candidates:
        candidates.remove(identity)
    sizes = block_input_sizes(config)
    blocks = [b if not b.prunable else dataclasses.replace(
        b, gated=True, factors=(identity, *[f for f in candidates if factor_fits(size, b.stride, f)]))
        for b, size in zip(config.blocks, sizes)]
    return config.replace_blocks(blocks)


def plain(config: ArchConfig) -> ArchConfig:
    """``config`` without gates and resolution branches: the network to compare a pruned one against."""
    identity = ((1,) * config.dims,)
    return config.replace_blocks([dataclasses.replace(b, gated=False, factors=identity) if b.prunable else b
                                  for b in config.blocks])


def load_plain_weights(net: MDPNet, state: dict[str, torch.Tensor]) -> MDPNet:
    """Loads the state_dict of the plain network into the over-parameterised ``net`` built from the same
    base: the shared convolutions and the classifier as they are, each BatchNorm into every branch's copy
    of it; gates and branch importances keep their initial values (1 and equal). Returns ``net``."""
    own = net.state_dict()
    sources = _first_branch_keys(net)
    expanded = {key: state[sources.get(key, key)] for key in own if sources.get(key, key) in state}
    unused = set(state) - {sources.get(key, key) for key in expanded}
    if unused:
        raise ValueError(f"load_plain_weights: weights of no layer of the network: {sorted(unused)[:5]}")
    missing = [k for k in own if k not in expanded and not k.endswith((".gate", ".logits"))]
    if missing:
        raise ValueError(f"load_plain_weights: no weights for {missing[:5]}")
    net.load_state_dict(expanded, strict=False)
    return net


def _first_branch_keys(net: MDPNet) -> dict[str, str]:
    """The state_dict key of each BatchNorm entry of a resolution branch other than the first, mapped to that
    of the first branch's copy: the key the plain network, which has one branch, holds it under."""
    names = {module: name for name, module in net.named_modules()}
    sources = {}
    for _, block in net.prunable_blocks():
        for unit in block.channel_layout().units:
            first = names[unit.batchnorms[0]]
            for batchnorm in unit.batchnorms[1:]:
                sources.update({f"{names[batchnorm]}.{key}": f"{first}.{key}" for key in batchnorm.state_dict()})
    return sources


# --- a user's model ------------------------------------------------------------------------------------

_CONVS = (nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)
_POOLS = (nn.MaxPool2d, nn.MaxPool3d)
_GLOBAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def config_from_sequential(model: nn.Sequential, input_size: Sequence[int], name: str = "user"
                           ) -> tuple[ArchConfig, dict[str, torch.Tensor]]:
    """The plain MDP config of a user's ``nn.Sequential`` CNN and its weights as an :class:`MDPNet`
    state_dict, for a model of the form ``(Conv BatchNorm ReLU | MaxPool)*, AdaptiveAvgPool(1), Flatten,
    Linear``: convs with odd kernels, padding k // 2, no groups or dilation. Anything else raises a
    ValueError naming the layer."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"config_from_sequential: expects an nn.Sequential, got {type(model).__name__}")
    dims = len(input_size)
    layers = list(model.named_children())
    blocks: list[Block] = []
    trained: list[tuple[nn.Module, nn.Module]] = []  # (conv, BatchNorm) of each conv block
    in_channels = None
    i = 0

    def fail(layer_name: str, module: nn.Module, why: str) -> ValueError:
        return ValueError(f"MDP cannot handle layer {layer_name!r} ({type(module).__name__}): {why}")

    while i < len(layers):
        layer_name, module = layers[i]
        if isinstance(module, _CONVS) and module.weight.dim() - 2 == dims:
            if module.groups != 1 or any(d != 1 for d in module.dilation) or module.padding_mode != "zeros" or any(
                    k % 2 == 0 or p != k // 2 for k, p in zip(module.kernel_size, module.padding)):
                raise fail(layer_name, module, "only convs with odd kernels, padding k // 2, groups=1, dilation=1")
            in_channels = in_channels or module.in_channels
            blocks.append(Block("conv", out=module.out_channels, kernel=module.kernel_size, stride=module.stride,
                                factors=((1,) * dims,)))
            i += 1
            norm = layers[i][1] if i < len(layers) else None
            if not isinstance(norm, _NORMS) or not norm.affine or not norm.track_running_stats:
                raise fail(layer_name, module, "a conv must be followed by an affine BatchNorm with running "
                                               "statistics (the channel gates act on its output)")
            i += 1
            if module.bias is not None:  # conv bias before BN: fold it into BN's running mean
                norm = _absorb_bias(norm, module.bias.detach())
            trained.append((module, norm))
            if i >= len(layers) or not isinstance(layers[i][1], nn.ReLU):
                raise fail(layer_name, module, "a conv and its BatchNorm must be followed by ReLU")
            i += 1
        elif isinstance(module, _POOLS):
            kernel = tuple(module.kernel_size) if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * dims
            stride = tuple(module.stride) if isinstance(module.stride, tuple) else (module.stride,) * dims
            if kernel != stride or module.padding not in (0, (0,) * dims) or module.ceil_mode:
                raise fail(layer_name, module, "only max pools with stride = kernel, no padding")
            blocks.append(Block("maxpool", kernel=kernel))
            i += 1
        else:
            break
    tail = [m for _, m in layers[i:]]
    if (len(tail) != 3 or not isinstance(tail[0], _GLOBAL) or tail[0].output_size not in (1, (1,) * dims)
            or not isinstance(tail[1], nn.Flatten) or not isinstance(tail[2], nn.Linear)):
        layer_name, module = layers[i] if i < len(layers) else ("<end>", model)
        raise fail(layer_name, module, "expected (Conv BatchNorm ReLU | MaxPool)* then AdaptiveAvgPool(1), "
                                       "Flatten, Linear")
    if not blocks or in_channels is None:
        raise ValueError("config_from_sequential: the model has no convolution")
    classifier = tail[2]
    if classifier.in_features != _channels_out(blocks):
        raise fail(layers[-1][0], classifier, f"takes {classifier.in_features} features, the convs give "
                                              f"{_channels_out(blocks)}")
    config = ArchConfig(name, in_channels, classifier.out_features, tuple(input_size), tuple(blocks))
    block_input_sizes(config)
    with torch.device("meta"):  # only its module names are needed
        net = MDPNet(config)
    names = {module: name for name, module in net.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for (_, block), (conv, norm) in zip(net.prunable_blocks(), trained, strict=True):
        (unit,) = block.channel_layout().units  # a conv block is one conv and its BatchNorm
        state[names[unit.conv] + ".weight"] = conv.weight.detach().clone()
        state.update({f"{names[unit.batchnorm(0)]}.{k}": v.detach().clone() for k, v in norm.state_dict().items()})
    state["classifier.weight"] = classifier.weight.detach().clone()
    state["classifier.bias"] = (classifier.bias.detach().clone() if classifier.bias is not None
                                else torch.zeros(classifier.out_features))
    return config, state


def _channels_out(blocks: Sequence[Block]) -> int:
    return [b.out for b in blocks if b.prunable][-1]


def _absorb_bias(norm: nn.Module, bias: torch.Tensor) -> nn.Module:
    """BN(conv(x) + b) == BN'(conv(x)) in eval mode with BN' = BN whose running mean is shifted by -b."""
    shifted = type(norm)(norm.num_features)
    shifted.load_state_dict(norm.state_dict())
    with torch.no_grad():
        shifted.running_mean -= bias
    return shifted
