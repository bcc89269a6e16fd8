"""The default executor: runs tasks one after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")


class InlineExecutor:
    """Runs each task in the calling process, in order."""

    name = "inline"

    def run(self, fn: Callable[[Task], Result], tasks: Iterable[Task]) -> Iterator[Result]:
        for task in tasks:
            yield fn(task)

    def close(self) -> None:
        pass
