"""Reduced training settings ("proxies") in the EcoNAS notation ``c{x}r{y}s{z}e{n}``.

``c4`` divides the channels by 4 (36 -> 9), ``r4`` the input resolution by 4 (32 -> 8), ``s2`` the
training samples by 2 (a fixed seeded subset), ``e60`` trains 60 epochs; a divisor of 0 means "no
reduction". The ground truth of the paper is ``c0r0s0e600``; its reliable proxy is ``c4r4s0e60``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NOTATION = re.compile(r"c(\d+)r(\d+)s(\d+)e(\d+)")

# A training step (forward + backward) costs about three forward passes.
TRAINING_PASSES = 3


@dataclass(frozen=True)
class Proxy:
    """Divisors of channels, resolution and training samples (0 = keep), and the number of epochs."""

    channels: int = 0
    resolution: int = 0
    samples: int = 0
    epochs: int = 600

    def __post_init__(self) -> None:
        for name in ("channels", "resolution", "samples", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Proxy: `{name}` must be a non-negative int, got {value!r}")
        if self.epochs == 0:
            raise ValueError("Proxy: `epochs` must be at least 1")

    @classmethod
    def parse(cls, text: str) -> Proxy:
        """``Proxy.parse("c4r4s0e60")``."""
        match = _NOTATION.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"not a proxy in c{{x}}r{{y}}s{{z}}e{{n}} notation (e.g. c4r4s0e60): {text!r}")
        return cls(*(int(g) for g in match.groups()))

    def __str__(self) -> str:
        return f"c{self.channels}r{self.resolution}s{self.samples}e{self.epochs}"

    # --- applying the proxy ---------------------------------------------------------------------------

    def channels_of(self, base: int) -> int:
        return max(1, base // self.channels) if self.channels else base

    def resolution_of(self, base: int) -> int:
        return max(1, base // self.resolution) if self.resolution else base

    def samples_of(self, base: int) -> int:
        return max(1, base // self.samples) if self.samples else base

    def cost(self, macs_per_image: int, train_images: int, epochs: int | None = None) -> int:
        """Training cost in MACs: MACs per image x images x epochs x 3 (forward + backward).

        ``train_images`` is the full training set; the proxy's sample divisor is applied here.
        """
        epochs = self.epochs if epochs is None else epochs
        return macs_per_image * self.samples_of(train_images) * epochs * TRAINING_PASSES
