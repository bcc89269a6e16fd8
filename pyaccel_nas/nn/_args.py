"""Constructor argument checks: each raises ValueError naming the module, the argument and what it takes."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(owner: str, name: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive int, got {value!r}")
    return value


def int_pair(owner: str, name: str, value, *, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (as nn.Conv2d takes them), each >= minimum, as an (h, w) tuple."""
    pair = (value, value) if _is_int(value) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(_is_int(v) and v >= minimum for v in pair):
        raise ValueError(f"{owner}: `{name}` must be an int or a pair of ints, each >= {minimum}, got {value!r}")
    return pair


def threshold(owner: str, value) -> float | None:
    """None or a finite number >= 0, as a float."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}: `threshold` must be None or a finite number >= 0, got {value!r}")
    return float(value)


def positive_ints(owner: str, name: str, value) -> tuple[int, ...]:
    """A non-empty sequence of positive ints, as a tuple."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value or not all(
        _is_int(v) and v >= 1 for v in value
    ):
        raise ValueError(f"{owner}: `{name}` must be a non-empty sequence of positive ints, got {value!r}")
    return tuple(value)


def conv_pairs(owner: str, kernel_size, stride, padding, dilation) -> tuple[tuple[int, int], ...]:
    """kernel_size, stride, padding and dilation of a convolution, each checked and as an (h, w) tuple."""
    return (
        int_pair(owner, "kernel_size", kernel_size, minimum=1),
        int_pair(owner, "stride", stride, minimum=1),
        int_pair(owner, "padding", padding, minimum=0),
        int_pair(owner, "dilation", dilation, minimum=1),
    )
