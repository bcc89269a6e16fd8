"""The executor interface: run a batch of independent tasks, hand back each outcome as it finishes, retry
the ones that fail.

Search code calls only ``executor.run(fn, tasks)``; where the work runs (this process, a local pool, a
Ray cluster) is the executor's business. A task that raises, or whose worker dies (killed for memory, a
lost Ray node), is run again up to ``retries`` times; after that its outcome carries the error instead of
a result, and the caller decides what a failure means (the search records it and goes on).

A task that raises :class:`EnvironmentFailure` failed because of the machine or the settings (a full disk,
an output directory gone, data missing), not because of what it ran: that is never retried nor handed
back as the task's outcome. The batch stops (tasks not started are not started; tasks already running
finish and are handed back) and the failure is raised to the caller, so nothing records it as a result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class EnvironmentFailure(RuntimeError):
    """A task could not run for a reason outside it (disk full, output directory read-only or gone, dataset
    missing): the work must stop, and a resumed run must do the task again."""


@dataclass(frozen=True)
class Outcome:
    """What became of one task: its ``result``, or (after every retry failed) the ``error`` that ended it."""

    task: Any
    result: Any = None
    error: str | None = None


def describe(exc: BaseException) -> str:
    """A one-line account of an exception (a traceback does not travel well between processes)."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class Executor:
    """Base of the executors: retries on top of ``_attempt``, which runs each task once."""

    name = "executor"

    def __init__(self, *, retries: int = 2) -> None:
        if retries < 0:
            raise ValueError(f"{type(self).__name__}: `retries` must be >= 0, got {retries}")
        self.retries = retries

    def run(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Outcome]:
        """``fn(task)`` for every task, as outcomes in completion order. Failed tasks are run again (after the
        rest of the batch) until they succeed or have failed ``retries + 1`` times."""
        pending, attempt = list(tasks), 0
        while pending:
            again = []
            for outcome in self._attempt(fn, pending):
                if outcome.error is not None and attempt < self.retries:
                    log.warning("%s executor: task failed (attempt %d of %d), retrying: %s", self.name, attempt + 1,
                                self.retries + 1, outcome.error)
                    again.append(outcome.task)
                else:
                    yield outcome
            pending, attempt = again, attempt + 1

    def _attempt(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Outcome]:
        """Runs each task once; yields one outcome per task, an exception or a dead worker as ``error``."""
        raise NotImplementedError

    def close(self) -> None:
        """Releases workers; the executor cannot run anything afterwards."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
