"""The files of a run: written so that a crash or a kill at any moment leaves the old file or the new one,
never half, and named only inside the run's directory."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` once the block ends without error.

    The data goes to a uniquely named temporary file beside ``path`` (two writers never share one), is
    fsynced, renamed over ``path``, and the directory is fsynced so the rename itself survives a power cut.
    The file gets the permissions ``open`` would give a new file (0666 less the umask), not mkstemp's 0600:
    results and checkpoints are read by other users and other machines' Ray workers.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _umask() -> int:
    umask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(umask)
    return umask


def write_text_atomically(path: str | Path, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text.encode())


def write_json_atomically(path: str | Path, data) -> None:
    """Writes ``data`` as JSON; ValueError, before the file is touched, if it holds NaN or infinity (which
    JSON has no numbers for: a reader would choke on the file or take the value for null)."""
    write_text_atomically(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def save_figure_atomically(figure, path: str | Path, dpi: int) -> None:
    """A matplotlib figure as PNG (rendered in memory first: a kill mid-render leaves the old picture)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    with atomic_writer(path) as f:
        f.write(buffer.getvalue())


class OutsideRunError(ValueError):
    """A path that a run's state names but that lies outside the run's directory."""


def resolve_inside(run_dir: str | Path, relative: str) -> Path:
    """The absolute path of ``relative`` inside ``run_dir``; OutsideRunError if it leads anywhere else.

    Run state (a journal's checkpoint fields) names files relative to the run, so a run resumes from any
    working directory, and a tampered record cannot make the run read, overwrite or delete a file of
    someone else's: absolute paths, ``..`` and symbolic links that lead out are refused.
    """
    parts = Path(relative).parts if isinstance(relative, str) else ()
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise OutsideRunError(f"{str(relative)[:200]!r} is not a path relative to the run directory")
    root = Path(os.path.realpath(run_dir))
    path = Path(os.path.realpath(root / relative))
    if not path.is_relative_to(root) or path == root:
        raise OutsideRunError(f"{relative!r} leads outside the run directory (a symbolic link?)")
    return path
