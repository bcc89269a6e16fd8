"""Writing files so that a crash or a kill at any moment leaves the old file or the new one, never half."""

from __future__ import annotations

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


def write_json_atomically(path: str | Path, data) -> None:
    with atomic_writer(path) as f:
        f.write((json.dumps(data, indent=2) + "\n").encode())
