"""scikit-learn's bundled 8x8 digits (1797 images, values 0..16): the dataset tiny tests need no files for."""

from __future__ import annotations

import torch

from pyaccel_nas.data.split import Split

SIZE = 8
# The data has no official test set: the last 360 images (a fifth) are ours, fixed so that no seed moves them
TEST_SIZE = 360


def read_digits_splits() -> tuple[Split, Split]:
    """(train, test) with pixels rescaled from 0..16 to 0..255, the range every other dataset has."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install scikit-learn") from err
    digits = load_digits()
    levels = torch.from_numpy(digits.images).round().long()
    images = ((levels * 255 + 8) // 16).to(torch.uint8).unsqueeze(1)  # 16 -> 255, rounded to nearest
    labels = torch.from_numpy(digits.target).long()
    return Split(images[:-TEST_SIZE], labels[:-TEST_SIZE]), Split(images[-TEST_SIZE:], labels[-TEST_SIZE:])
