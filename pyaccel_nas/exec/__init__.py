"""Executors: run a batch of independent evaluation tasks and hand back each result as it finishes.

Search strategies use only this interface (``executor.run(fn, tasks)`` -> iterator of results, in
completion order), so where the work runs is a choice of executor, not of strategy.
"""

from pyaccel_nas.exec.inline import InlineExecutor

EXECUTORS = {"inline": InlineExecutor}

__all__ = ["EXECUTORS", "InlineExecutor"]
