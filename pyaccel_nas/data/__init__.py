"""Datasets in memory for search and pruning: MNIST, Fashion-MNIST, CIFAR-10, scikit-learn's digits, and
moving digits (clips of MNIST digits, :mod:`pyaccel_nas.data.moving_digits`).

    from pyaccel_nas.data import load_dataset

    ds = load_dataset("fashion-mnist", root=None, val_fraction=0.1, seed=0)
    ds.info                       # DatasetInfo: name, num_classes, channels, image_size, mean, std, class_names
    len(ds.train), len(ds.val), len(ds.test)      # 54000, 6000, 10000
    proxy = ds.at_resolution(4).subset_train(2, seed=0)     # EcoNAS r4 s2: 7x7 images, half the training set
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        for x, y in proxy.batches("train", 64, shuffle=True, augment=True, generator=g):
            ...                   # x float32 (64, 1, 7, 7) normalised, y int64 (64,)
    accuracy on proxy.batches("val", 256)          # select on val; report test once, at the end

- Splits: ``train`` and ``val`` partition the official training set (``val``: a seeded, class-stratified
  ``val_fraction`` of it); ``test`` is the official test set and is never used for selection. Everything is
  deterministic given the seeds.
- Images are held as uint8 (N, C, H, W) with pixels 0..255 (digits' 0..16 rescaled), labels as int64; each
  batch is gathered, augmented and normalised on the fly (``batches(..., device=...)`` moves the uint8 data).
- ``at_resolution(divisor)`` shrinks every split by area averaging, ``resized(size)`` resizes it (bilinear when
  enlarging), once per size (kept on the dataset);
  ``subset_train(divisor, seed)`` keeps a seeded, class-stratified ``1/divisor`` of the training samples.
- Files are found under an explicit ``root`` (CLI ``--data-root``; then the only place searched), else under
  the data roots in ``$PYACCEL_NAS_DATA``, then ``/usr/share/datasets``, ``./data``, ``~/.cache/pyaccel_nas``
  and ``.``; a missing dataset raises :class:`DatasetNotFoundError` saying where it looked and how to install
  it. IDX files may be gzipped; CIFAR-10 may be the python or the binary batches. The pickled CIFAR batches
  are read by an unpickler that only rebuilds arrays and containers: a pickle naming anything else raises
  :class:`UnsafePickleError` without running it.
"""

from pyaccel_nas.data.catalog import DATASETS, DatasetSpec, load_dataset
from pyaccel_nas.data.dataset import SPLITS, Dataset, DatasetInfo
from pyaccel_nas.data.errors import DatasetFormatError, DatasetNotFoundError, UnsafePickleError
from pyaccel_nas.data.split import Split

__all__ = [
    "DATASETS",
    "SPLITS",
    "Dataset",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSpec",
    "Split",
    "UnsafePickleError",
    "load_dataset",
]
