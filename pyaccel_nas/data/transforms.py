"""Whole-batch image transforms on uint8 (N, C, H, W) tensors: augmentation, resizing, normalisation (also of
(N, C, T, H, W) clips)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

_RESIZE_CHUNK = 4096  # images per interpolate call: bounds the float32 copy to a few hundred MB


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Each image zero-padded by ``padding`` pixels on every side, then cropped back at a random offset."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(images.device)
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_horizontal_flip(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images resized to ``size`` x ``size``: shrunk by area averaging (every source pixel counts: no
    aliasing), enlarged by bilinear interpolation (smooth, where area would repeat pixels)."""
    grow = size > images.shape[-1]
    mode = dict(mode="bilinear", align_corners=False) if grow else dict(mode="area")
    # split() of an empty batch still gives one (empty) chunk, so cat always has something to join
    return torch.cat([
        F.interpolate(chunk.float(), size=(size, size), **mode).round_().clamp_(0, 255).to(torch.uint8)
        for chunk in images.split(_RESIZE_CHUNK)
    ])


def normalizer(
    mean: Sequence[float], std: Sequence[float], device: torch.device, spatial_dims: int = 2
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function giving float32 ``(images / 255 - mean) / std`` per channel (dim 1) of inputs with
    ``spatial_dims`` dimensions after it (2: images, 3: clips), as one multiply-add; its constants are made
    once, on ``device``, not per batch."""
    shape = (1, -1) + (1,) * spatial_dims
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
    shift = -torch.tensor(mean, dtype=torch.float32, device=device).view(shape) / std_t
    scale = 1 / (255 * std_t)
    return lambda images: torch.addcmul(shift, images.float(), scale)
