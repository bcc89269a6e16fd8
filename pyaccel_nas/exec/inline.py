"""The default executor: runs tasks one after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pyaccel_nas.exec.base import EnvironmentFailure, Executor, Outcome, describe


class InlineExecutor(Executor):
    """Runs each task in the calling process, in order."""

    name = "inline"

    def _attempt(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Outcome]:
        for task in tasks:
            try:
                result = fn(task)
            except EnvironmentFailure:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of a task is the task's outcome
                yield Outcome(task, error=describe(exc))
            else:
                yield Outcome(task, result)
