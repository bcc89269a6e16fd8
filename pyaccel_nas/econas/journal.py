"""The search journal: an append-only file of finished evaluations, the durable state of a search.

Line 1 is a header naming the format and the search's settings; each further line is one evaluation
result (or failure), written and fsynced as soon as the evaluation finishes, whichever executor ran it. A
search is deterministic given its settings and the results it has seen, so resuming is replaying the
search with finished evaluations read from here instead of run again: the replay rebuilds the populations,
tiers, ages, RNG state, cost and checkpoint paths exactly as they were, at any point (mid-cycle, with some
of a parallel batch finished), nothing finished is lost or redone, and the outcome equals that of an
uninterrupted run. Each record names the genotype it trained, so a replay that asks for another
architecture under the same key (the code changed since) is refused instead of mixing two searches.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from pyaccel_nas.econas.evaluation import EvaluationResult, EvaluationTask, run_evaluation
from pyaccel_nas.exec.base import EnvironmentFailure, describe
from pyaccel_nas.exec.files import atomic_writer, resolve_inside
from pyaccel_nas.validation import parse_json, quote, shorten

JOURNAL_FORMAT = "pyaccel_nas.econas.journal/3"  # 3: checkpoints named relative to the run directory


class JournalError(RuntimeError):
    """A journal that is missing, corrupted, or belongs to another search."""


class Journal:
    """Finished evaluations by key, backed by ``path`` (JSON lines) in the run directory ``path.parent``.

    A new journal is written with its first record, header and record together: a search that fails
    before any evaluation finished leaves no journal behind to refuse the corrected command.
    """

    def __init__(self, path: str | Path, settings: dict, *, resume: bool) -> None:
        self.path = Path(path)
        self.results: dict[str, EvaluationResult] = {}
        # through JSON once, so a resumed search compares like with like (tuples come back as lists)
        self._header = {"format": JOURNAL_FORMAT, "settings": json.loads(json.dumps(settings))}
        self._written = resume
        if resume:
            self._load()
        else:
            if self.path.exists():
                raise JournalError(f"{self.path} exists: resume that search with --resume, or choose another --out")
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _load(self) -> None:
        if not self.path.exists():
            raise JournalError(f"nothing to resume: {self.path} does not exist")
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        self._check_header(lines[0], complete=len(lines) > 1)
        # the writer ends every line with a newline: text after the last one is a record cut off by a crash
        complete, tail = lines[1:-1], lines[-1] if len(lines) > 1 else b""
        for number, line in enumerate(complete, start=2):
            self._add(self._parse(line, number))
        if len(lines) == 1:  # a header whose newline was cut off: the header is whole, add the newline
            self._repair(data + b"\n")
        elif tail:
            try:
                parse_json(tail)
            except ValueError:  # torn: drop it, that evaluation is done again
                self._repair(data[: len(data) - len(tail)])
            else:  # whole but for its newline: keep it (if it is a record)
                self._add(self._parse(tail, len(lines)))
                self._repair(data + b"\n")

    def _check_header(self, line: bytes, *, complete: bool) -> None:
        try:
            found = parse_json(line)
        except ValueError as exc:
            torn = "" if complete else " (cut off: the search was killed as it started; delete the file)"
            raise JournalError(f"{self.path}: line 1 is not a search journal header{torn}: {exc}") from None
        if not isinstance(found, dict) or found.get("format") != JOURNAL_FORMAT:
            raise JournalError(f"{self.path}: not a search journal of this version (expected format {JOURNAL_FORMAT}, "
                               f"found {quote(found.get('format') if isinstance(found, dict) else None)})")
        if found.get("settings") != self._header["settings"]:
            raise JournalError(
                f"{self.path} belongs to a search with other settings; resume with the same command line.\n"
                f"  journal: {shorten(json.dumps(found.get('settings'), sort_keys=True), 2000)}\n"
                f"  now:     {json.dumps(self._header['settings'], sort_keys=True)}"
            )

    def _parse(self, line: bytes, number: int) -> EvaluationResult:
        """The result on line ``number``, its checkpoint checked to lie inside the run."""
        try:
            result = EvaluationResult.from_dict(parse_json(line))
            if result.checkpoint is not None:
                resolve_inside(self.path.parent, result.checkpoint)
        except ValueError as exc:  # OutsideRunError too
            raise JournalError(f"{self.path}: line {number} is corrupted ({shorten(str(exc))})") from None
        return result

    def _add(self, result: EvaluationResult) -> None:
        self.results[result.key] = result

    def _repair(self, data: bytes) -> None:
        with atomic_writer(self.path) as f:
            f.write(data)

    def _append(self, records: list[dict]) -> None:
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
        # no O_CREAT after the first write: a journal that vanished with its directory stops the search
        # instead of being started again, headerless, in a directory created anew
        flags = os.O_WRONLY | os.O_APPEND | (0 if self._written else os.O_CREAT | os.O_EXCL)
        try:
            fd = os.open(self.path, flags, 0o666)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise EnvironmentFailure(f"cannot record to {self.path}: {describe(exc)}") from exc
        self._written = True

    def get(self, key: str) -> EvaluationResult | None:
        return self.results.get(key)

    def record(self, result: EvaluationResult) -> None:
        self._append(([] if self._written else [self._header]) + [dataclasses.asdict(result)])
        self._add(result)

    def evaluate(self, tasks: list[EvaluationTask], executor) -> list[EvaluationResult]:
        """Results of ``tasks`` in order: read from the journal where finished before, else run by
        ``executor`` and recorded as each one finishes (a task that failed every retry as a failure)."""
        for task in tasks:
            found = self.results.get(task.key)
            if found is not None and found.genotype != task.genotype.to_dict():
                raise JournalError(
                    f"{self.path}: {task.key} trained another genotype than this search now asks for: the journal "
                    f"was written by another version of the search; resume with that version"
                )
        pending = [t for t in tasks if t.key not in self.results]
        for outcome in executor.run(run_evaluation, pending):
            failed = outcome.error is not None
            self.record(EvaluationResult.failure(outcome.task, outcome.error) if failed else outcome.result)
        return [self.results[t.key] for t in tasks]
