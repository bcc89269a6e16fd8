"""Moving digits: clips of real MNIST digits moving over a blank canvas, labelled by digit class.

The procedure behind the public Moving MNIST set (Srivastava et al., 2015), one digit per clip: each clip
takes a digit image, shrunk to ``digit_size`` by area averaging, places it at a random position on a
``size`` x ``size`` canvas and moves it with a random constant velocity for ``frames`` frames, bouncing off
the edges. Everything follows from the seed, so every run builds the same clips. Training clips use digits
of MNIST's training set, test clips digits of its test set, so no digit is seen in both.

Default sizes (small enough for CPU training): 8 frames of 32x32 pixels, 20-pixel digits, speeds of 1 to
3 pixels per frame, 6000 training clips (the catalog holds 10% of them out as ``val``) and 1000 test clips.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pyaccel_nas.data.split import Split

FRAMES = 8
SIZE = 32
DIGIT_SIZE = 20
TRAIN_CLIPS = 6000
TEST_CLIPS = 1000
SEED = 0  # the catalog's clips; fixed so that the dataset is the same for every run


def _bounce(start: torch.Tensor, step: torch.Tensor, frames: int, span: int) -> torch.Tensor:
    """Integer positions (N, frames) in 0..span of a point moving by ``step`` per frame, reflected at the ends."""
    path = start[:, None] + step[:, None] * torch.arange(frames, dtype=torch.float64)
    if span == 0:
        return torch.zeros_like(path, dtype=torch.int64)
    folded = torch.remainder(path, 2 * span)  # a reflected walk repeats every 2*span
    return (span - (folded - span).abs()).round().long()


def make_moving_digits(
    digits: Split, count: int, *, frames: int = FRAMES, size: int = SIZE, digit_size: int = DIGIT_SIZE,
    speed: tuple[float, float] = (1.0, 3.0), seed: int = 0,
) -> Split:
    """``count`` clips, uint8 (count, 1, frames, size, size), from the (N, 1, H, W) images of ``digits``;
    each clip's label is its digit's label."""
    for name, value in (("count", count), ("frames", frames), ("size", size), ("digit_size", digit_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"make_moving_digits: `{name}` must be a positive int, got {value!r}")
    if digit_size > size:
        raise ValueError(f"make_moving_digits: `digit_size` {digit_size} exceeds the canvas `size` {size}")
    if digits.images.dim() != 4 or digits.images.shape[1] != 1 or len(digits) == 0:
        raise ValueError(f"make_moving_digits: `digits` must hold (N, 1, H, W) images, got "
                         f"{tuple(digits.images.shape)}")
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randint(len(digits), (count,), generator=generator)
    glyphs = F.interpolate(digits.images[picked].float(), size=(digit_size, digit_size), mode="area")
    glyphs = glyphs.round().to(torch.uint8)[:, 0]

    span = size - digit_size
    start = torch.rand(2, count, generator=generator, dtype=torch.float64) * span
    angle = torch.rand(count, generator=generator, dtype=torch.float64) * 2 * math.pi
    low, high = speed
    speeds = low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)
    rows = _bounce(start[0], speeds * torch.sin(angle), frames, span)
    cols = _bounce(start[1], speeds * torch.cos(angle), frames, span)

    clips = torch.zeros(count, frames, size, size, dtype=torch.uint8)
    offsets = torch.arange(digit_size)
    clip_index = torch.arange(count)[:, None, None]
    for t in range(frames):
        r = (rows[:, t, None] + offsets)[:, :, None]
        c = (cols[:, t, None] + offsets)[:, None, :]
        clips[clip_index, t, r, c] = glyphs
    return Split(clips.unsqueeze(1), digits.labels[picked].clone())


def moving_digit_splits(train_digits: Split, test_digits: Split) -> tuple[Split, Split]:
    """The catalog's (train, test) clips at the default sizes, from MNIST's (train, test) digits."""
    return (make_moving_digits(train_digits, TRAIN_CLIPS, seed=SEED),
            make_moving_digits(test_digits, TEST_CLIPS, seed=SEED + 1))
