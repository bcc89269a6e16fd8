"""Ray: each task a Ray task declaring the CPUs it uses, on a local instance or an existing cluster.

Ray is an optional dependency (``pip install pyaccel-nas[ray]``), imported only when this executor is
made. On a cluster, every node needs pyaccel_nas installed, and files the tasks exchange (the search's
checkpoints under ``--out``) must be on a filesystem all nodes share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pyaccel_nas.exec.base import EnvironmentFailure, Executor, Outcome, describe


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray executor needs Ray: pip install 'pyaccel-nas[ray]' (or pip install ray)") from exc
    return ray


def _call(fn: Callable[[Any], Any], task: Any, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)  # Ray reserved `threads` CPUs for this task: use those, no more
    return fn(task)


class RayExecutor(Executor):
    """Runs each task as a Ray task with ``num_cpus=threads``.

    Args:
        address: the cluster to join (``"auto"``: the one started on this machine with ``ray start``;
            ``"HOST:PORT"``: a head node). None starts a local Ray instance (which ``close`` stops), unless
            this process already called ``ray.init``, in which case that instance is used and left running.
        threads: CPUs each task declares (and the torch threads it runs).
        retries: how often a failed task (an exception, a lost worker) is run again. Ray's own retries are
            off, so there is one retry policy whatever the executor.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, threads: int = 1, retries: int = 2) -> None:
        super().__init__(retries=retries)
        if threads < 1:
            raise ValueError(f"RayExecutor: `threads` must be >= 1, got {threads}")
        ray = _import_ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, log_to_driver=False)
        self.threads = threads
        self._remote = ray.remote(num_cpus=threads, max_retries=0, retry_exceptions=False)(_call)

    def _attempt(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Outcome]:
        ray = _import_ray()
        fn_ref = ray.put(fn)
        refs = {self._remote.remote(fn_ref, task, self.threads): task for task in tasks}
        pending = list(refs)
        stopped_by: EnvironmentFailure | None = None
        try:
            while pending:
                (ref,), pending = ray.wait(pending, num_returns=1)
                try:
                    yield Outcome(refs[ref], ray.get(ref))
                except ray.exceptions.RayTaskError as exc:  # the task raised: report its own exception
                    cause = exc.cause if exc.cause is not None else exc
                    if isinstance(cause, EnvironmentFailure):  # Ray cannot tell queued from running tasks:
                        stopped_by = stopped_by or cause       # the submitted ones finish, then the batch stops
                    else:
                        yield Outcome(refs[ref], error=describe(cause))
                except ray.exceptions.RayError as exc:  # the worker or its node was lost, or ran out of memory
                    yield Outcome(refs[ref], error=describe(exc))
        finally:
            for ref in pending:  # the caller stopped early (an interrupt): do not leave work running
                ray.cancel(ref, force=True)
        if stopped_by is not None:
            raise stopped_by

    def close(self) -> None:
        if self._owns_ray:  # a Ray instance this process was already using is left to its owner
            _import_ray().shutdown()
            self._owns_ray = False
