"""Checks on what a run is handed (numbers, files, an output directory), made before any work starts.

An error about an input names the file and says what is wrong in a line, quoting at most a short excerpt
of it: a 50 MB bad genotype must not come back as 100 MB of error message, and no way a file can be
malformed (not UTF-8, nested past the parser's recursion limit, an integer too long to convert, a
truncated torch file) escapes as a bare exception without the file's name.
"""

from __future__ import annotations

import json
import math
import pickle
import reprlib
import tempfile
from pathlib import Path

import torch

QUOTE_LIMIT = 200  # characters of an input an error message quotes at most

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 4, 60, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 10


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and its length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def quote(value) -> str:
    """A repr of ``value`` for an error message: short however large or deeply nested ``value`` is."""
    return shorten(_REPR.repr(value))


def require_finite(config, *names: str) -> None:
    """ValueError unless each named field of ``config`` is None or a finite number. Range checks alone let
    NaN through (it compares false with everything), and inf passes every lower bound."""
    for name in names:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise ValueError(f"{type(config).__name__}: `{name}` must be a finite number, got {quote(value)}")


def parse_json(text: str | bytes):
    """``json.loads(text)``, every way it can fail as a ValueError with a short reason: bad syntax, bytes
    that are not UTF-8, an integer past Python's digit limit, nesting deeper than the parser recurses."""
    try:
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit
        raise ValueError(shorten(str(exc))) from None


class CheckpointError(ValueError):
    """A torch file that cannot be read: truncated, corrupted, or more than tensors and plain data."""


def load_tensors(path: str | Path):
    """``torch.load(path, weights_only=True)`` onto the CPU; CheckpointError naming the file if it is not a
    whole, data-only torch file (torch says so as RuntimeError, OSError, EOFError or UnpicklingError)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        reason = str(exc).split("\n", 1)[0] or type(exc).__name__
        raise CheckpointError(f"{path}: not a readable torch file (truncated or corrupted?): "
                              f"{shorten(reason)}") from exc


def claim_output_dir(out: str | Path, result: str, *, overwrite: bool) -> Path:
    """``out``, created if need be, for a run whose result is the file ``out/result``.

    A finished run there (its result exists) is refused with FileExistsError unless ``overwrite``, so no
    run is replaced by accident; and the directory is checked to be writable now, so that a run cannot fail
    for want of a place to write after its work is done (OSError naming the directory).
    """
    out = Path(out)
    if (out / result).exists() and not overwrite:
        raise FileExistsError(f"{out / result} exists: choose another --out, or replace that run with --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out):
        pass
    return out
