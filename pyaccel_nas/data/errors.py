"""The data layer's errors: a dataset that is not installed, and a file that is not what it should be."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """No directory holding the dataset's files; the message lists where we looked and how to install it."""

    def __init__(self, dataset: str, searched: Sequence[Path], install_hint: str) -> None:
        self.dataset = dataset
        self.searched = tuple(searched)
        looked = "\n".join(f"  {path}" for path in self.searched)
        super().__init__(f"dataset {dataset!r} not found; looked in:\n{looked}\nTo install it: {install_hint}")


class DatasetFormatError(ValueError):
    """A dataset file that is corrupt, truncated, or not in the format its name promises."""


class UnsafePickleError(DatasetFormatError):
    """A pickle that asks for more than plain data (it could run code); refused before anything is called."""
