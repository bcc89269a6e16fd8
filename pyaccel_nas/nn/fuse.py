"""fuse_modules: rewrite ReLU -> depthwise conv -> 1x1 conv sequences of a model into one fused op each, and
swap its BatchNorms and pooling layers for subclasses that run the fused ops.

Only plain building blocks are rewritten, where the rewrite provably keeps the outputs: exactly
``nn.ReLU`` and ``nn.Conv2d`` (subclasses may change the forward), adjacent in a ``nn.Sequential`` whose
forward is Sequential's own, with no hooks on the absorbed modules (fusing would drop them).

A fused model must stay a drop-in for the user's own code, checkpoints included: the depthwise conv's
place takes a :class:`FusedSepConv2d` and the pointwise conv's a :class:`FusedPointwise`, each holding the
replaced conv's own Parameters under the conv's names (``weight``, ``bias``). The state_dict is the
unfused model's, key for key, so a checkpoint loads strictly into either, whether fused before or after.
A BatchNorm or pooling layer becomes the subclass of its class in :mod:`pyaccel_nas.nn.batch_norm` or
:mod:`pyaccel_nas.nn.pool`, a BatchNorm holding the same Parameters and buffers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from pyaccel_nas.nn.batch_norm import FUSED_BATCHNORM
from pyaccel_nas.nn.darts import DilConv, SepConv
from pyaccel_nas.nn.fusable import FusableModule
from pyaccel_nas.nn.pool import FUSED_POOL

logger = logging.getLogger(__name__)

# They already run fused ops on the weights of their own Sequential, which must stay as it is.
_ALREADY_FUSED = (SepConv, DilConv)


@dataclass(frozen=True)
class _Site:
    """A fusable run in ``seq``: depthwise conv at ``index``, 1x1 conv after it, ReLU before it if ``relu``."""

    name: str  # qualified name of the depthwise conv, where the FusedSepConv2d goes
    seq: nn.Sequential
    index: int
    relu: bool


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _int_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The conv's padding as ints; None for "same", whose split depends on the kernel (not fused)."""
    if conv.padding == "valid":
        return (0, 0)
    return None if isinstance(conv.padding, str) else conv.padding


def _is_depthwise(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.groups == m.in_channels == m.out_channels
        and m.padding_mode == "zeros"
        and _int_padding(m) is not None
        and not _has_hooks(m)
    )


def _is_pointwise_after(m: nn.Module, depthwise: nn.Conv2d) -> bool:
    # padding_mode does not matter: with zero padding no mode pads anything.
    return (
        type(m) is nn.Conv2d
        and m.in_channels == depthwise.out_channels
        and m.groups == 1
        and m.kernel_size == (1, 1)
        and m.stride == (1, 1)
        and m.dilation == (1, 1)
        and _int_padding(m) == (0, 0)
        and m.weight.dtype == depthwise.weight.dtype
        and m.weight.device == depthwise.weight.device
        and not _has_hooks(m)
    )


def _is_relu(m: nn.Module) -> bool:
    return type(m) is nn.ReLU and not _has_hooks(m)


def _sites_in(seq: nn.Sequential, prefix: str) -> list[_Site]:
    names, mods = list(seq._modules.keys()), list(seq._modules.values())
    sites, i = [], 0
    while i + 1 < len(mods):
        if _is_depthwise(mods[i]) and _is_pointwise_after(mods[i + 1], mods[i]):
            sites.append(_Site(prefix + names[i], seq, i, relu=i > 0 and _is_relu(mods[i - 1])))
            i += 2
        else:
            i += 1
    return sites


def _find(module: nn.Module, prefix: str, seen: set[int], sites: list[_Site]) -> None:
    if id(module) in seen or isinstance(module, _ALREADY_FUSED):
        return
    seen.add(id(module))  # a module shared by several parents is fused once
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        sites.extend(_sites_in(module, prefix))
    for name, child in module.named_children():
        _find(child, f"{prefix}{name}.", seen, sites)


def _sites(model: nn.Module) -> list[_Site]:
    sites: list[_Site] = []
    _find(model, "", set(), sites)
    return sites


# The modules swapped for their pyaccel_nas.nn subclass: exact class -> the converter making the subclass.
_SWAPS = {**FUSED_BATCHNORM, **FUSED_POOL}


def _swap_modules(model: nn.Module) -> list[str]:
    """Puts the fused subclass in the place of each module of a class in _SWAPS (exactly that class) without
    hooks below ``model`` (a module shared by several parents gets one replacement, still shared); returns
    their qualified names."""
    replacements: dict[int, nn.Module] = {}
    names = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in parent._modules.items():
            if child is None or type(child) not in _SWAPS or _has_hooks(child):
                continue
            if id(child) not in replacements:
                replacements[id(child)] = _SWAPS[type(child)](child)
                names.append(f"{parent_name}.{name}" if parent_name else name)
            parent._modules[name] = replacements[id(child)]
    return names


class FusedPointwise(nn.Module):
    """In the pointwise conv's place after :func:`fuse_modules`: holds its ``weight`` (and ``bias``) under the
    conv's names and passes its input through; the :class:`FusedSepConv2d` before it has applied them."""

    def __init__(self, pointwise: nn.Conv2d) -> None:
        super().__init__()
        self.weight = pointwise.weight
        self.register_parameter("bias", pointwise.bias)
        self.out_channels = pointwise.out_channels
        self.train(pointwise.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.out_channels}, applied by the FusedSepConv2d before it"


class FusedSepConv2d(FusableModule):
    """In the depthwise conv's place after :func:`fuse_modules`: ``[ReLU ->] depthwise -> pointwise`` as one
    ``sep_conv2d``. Its ``weight`` (and ``bias``) are the depthwise conv's, under its names; the pointwise
    conv's are read from ``pointwise``, the :class:`FusedPointwise` in that conv's place (a reference, not a
    child: its parameters save under its own name). A depthwise bias goes through the pointwise conv as
    part of the pointwise bias, ``b_pw + W_pw @ b_dw``, so both biases keep training as they did."""

    def __init__(self, depthwise: nn.Conv2d, pointwise: FusedPointwise, pre_relu: bool) -> None:
        super().__init__()
        self.weight = depthwise.weight
        self.register_parameter("bias", depthwise.bias)
        self.in_channels, self.out_channels = depthwise.in_channels, pointwise.out_channels
        self.kernel_size, self.stride, self.dilation = depthwise.kernel_size, depthwise.stride, depthwise.dilation
        self.padding = _int_padding(depthwise)
        self.pre_relu = pre_relu
        object.__setattr__(self, "pointwise", pointwise)  # bypasses nn.Module's child registration
        self.train(depthwise.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pointwise = self.pointwise
        bias = pointwise.bias
        if self.bias is not None:
            moved = pointwise.weight.flatten(1) @ self.bias
            bias = moved if bias is None else bias + moved
        return self.ops.sep_conv2d(x, self.weight, pointwise.weight, bias, stride=self.stride, padding=self.padding,
                                   dilation=self.dilation, pre_relu=self.pre_relu)

    def _repr_fields(self) -> list[str]:
        return [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}", f"stride={self.stride}",
                f"padding={self.padding}", f"dilation={self.dilation}", f"pre_relu={self.pre_relu}"]


def find_fusable(model: nn.Module) -> list[str]:
    """Qualified names of the depthwise convs :func:`fuse_modules` would fuse (where a FusedSepConv2d goes)."""
    return [site.name for site in _sites(model)]


def fuse_modules(model: nn.Module) -> nn.Module:
    """Rewrites, in place, each ``[nn.ReLU ->] depthwise nn.Conv2d -> 1x1 nn.Conv2d`` run inside any
    ``nn.Sequential`` of ``model`` (recursively) into one fused ``sep_conv2d``; returns ``model``.

    What is fused:
      * depthwise: ``groups == in_channels == out_channels``, zero padding given as ints (or "valid"; "same"
        is skipped), any kernel, stride, padding and dilation, with or without bias;
      * pointwise, right after it: 1x1, stride 1, padding 0, dilation 1, groups 1, with or without bias;
      * a ``nn.ReLU`` right before the depthwise conv is absorbed (``pre_relu=True``); without one,
        ``pre_relu=False``.

    Every ``nn.BatchNorm1d/2d/3d``, ``nn.MaxPool2d`` and ``nn.AvgPool2d`` without hooks (exactly those
    classes) becomes the :mod:`pyaccel_nas.nn` class of the same name, a subclass running the fused
    ``batch_norm`` (in training) or ``pool2d`` op; a BatchNorm's replacement holds its Parameters and
    buffers.

    The depthwise conv becomes a :class:`FusedSepConv2d` that runs the whole sequence, the pointwise conv a
    :class:`FusedPointwise`, the absorbed ReLU an ``nn.Identity``: every module keeps its index, every
    Parameter object stays (optimizers and tied weights still see them) and the state_dict keeps every key
    and value, so checkpoints load strictly into the fused and the unfused model alike. DARTS
    :class:`SepConv`/:class:`DilConv` of this package already run fused and are left alone. Calling this
    again fuses nothing new.

    An ``nn.ReLU(inplace=True)`` is absorbed too: the fused op computes the same output but no longer
    overwrites its input, which matters only to a model that reads that input again expecting it rectified.

    The number and names of the fused sequences, and the number of swapped modules, are logged at INFO
    level (logger ``pyaccel_nas.nn.fuse``); :func:`find_fusable` lists the sequences without changing the
    model.
    """
    sites = _sites(model)
    for site in sites:
        seq, i = site.seq, site.index
        pointwise = FusedPointwise(seq[i + 1])
        seq[i] = FusedSepConv2d(seq[i], pointwise, pre_relu=site.relu)
        seq[i + 1] = pointwise
        if site.relu:
            seq[i - 1] = nn.Identity().train(seq[i - 1].training)
    swapped = _swap_modules(model)
    logger.info("fuse_modules: fused %d sequence(s): %s; swapped %d BatchNorm and pooling module(s)", len(sites),
                [s.name for s in sites], len(swapped))
    return model
