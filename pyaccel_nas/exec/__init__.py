"""Executors: run a batch of independent evaluation tasks and hand back each outcome as it finishes.

Search strategies use only this interface (``executor.run(fn, tasks)`` -> iterator of
:class:`Outcome`, in completion order, failures retried), so where the work runs is a choice of
executor, not of strategy:

- ``inline``: in this process, one task after another (the default);
- ``process``: a local pool of worker processes, one per core by default;
- ``ray``: Ray tasks on a local instance or a cluster (optional dependency, imported only when chosen).
"""

from pyaccel_nas.exec.base import EnvironmentFailure, Executor, Outcome
from pyaccel_nas.exec.inline import InlineExecutor
from pyaccel_nas.exec.process import ProcessExecutor

EXECUTORS = ("inline", "process", "ray")


def make_executor(name: str, *, workers: int | None = None, address: str | None = None, threads: int = 1,
                  retries: int = 2) -> Executor:
    """The executor ``name`` as the CLI configures it: ``workers`` for the process pool, ``address`` for Ray,
    ``threads`` each task runs (and, for Ray, declares), ``retries`` of a failed task."""
    if workers is not None and name != "process":
        raise ValueError(f"`workers` applies to the process executor only, not {name!r}")
    if address is not None and name != "ray":
        raise ValueError(f"`address` applies to the ray executor only, not {name!r}")
    if name == "inline":
        return InlineExecutor(retries=retries)
    if name == "process":
        return ProcessExecutor(workers, threads=threads, retries=retries)
    if name == "ray":
        from pyaccel_nas.exec.ray_tasks import RayExecutor

        return RayExecutor(address, threads=threads, retries=retries)
    raise ValueError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "EnvironmentFailure", "Executor", "InlineExecutor", "Outcome", "ProcessExecutor", "make_executor"]
