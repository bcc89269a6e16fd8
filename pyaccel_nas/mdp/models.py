"""The base networks ``prune --model`` offers, over-parameterising a network, and loading plain weights into it.

    config = model_config("resnet20", in_channels=1, num_classes=10, input_size=(28, 28))
    net = MDPNet(over_parameterise(config))     # K resolution branches and channel gates per block

    config, state = config_from_module(users_model, input_size=(32, 32))   # a trained CNN (mdp.convert)
    net = load_plain_weights(MDPNet(over_parameterise(config)), state)

- ``resnet20`` / ``resnet56``: CIFAR-style ResNets (He et al., 2016): a 3x3 stem and three stages of
  (depth - 2) / 6 basic blocks with 16, 32, 64 channels (the later stages halve the resolution with a
  projection shortcut: a 1x1 conv, which keeps the stages' channels prunable independently).
- ``vgg``: a VGG-style 2-D net, 32-32-M-64-64-M-128-128 convs with max pooling ``M``.
- ``c3d``: a C3D-style 3-D net (Tran et al., 2015) scaled for small clips: 3x3x3 convs 16-M(1,2,2)-32-
  M(2,2,2)-64-64-M(2,2,2)-128; global average pooling replaces C3D's large fully connected layers.
- ``i3d``: an I3D-style 3-D net (Carreira & Zisserman, 2017) scaled for small clips: a 3x3x3 stride-(1, 2, 2)
  stem, 1x1x1 and 3x3x3 convs, a max pool, then inflated Inception blocks (concatenated columns, see
  :class:`~pyaccel_nas.mdp.arch.Block`) 2 - pool - 2 - pool - 1, with I3D's column proportions at a quarter
  of its widths.
- ``resnet18``, ``resnet50``, ``mobilenet_v2``: torchvision's ImageNet networks, as torch.fx traces them
  (:mod:`~pyaccel_nas.mdp.convert`; torchvision must be installed): a 7x7 stride-2 stem and a max pool, then
  basic blocks / bottlenecks (ResNets); a stride-2 stem and inverted residuals (MobileNetV2). They
  downsample by 32: give them inputs of 32 pixels or more (``prune --image-size``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import torch

from pyaccel_nas.mdp.arch import ArchConfig, Block, block_input_sizes, factor_fits, inception_out
from pyaccel_nas.mdp.convert import TORCHVISION_MODELS, config_from_module, torchvision_model
from pyaccel_nas.mdp.layers import MDPNet

DEFAULT_FACTORS = {
    2: ((1, 1), (2, 2), (4, 4)),
    3: ((1, 1, 1), (1, 2, 2), (2, 2, 2)),
}


def _conv(out: int, dims: int, stride: int | tuple[int, ...] = 1) -> Block:
    stride = stride if isinstance(stride, tuple) else (stride,) * dims
    return Block("conv", out=out, kernel=(3,) * dims, stride=stride, factors=((1,) * dims,))


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


def _i3d(dims: int) -> list[Block]:
    def inception(columns: tuple[int, ...]) -> Block:
        return Block("inception", out=inception_out(columns), columns=columns, stride=(1,) * dims,
                     factors=((1,) * dims,))

    def pool(kernel: int, stride: tuple[int, ...]) -> Block:
        return Block("maxpool", kernel=(kernel,) * dims, stride=stride, padding=(1,) * dims)

    return [_conv(16, dims, stride=(1, 2, 2)), Block("conv", out=16, kernel=(1,) * dims, stride=(1,) * dims,
                                                      factors=((1,) * dims,)), _conv(32, dims),
            pool(3, (1, 2, 2)),
            inception((16, 24, 32, 4, 8, 8)), inception((32, 32, 48, 8, 24, 16)),  # I3D's Mixed_3b, 3c / 4
            pool(3, (2, 2, 2)),
            inception((48, 24, 52, 4, 12, 16)), inception((40, 28, 56, 6, 16, 16)),  # Mixed_4b, 4c / 4
            pool(3, (2, 2, 2)),
            inception((64, 40, 80, 8, 32, 32))]  # Mixed_5b / 4


def _plain(spec: Sequence[int | tuple[int, ...]]) -> Callable[[int], list[Block]]:
    """Convs (an int: channels) and max pools (a tuple: the kernel)."""
    return lambda dims: [Block("maxpool", kernel=s) if isinstance(s, tuple) else _conv(s, dims) for s in spec]


@functools.cache
def _torchvision_blocks(name: str) -> tuple[tuple[Block, ...], float]:
    """The blocks and the classifier's dropout of torchvision's ``name``, converted once per process."""
    config, _ = config_from_module(torchvision_model(name, num_classes=10), (224, 224), name)
    return config.blocks, config.dropout


def _torchvision(name: str) -> Callable[[int], list[Block]]:
    return lambda dims: list(_torchvision_blocks(name)[0])


# name -> (spatial dims, blocks)
MODELS: dict[str, tuple[int, Callable[[int], list[Block]]]] = {
    "resnet20": (2, _resnet(20)),
    "resnet56": (2, _resnet(56)),
    "vgg": (2, _plain([32, 32, (2, 2), 64, 64, (2, 2), 128, 128])),
    "c3d": (3, _plain([16, (1, 2, 2), 32, (2, 2, 2), 64, 64, (2, 2, 2), 128])),
    "i3d": (3, _i3d),
    **{name: (2, _torchvision(name)) for name in TORCHVISION_MODELS},
}


def model_config(name: str, *, in_channels: int, num_classes: int, input_size: Sequence[int]) -> ArchConfig:
    """The plain (unpruned, ungated, full-resolution) base network ``name`` for inputs of ``input_size``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    dims, blocks = MODELS[name]
    if len(input_size) != dims:
        raise ValueError(f"model {name!r} is {dims}-D: `input_size` must have {dims} entries, got {tuple(input_size)}")
    dropout = _torchvision_blocks(name)[1] if name in TORCHVISION_MODELS else 0.0
    config = ArchConfig(name, in_channels, num_classes, tuple(input_size), tuple(blocks(dims)), dropout)
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
