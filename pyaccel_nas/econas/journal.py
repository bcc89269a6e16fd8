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

JOURNAL_FORMAT = "pyaccel_nas.econas.journal/2"


class JournalError(RuntimeError):
    """A journal that is missing, corrupted, or belongs to another search."""


class Journal:
    """Finished evaluations by key, backed by ``path`` (JSON lines)."""

    def __init__(self, path: str | Path, settings: dict, *, resume: bool) -> None:
        self.path = Path(path)
        self.results: dict[str, EvaluationResult] = {}
        # through JSON once, so a resumed search compares like with like (tuples come back as lists)
        header = {"format": JOURNAL_FORMAT, "settings": json.loads(json.dumps(settings))}
        if resume:
            self._load(header)
        else:
            if self.path.exists():
                raise JournalError(f"{self.path} exists: resume that search with --resume, or choose another --out")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append(header)

    def _load(self, header: dict) -> None:
        if not self.path.exists():
            raise JournalError(f"nothing to resume: {self.path} does not exist")
        lines = self.path.read_bytes().split(b"\n")
        try:
            found = json.loads(lines[0])
        except json.JSONDecodeError as exc:
            raise JournalError(f"{self.path}: not a search journal ({exc})") from exc
        if not isinstance(found, dict) or found.get("format") != JOURNAL_FORMAT:
            raise JournalError(f"{self.path}: not a search journal (expected format {JOURNAL_FORMAT})")
        if found.get("settings") != header["settings"]:
            raise JournalError(
                f"{self.path} belongs to a search with other settings; resume with the same command line.\n"
                f"  journal: {json.dumps(found.get('settings'), sort_keys=True)}\n"
                f"  now:     {json.dumps(header['settings'], sort_keys=True)}"
            )
        complete = lines[1:-1]  # the file ends with a newline; anything after the last one was cut off
        for number, line in enumerate(complete, start=2):
            try:
                result = EvaluationResult.from_dict(json.loads(line))
            except ValueError as exc:  # json.JSONDecodeError is one
                raise JournalError(f"{self.path}: line {number} is corrupted ({exc})") from exc
            self.results[result.key] = result
        if lines[-1]:  # a record cut off by a crash mid-write: drop it, it will be redone
            with open(self.path, "r+b") as f:
                f.truncate(len(self.path.read_bytes()) - len(lines[-1]))

    def _append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def get(self, key: str) -> EvaluationResult | None:
        return self.results.get(key)

    def record(self, result: EvaluationResult) -> None:
        self._append(dataclasses.asdict(result))
        self.results[result.key] = result

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
