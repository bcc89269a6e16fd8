"""IDX files (the MNIST family's format), gzipped or not, and the four-file MNIST layout.

An IDX file is ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the values big-endian
in row-major order.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from pyaccel_nas.data.errors import DatasetFormatError
from pyaccel_nas.data.split import Split

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"

# (images, labels) of the official training and test sets; each file may also carry a .gz suffix
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: str | Path) -> np.ndarray:
    """The array an IDX file holds, in native byte order; gzip is recognised by content, not by name."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise DatasetFormatError(f"{path}: corrupt or truncated gzip data ({err})") from err
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _TYPES:
        raise DatasetFormatError(
            f"{path}: not an IDX file: magic number {raw[:4].hex(' ')}, expected 00 00 <type> <ndim> with type in "
            f"{', '.join(f'{t:02x}' for t in _TYPES)}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header ({len(raw)} bytes, the header alone needs {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_TYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "trailing bytes after the data"
        raise DatasetFormatError(
            f"{path}: {problem}: {len(raw)} bytes, expected {expected} for {dtype.name} values of shape {shape}"
        )
    # astype copies: the result is writable and independent of `raw`
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _file(directory: Path, stem: str) -> Path | None:
    return next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)


def has_idx_files(directory: Path) -> bool:
    return all(_file(directory, stem) is not None for stem in TRAIN_FILES + TEST_FILES)


def _read_split(directory: Path, images_stem: str, labels_stem: str) -> Split:
    """A split from an (N, H, W) uint8 images file and an (N,) uint8 labels file."""
    images_path, labels_path = _file(directory, images_stem), _file(directory, labels_stem)
    if images_path is None or labels_path is None:
        raise FileNotFoundError(f"{directory}: missing {images_stem}[.gz] or {labels_stem}[.gz]")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetFormatError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise DatasetFormatError(
            f"{labels_path}: expected {images.shape[0]} uint8 labels to match {images_path.name}, "
            f"got {labels.dtype} {labels.shape}"
        )
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())


def read_idx_splits(directory: Path) -> tuple[Split, Split]:
    """The official (train, test) splits of an MNIST-layout directory."""
    return _read_split(directory, *TRAIN_FILES), _read_split(directory, *TEST_FILES)
