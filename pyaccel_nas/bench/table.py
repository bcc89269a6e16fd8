"""The proxy benchmark table: every sampled architecture trained under every proxy setting of a grid and
under a reference setting, as one versioned JSON Lines file.

Format ``pyaccel_nas.bench.table/1``. Line 1 is the header::

    {"format": "pyaccel_nas.bench.table/1", "complete": true,
     "config": {... the BenchConfig that built it: dataset, settings, reference, network size, recipe ...},
     "train_images": 54000,            # the full training split the proxies' sample divisors divide
     "built_with": {"commit": ..., "torch": ..., "machine": ..., "threads": 1}}

then one line per architecture::

    {"id": 0, "genotype": {... as Genotype.to_dict ...},
     "settings": {"c4r4s10e6": {"val": {"2": 0.71, "4": 0.76, "6": 0.78},   # after E, 2E and 3E epochs
                                "macs_per_image": 468_000, "params": 21_000, "seconds": 17.2}, ...},
     "reference": {"setting": "c4r2s5e6", "val": {"6": 0.85}, "test": 0.84,
                   "macs_per_image": ..., "params": ..., "seconds": ...}}

A setting's accuracies are taken along one cosine schedule of its 3E epochs, exactly what the staged
(hierarchical) strategy sees at each tier; its training cost after k epochs is ``macs_per_image x
train_images / s x k x 3`` (:meth:`Proxy.cost`). An evaluation that failed has ``"error"`` instead of
``val``. A table of an unfinished build has ``"complete": false`` and the architectures finished so far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pyaccel_nas.econas.genotype import Genotype, GenotypeError
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.exec.files import atomic_writer
from pyaccel_nas.validation import parse_json, quote

TABLE_FORMAT = "pyaccel_nas.bench.table/1"


class TableError(ValueError):
    """A file that is not a well-formed benchmark table."""


@dataclass(frozen=True)
class Measurement:
    """One architecture under one setting: validation accuracy after given epochs, size and wall time."""

    val: dict[int, float]
    macs_per_image: int
    params: int
    seconds: float
    test: float | None = None

    def cost(self, proxy: Proxy, train_images: int, epochs: int) -> int:
        """MACs of training this network ``epochs`` epochs under ``proxy``."""
        return proxy.cost(self.macs_per_image, train_images, epochs=epochs)


@dataclass(frozen=True)
class Architecture:
    id: int
    genotype: Genotype
    settings: dict[str, Measurement | None]  # None: the evaluation failed
    reference: Measurement | None


@dataclass(frozen=True)
class BenchTable:
    """A loaded table. ``settings`` are the proxies of the grid in the header's order."""

    header: dict
    architectures: list[Architecture]

    @property
    def settings(self) -> list[str]:
        return list(self.header["config"]["settings"])

    @property
    def reference(self) -> str:
        return self.header["config"]["reference"]

    @property
    def train_images(self) -> int:
        return self.header["train_images"]

    @property
    def complete(self) -> bool:
        return self.header["complete"]


def write_table(path: str | Path, header: dict, rows: list[dict]) -> None:
    with atomic_writer(path) as f:
        for line in [header, *rows]:
            f.write((json.dumps(line, allow_nan=False, separators=(",", ":")) + "\n").encode())


def load_table(path: str | Path) -> BenchTable:
    """The table at ``path``, checked line by line (TableError naming the file and line if malformed)."""
    path = Path(path)
    lines = path.read_bytes().splitlines()
    if not lines:
        raise TableError(f"{path}: empty, not a benchmark table")
    header = _parse(path, 1, lines[0])
    if not isinstance(header, dict) or header.get("format") != TABLE_FORMAT:
        raise TableError(f"{path}: line 1: not a benchmark table header (expected format {TABLE_FORMAT})")
    try:
        _check_header(header)
    except (KeyError, TypeError, ValueError) as exc:
        raise TableError(f"{path}: line 1: malformed header ({quote(str(exc))})") from None
    architectures, line_of_id = [], {}
    for number, line in enumerate(lines[1:], start=2):
        row = _parse(path, number, line)  # outside the try: its TableError is a ValueError, already worded
        try:
            architecture = _architecture(row, header)
        except (KeyError, TypeError, ValueError, GenotypeError) as exc:
            raise TableError(f"{path}: line {number}: malformed architecture ({quote(str(exc))})") from None
        if architecture.id in line_of_id:
            raise TableError(f"{path}: line {number}: architecture id {architecture.id} is already on line "
                             f"{line_of_id[architecture.id]}")
        line_of_id[architecture.id] = number
        architectures.append(architecture)
    return BenchTable(header, architectures)


def _parse(path: Path, number: int, line: bytes):
    try:
        return parse_json(line)
    except ValueError as exc:
        raise TableError(f"{path}: line {number} is not JSON ({exc})") from None


def _check_header(header: dict) -> None:
    config = header["config"]
    for text in [*config["settings"], config["reference"]]:
        Proxy.parse(text)
    if not isinstance(header["train_images"], int) or header["train_images"] < 1:
        raise ValueError("`train_images` must be a positive int")
    if not isinstance(header["complete"], bool):
        raise ValueError("`complete` must be true or false")


def _architecture(row, header: dict) -> Architecture:
    if not isinstance(row, dict) or not isinstance(row["id"], int) or not isinstance(row["settings"], dict):
        raise ValueError("expected an object with an int `id`, a `genotype` and `settings`")
    settings = header["config"]["settings"]
    if set(row["settings"]) != set(settings):
        raise ValueError(f"its settings {sorted(row['settings'])} are not the header's {sorted(settings)}")
    measured = {name: _measurement(row["settings"][name], Proxy.parse(name)) for name in settings}
    reference = _measurement(row["reference"], Proxy.parse(header["config"]["reference"]))
    return Architecture(row["id"], Genotype.from_dict(row["genotype"]), measured, reference)


def _measurement(entry, proxy: Proxy) -> Measurement | None:
    if not isinstance(entry, dict):
        raise ValueError(f"a measurement must be an object, got {quote(entry)}")
    if "error" in entry:
        return None
    val = {int(epoch): accuracy for epoch, accuracy in entry["val"].items()}
    if not val or not all(0 < e <= proxy.epochs and _is_fraction(a) for e, a in val.items()):
        raise ValueError(f"`val` must map epochs 1..{proxy.epochs} to accuracies in [0, 1], got {quote(entry['val'])}")
    for name in ("macs_per_image", "params"):
        if not isinstance(entry[name], int) or entry[name] < 1:
            raise ValueError(f"`{name}` must be a positive int, got {quote(entry[name])}")
    test = entry.get("test")
    if test is not None and not _is_fraction(test):
        raise ValueError(f"`test` must be an accuracy in [0, 1], got {quote(test)}")
    if not isinstance(entry["seconds"], (int, float)) or not entry["seconds"] >= 0:
        raise ValueError(f"`seconds` must be a non-negative number, got {quote(entry['seconds'])}")
    return Measurement(val, entry["macs_per_image"], entry["params"], float(entry["seconds"]), test)


def _is_fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
