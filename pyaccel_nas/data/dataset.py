"""A dataset in memory: train/val/test splits, the EcoNAS proxies (fewer samples, lower resolution), batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from pyaccel_nas.data import transforms
from pyaccel_nas.data.split import Split, stratified_sample

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset's images are. ``image_size`` is the side of the (square) images as currently held."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]  # per channel, of pixels scaled to 0..1
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    flip_invariant: bool  # whether a mirrored image keeps its class (objects: yes; digits: no)
    frames: int | None = None  # clips (video): frames per clip; None for still images

    def __post_init__(self) -> None:
        if not len(self.mean) == len(self.std) == self.channels or len(self.class_names) != self.num_classes:
            raise ValueError(
                f"DatasetInfo {self.name!r}: mean/std need one value per channel, class_names one per class"
            )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(C, H, W) of an image, (C, T, H, W) of a clip."""
        frames = () if self.frames is None else (self.frames,)
        return (self.channels, *frames, self.image_size, self.image_size)


def _divisor(owner: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: the divisor must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Images and labels in memory, split into ``train``, ``val`` (held out of the official training set: use
    it for selection) and ``test`` (the official test set: for final reports only)."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    # resized copies by image size, so each size is computed once per dataset
    _resized: dict[int, Dataset] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        expected = self.info.sample_shape
        for name in SPLITS:
            shape = tuple(self.split(name).images.shape[1:])
            if shape != expected:
                raise ValueError(f"Dataset {self.info.name!r}: {name} images are {shape}, info says {expected}")

    def __repr__(self) -> str:
        info = self.info
        return (f"Dataset({info.name!r}, {'x'.join(map(str, info.sample_shape))}, "
                f"train={len(self.train)}, val={len(self.val)}, test={len(self.test)})")

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return getattr(self, name)

    def subset_train(self, divisor: int, seed: int = 0) -> Dataset:
        """The same dataset training on ``len(train) // divisor`` samples: a seeded, class-stratified subset
        (EcoNAS's ``s`` proxy). ``val`` and ``test`` are unchanged."""
        if _divisor("subset_train", divisor) == 1:
            return self
        count = len(self.train) // divisor
        if count < 1:
            raise ValueError(f"subset_train: {len(self.train)} training samples divided by {divisor} leaves none")
        picked = stratified_sample(self.train.labels, count, torch.Generator().manual_seed(seed))
        return dataclasses.replace(self, train=self.train.take(picked))

    def at_resolution(self, divisor: int) -> Dataset:
        """Every split with images shrunk to ``image_size // divisor`` (EcoNAS's ``r`` proxy), by area
        averaging; computed on the first call and kept. Call it before :meth:`subset_train`, which is cheap,
        so that the resized copy is made once for all subsets."""
        if _divisor("at_resolution", divisor) == 1:
            return self
        size = self.info.image_size // divisor
        if size < 1:
            raise ValueError(f"at_resolution: {self.info.image_size} pixels divided by {divisor} leaves none")
        return self.resized(size)

    def resized(self, size: int) -> Dataset:
        """Every split with images resized to ``size`` x ``size`` (:func:`~pyaccel_nas.data.transforms.resize`);
        computed on the first call and kept, like :meth:`at_resolution`."""
        if self.info.frames is not None:
            raise ValueError(f"resized: {self.info.name} holds clips; only image datasets can be resized")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"resized: `size` must be a positive int, got {size!r}")
        if size == self.info.image_size:
            return self
        if size not in self._resized:
            splits = {name: Split(transforms.resize(getattr(self, name).images, size), getattr(self, name).labels)
                      for name in SPLITS}
            self._resized[size] = Dataset(dataclasses.replace(self.info, image_size=size), **splits)
        return self._resized[size]

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(x, y)`` of one split: x float32 (B, C, H, W), or (B, C, T, H, W) for clips, normalised by
        ``info.mean``/``info.std``, y int64 (B,), on ``device`` (default: where the data is).

        ``shuffle``: a new random order per call. ``augment``: random crops of images padded by
        ``image_size // 8`` pixels (4 for CIFAR's 32; at least 1), plus random mirroring where ``info.flip_invariant``;
        a clip is cropped and mirrored as a whole (every frame alike).
        ``generator``: the randomness of both; a ``torch.Generator`` (pass the same one every epoch for
        orders that differ per epoch yet repeat per run), an int seed, or None for torch's global RNG.
        """
        data = self.split(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batches: batch_size must be a positive int, got {batch_size!r}")
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        target = data.images.device if device is None else torch.device(device)
        return self._iterate(data, batch_size, shuffle, augment, drop_last, generator, target)

    def _iterate(
        self, data: Split, batch_size: int, shuffle: bool, augment: bool, drop_last: bool,
        generator: torch.Generator | None, device: torch.device,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(data)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        end = n - n % batch_size if drop_last else n
        normalize = transforms.normalizer(self.info.mean, self.info.std, device, data.images.dim() - 2)
        for start in range(0, end, batch_size):
            indices = order[start:start + batch_size]
            images = data.images[indices].to(device, non_blocking=True)  # uint8 travels: 4x less than float
            if augment:
                # a clip's frames as extra channels: one crop offset and one flip per clip
                shape = images.shape
                images = images.flatten(1, -3)
                images = transforms.random_crop(images, max(1, self.info.image_size // 8), generator)
                if self.info.flip_invariant:
                    images = transforms.random_horizontal_flip(images, generator)
                images = images.view(shape)
            yield normalize(images), data.labels[indices].to(device, non_blocking=True)
