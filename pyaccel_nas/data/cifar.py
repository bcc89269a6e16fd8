"""CIFAR-10 batches in both official formats, the pickled "python version" read without running code.

- ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each a pickled dict with
  ``data`` (uint8 (N, 3072): 1024 red, 1024 green, 1024 blue values, rows top to bottom) and ``labels``.
- ``cifar-10-batches-bin/``: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``, records of
  one label byte and the same 3072 pixel bytes.

A pickle can name any importable callable and have it called (``os.system`` included), so the batches are
read by an unpickler that resolves only the few names these files contain: numpy's array and dtype
reconstruction, and the builtin container types. Anything else raises :class:`UnsafePickleError` before it
is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from pyaccel_nas.data.errors import DatasetFormatError, UnsafePickleError
from pyaccel_nas.data.split import Split

CHANNELS, SIZE = 3, 32
_PIXELS = CHANNELS * SIZE * SIZE
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"

# numpy's own rebuild functions, taken from what this numpy's arrays reduce to (their module moved from
# numpy.core to numpy._core in numpy 2, and files name either)
_REBUILD_ARRAY = np.empty(0, np.uint8).__reduce__()[0]
_ARRAY_FROM_BUFFER = np.empty(0, np.uint8).__reduce_ex__(5)[0]  # what pickle protocol 5 uses
_ALLOWED = {
    **{(module, "_reconstruct"): _REBUILD_ARRAY for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _ARRAY_FROM_BUFFER for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 2 pickles (the official files) name builtins "__builtin__"
    **{(module, t.__name__): t for module in ("builtins", "__builtin__") for t in (dict, list, bytes)},
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only arrays, lists and dicts"
            ) from None


def load_pickle(path: Path) -> object:
    """The object a pickle holds, built from data-only names (:class:`UnsafePickleError` otherwise)."""
    with path.open("rb") as file:
        try:
            # encoding="bytes": the official files are Python 2 pickles whose str values are raw bytes
            return _DataOnlyUnpickler(file, encoding="bytes").load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except Exception as err:  # bad opcodes, a truncated file, numpy refusing a state: all mean unreadable
            raise DatasetFormatError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err


def _to_split(pixels: np.ndarray, labels: np.ndarray) -> Split:
    return Split(
        torch.from_numpy(np.array(pixels, dtype=np.uint8).reshape(-1, CHANNELS, SIZE, SIZE)),
        torch.from_numpy(np.array(labels, dtype=np.int64)),
    )


def read_pickled_batch(path: Path) -> Split:
    batch = load_pickle(path)
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: expected a dict with 'data' and 'labels', got {type(batch).__name__}")
    batch = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    pixels, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 2
            and pixels.shape[1] == _PIXELS):
        found = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise DatasetFormatError(f"{path}: 'data' must be a uint8 array (N, {_PIXELS}), got {found}")
    if not (isinstance(labels, list) and len(labels) == len(pixels) and all(isinstance(y, int) for y in labels)):
        raise DatasetFormatError(f"{path}: 'labels' must be a list of {len(pixels)} ints")
    return _to_split(pixels, np.array(labels))


def read_binary_batch(path: Path) -> Split:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (1 + _PIXELS):
        raise DatasetFormatError(
            f"{path}: {raw.size} bytes is not a whole number of {1 + _PIXELS}-byte records (truncated or not CIFAR-10)"
        )
    records = raw.reshape(-1, 1 + _PIXELS)
    return _to_split(records[:, 1:], records[:, 0])


def _python_paths(directory: Path) -> list[Path]:
    return [directory / name for name in (*_TRAIN_BATCHES, _TEST_BATCH)]


def _binary_paths(directory: Path) -> list[Path]:
    return [directory / f"{name}.bin" for name in (*_TRAIN_BATCHES, _TEST_BATCH)]


def has_cifar10_files(directory: Path) -> bool:
    return any(all(p.is_file() for p in paths) for paths in (_python_paths(directory), _binary_paths(directory)))


def read_cifar10_splits(directory: Path) -> tuple[Split, Split]:
    """The official (train, test) splits; the python batches are used when a directory has both formats."""
    python_paths = _python_paths(directory)
    if all(p.is_file() for p in python_paths):
        paths, read = python_paths, read_pickled_batch
    else:
        paths, read = _binary_paths(directory), read_binary_batch
    batches = [read(p) for p in paths]
    train = Split(torch.cat([b.images for b in batches[:-1]]), torch.cat([b.labels for b in batches[:-1]]))
    return train, batches[-1]
