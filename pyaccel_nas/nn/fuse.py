"""fuse_modules: rewrite ReLU -> depthwise conv -> 1x1 conv sequences of a model into SepConv2d modules.

Only plain building blocks are rewritten, where the rewrite provably keeps the outputs: exactly
``nn.ReLU`` and ``nn.Conv2d`` (subclasses may change the forward), adjacent in a ``nn.Sequential`` whose
forward is Sequential's own, with no hooks on the absorbed modules (fusing would drop them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from pyaccel_nas.nn.darts import DilConv, SepConv
from pyaccel_nas.nn.sep_conv import SepConv2d

logger = logging.getLogger(__name__)

# They already run fused ops on the weights of their own Sequential, which must stay as it is.
_ALREADY_FUSED = (SepConv, DilConv)


@dataclass(frozen=True)
class _Site:
    """A fusable run in ``seq``: depthwise conv at ``index``, 1x1 conv after it, ReLU before it if ``relu``."""

    name: str  # qualified name of the depthwise conv, where the SepConv2d goes
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


def _folded_bias(depthwise: nn.Conv2d, pointwise: nn.Conv2d) -> nn.Parameter | None:
    """The pointwise bias with the depthwise bias moved through the pointwise conv: b_pw + W_pw @ b_dw."""
    if depthwise.bias is None:
        return pointwise.bias
    with torch.no_grad():
        folded = pointwise.weight.flatten(1) @ depthwise.bias
        if pointwise.bias is not None:
            folded += pointwise.bias
    trainable = depthwise.bias.requires_grad or (pointwise.bias is not None and pointwise.bias.requires_grad)
    return nn.Parameter(folded, requires_grad=trainable)


def _sep_conv2d(depthwise: nn.Conv2d, pointwise: nn.Conv2d, pre_relu: bool) -> SepConv2d:
    """A SepConv2d holding the convolutions' own weight Parameters (and their bias, folded)."""
    bias = _folded_bias(depthwise, pointwise)
    fused = SepConv2d(
        depthwise.in_channels,
        pointwise.out_channels,
        depthwise.kernel_size,
        depthwise.stride,
        _int_padding(depthwise),
        depthwise.dilation,
        bias=bias is not None,
        pre_relu=pre_relu,
        device="meta",  # placeholders, replaced by the convolutions' parameters below
    )
    fused.dw_weight, fused.pw_weight, fused.bias = depthwise.weight, pointwise.weight, bias
    return fused.train(depthwise.training)


def find_fusable(model: nn.Module) -> list[str]:
    """Qualified names of the depthwise convs :func:`fuse_modules` would fuse (where the SepConv2d goes)."""
    return [site.name for site in _sites(model)]


def fuse_modules(model: nn.Module) -> nn.Module:
    """Rewrites, in place, each ``[nn.ReLU ->] depthwise nn.Conv2d -> 1x1 nn.Conv2d`` run inside any
    ``nn.Sequential`` of ``model`` (recursively) into one :class:`SepConv2d`; returns ``model``.

    What is fused:
      * depthwise: ``groups == in_channels == out_channels``, zero padding given as ints (or "valid"; "same"
        is skipped), any kernel, stride, padding and dilation;
      * pointwise, right after it: 1x1, stride 1, padding 0, dilation 1, groups 1;
      * a ``nn.ReLU`` right before the depthwise conv is absorbed (``pre_relu=True``); without one,
        ``pre_relu=False``.

    The SepConv2d takes the depthwise conv's place and holds the convolutions' own weight Parameters, so
    optimizers and tied weights still see them. The absorbed ReLU and the 1x1 conv become ``nn.Identity``, so
    every other module keeps its index and state_dict keys. A depthwise bias is folded into the pointwise
    bias (a new Parameter): outputs are unchanged, but training then updates the folded bias. DARTS
    :class:`SepConv`/:class:`DilConv` of this package already run fused and are left alone. Calling this
    again fuses nothing new.

    An ``nn.ReLU(inplace=True)`` is absorbed too: the fused op computes the same output but no longer
    overwrites its input, which matters only to a model that reads that input again expecting it rectified.

    The number and names of the fused sequences are logged at INFO level (logger ``pyaccel_nas.nn.fuse``);
    :func:`find_fusable` lists them without changing the model.
    """
    sites = _sites(model)
    for site in sites:
        seq, i = site.seq, site.index
        seq[i] = _sep_conv2d(seq[i], seq[i + 1], pre_relu=site.relu)
        for j in (i - 1, i + 1) if site.relu else (i + 1,):
            seq[j] = nn.Identity().train(seq[j].training)
    logger.info("fuse_modules: fused %d sequence(s) into SepConv2d: %s", len(sites), [s.name for s in sites])
    return model
