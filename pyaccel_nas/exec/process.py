"""A local pool of worker processes: one evaluation per core (or per ``threads`` cores) at a time."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from pyaccel_nas.exec.base import EnvironmentFailure, Executor, Outcome, describe
from pyaccel_nas.threads import available_cores


def _start_worker(threads: int, parent: int) -> None:
    import torch

    # each worker gets its share of the cores, so N workers do not each start a thread per core
    torch.set_num_threads(threads)
    # a search killed with SIGKILL cannot shut its pool down: its workers notice and leave instead of
    # lingering forever (a resumed search runs whatever they were doing again)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


class ProcessExecutor(Executor):
    """Runs tasks in ``workers`` processes (default: one per ``threads`` available cores).

    Workers are started with ``spawn``: forking a process that already runs torch's OpenMP threads is
    unsafe. ``fn`` and the tasks must pickle (module-level functions, plain-data tasks). A worker that dies
    (killed for memory, a crash in native code) breaks the whole pool and takes the other tasks in flight
    with it; those are then run again one at a time, each in a worker of its own, so the failed attempt is
    charged to the task that killed its worker and to no other.
    """

    name = "process"

    def __init__(self, workers: int | None = None, *, threads: int = 1, retries: int = 2) -> None:
        super().__init__(retries=retries)
        if threads < 1 or (workers is not None and workers < 1):
            raise ValueError(f"ProcessExecutor: `workers` and `threads` must be >= 1, got {workers} and {threads}")
        self.workers = workers or max(1, available_cores() // threads)
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(self.threads, os.getpid()))

    def _attempt(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Outcome]:
        if self._pool is None:
            self._pool = self._new_pool(self.workers)
        in_flight = []
        for outcome in _run_in(self._pool, fn, tasks):
            if isinstance(outcome, _InFlight):
                in_flight.append(outcome.task)
            else:
                yield outcome
        if in_flight:  # a worker died: find out which task killed it, each alone in a fresh worker
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            for task in in_flight:
                solo = self._new_pool(1)
                try:
                    for outcome in _run_in(solo, fn, [task]):
                        died = isinstance(outcome, _InFlight)
                        yield Outcome(task, error="its worker process died (killed, or crashed)") if died else outcome
                finally:
                    solo.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@dataclass(frozen=True)
class _InFlight:
    """A task whose pool broke while it was queued or running: it neither finished nor failed by itself."""

    task: Any


def _run_in(pool: ProcessPoolExecutor, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Outcome | _InFlight]:
    futures = {pool.submit(fn, task): task for task in tasks}
    stopped_by: EnvironmentFailure | None = None
    try:
        for future in as_completed(futures):
            if future.cancelled():
                continue
            task = futures[future]
            try:
                yield Outcome(task, future.result())
            except BrokenProcessPool:
                yield _InFlight(task)
            except EnvironmentFailure as exc:  # start nothing more; hand back what is running, then stop
                stopped_by = stopped_by or exc
                for queued in futures:
                    queued.cancel()
            except Exception as exc:  # noqa: BLE001 - any failure of a task is the task's outcome
                yield Outcome(task, error=describe(exc))
    finally:
        for future in futures:  # the caller stopped early (an interrupt): do not start the rest
            future.cancel()
    if stopped_by is not None:
        raise stopped_by
