"""Moving digits: deterministic clips of real MNIST digits, bouncing inside the canvas, labelled by digit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyaccel_nas.data import Split, load_dataset
from pyaccel_nas.data.moving_digits import make_moving_digits


def _digits(count=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(count, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    return Split(images, torch.randint(0, 10, (count,), generator=g))


def test_clips_are_deterministic_shaped_and_labelled():
    digits = _digits()
    a = make_moving_digits(digits, 30, frames=6, size=24, digit_size=12, seed=4)
    b = make_moving_digits(digits, 30, frames=6, size=24, digit_size=12, seed=4)
    c = make_moving_digits(digits, 30, frames=6, size=24, digit_size=12, seed=5)
    assert a.images.shape == (30, 1, 6, 24, 24) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_each_frame_holds_the_labelled_digit_somewhere_and_it_moves():
    digits = _digits()
    clips = make_moving_digits(digits, 20, frames=5, size=20, digit_size=10, seed=1)
    glyphs = F.interpolate(digits.images.float(), size=(10, 10), mode="area").round().to(torch.uint8)
    moved = 0
    for clip, label in zip(clips.images[:, 0], clips.labels):
        candidates = [g[0] for g, l in zip(glyphs, digits.labels) if l == label]
        positions = []
        for frame in clip:
            windows = frame.unfold(0, 10, 1).unfold(1, 10, 1)  # every 10x10 window
            hits = [(r, c) for g in candidates for r, c in (windows == g).all(-1).all(-1).nonzero().tolist()]
            assert hits, "the clip's frame does not contain a digit of its label"
            positions.append(hits[0])
            assert int(frame.sum()) == int(windows[hits[0]].sum())  # nothing else on the canvas
        moved += len(set(positions)) > 1
    assert moved >= 15  # speeds of 1-3 pixels per frame: almost every digit moves


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="digit_size"):
        make_moving_digits(_digits(), 3, size=10, digit_size=12)
    with pytest.raises(ValueError, match="frames"):
        make_moving_digits(_digits(), 3, frames=0)


def test_catalog_dataset_has_clip_splits_and_batches():
    ds = load_dataset("moving-digits")
    assert ds.info.sample_shape == (1, 8, 32, 32)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5400, 600, 1000)
    x, y = next(ds.batches("train", 16, shuffle=True, augment=True, generator=0))
    assert x.shape == (16, 1, 8, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
    x, _ = next(ds.batches("test", 1000))
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.1  # the catalog's mean and std
    with pytest.raises(ValueError, match="clips"):
        ds.at_resolution(2)
