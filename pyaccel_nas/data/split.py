"""One split of a dataset in memory (uint8 images, int64 labels), and seeded stratified selection."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """``images``: uint8 (N, C, H, W) images or (N, C, T, H, W) clips, pixels 0..255; ``labels``: int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.dim() not in (4, 5):
            raise ValueError(f"Split: images must be uint8 (N, C, H, W) or clips (N, C, T, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(f"Split: labels must be int64 (N,) with N={images.shape[0]}, got {labels.dtype} "
                             f"{tuple(labels.shape)}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __repr__(self) -> str:
        return f"Split(images={tuple(self.images.shape)})"

    def take(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])


def stratified_sample(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct indices into ``labels``, ascending, each class in proportion to its frequency.

    Every sample gets its random rank within its class divided by the class size; taking the ``count``
    smallest of these fractions takes the same share of every class (up to one sample), and ties between
    classes fall in random order.
    """
    n = labels.shape[0]
    if not 0 <= count <= n:
        raise ValueError(f"cannot pick {count} of {n} samples")
    permutation = torch.randperm(n, generator=generator)
    shuffled = labels[permutation]
    by_class = torch.argsort(shuffled, stable=True)
    class_sizes = torch.bincount(shuffled)
    class_starts = torch.cumsum(class_sizes, 0) - class_sizes
    rank = torch.empty(n, dtype=torch.int64)
    rank[by_class] = torch.arange(n) - class_starts[shuffled[by_class]]
    share = (rank.double() + 0.5) / class_sizes[shuffled].double()
    picked = permutation[torch.argsort(share, stable=True)[:count]]
    return picked.sort().values
