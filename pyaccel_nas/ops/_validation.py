"""Argument checks shared by the public op functions and their fake kernels.

Each raises ValueError naming the argument and what was expected, before any kernel runs. The C++ wrappers
check the same conditions again (also with ValueError), so a direct torch.ops.pyaccel_nas call is safe too;
the kernel paths of channel_gate, sep_conv2d and batch_norm rely on them alone (their modules say why).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_tensor(op: str, name: str, value, *, ranks: Sequence[int] | None = None) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(value).__name__}")
    if ranks is not None and value.dim() not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{op}: `{name}` must have rank {expected}, got rank {value.dim()} with shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(f"{op}: `{name}` must be a floating-point tensor, got dtype {value.dtype}")


def check_same_device_dtype(op: str, name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if value.device != ref.device:
        raise ValueError(
            f"{op}: `{name}` is on {value.device} but `{ref_name}` is on {ref.device}; all tensors must be on one device"
        )
    if value.dtype != ref.dtype:
        raise ValueError(
            f"{op}: `{name}` has dtype {value.dtype} but `{ref_name}` has dtype {ref.dtype}; all tensors must have one dtype"
        )


def int_pair(op: str, name: str, value, *, minimum: int) -> list[int]:
    """Normalises an int or a pair of ints (as nn.Conv2d accepts) to a checked [h, w] list."""
    pair = [value, value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{op}: `{name}` must be an int or a pair of ints, got {value!r}")
    if any(v < minimum or v >= 2**31 for v in pair):
        raise ValueError(f"{op}: `{name}` must be >= {minimum} (and < 2**31), got {value!r}")
    return pair


def int_list(op: str, name: str, value) -> list[int]:
    """Checks a sequence of ints (as interpolate takes a size) and returns it as a list. A float is refused,
    not truncated: int(8.7) would compute a size nobody asked for."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
        isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{op}: `{name}` must be a sequence of ints, got {value!r}")
    return [int(v) for v in value]
