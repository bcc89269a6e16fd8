"""How many torch threads a run uses: one rule for every entry point that trains in its own process.

On a machine shared with other busy processes, OpenMP threads that outnumber the idle cores wait for each
other at every op's barrier while the scheduler runs someone else: on 2 cores beside two busy-looping
processes, a 2-thread training step took 2.3-3.4x its quiet time (one step of eight 15 s), a 1-thread step
about 2x the quiet 2-thread time, the fair share of one thread beside two (benchmarks/NOTES.md, "Threads by
the idle cores"). So a run takes as many threads as there are idle cores when it starts:

1. ``--threads N`` (the run's own flag) when given;
2. else ``OMP_NUM_THREADS`` when set (the standard knob; torch reads it too);
3. else the cores this process may run on (its affinity mask) minus the cores other processes kept busy
   over :data:`SAMPLE_SECONDS` (``/proc/stat``), rounded, at least 1 (all of them where ``/proc`` is absent).

The cost is reproducibility: CPU reductions split over another thread count round differently, so a run
started on a busy machine does not repeat bit for bit on a quiet one. Runs record the count they used
(``provenance``); pin ``--threads`` to repeat one exactly. EcoNAS evaluations are the exception: their
thread count is part of the search's configuration (``threads``, 1 by default, since results depend on it)
and the executor runs ``cores / threads`` of them side by side.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

SAMPLE_SECONDS = 0.2  # 20 of /proc/stat's 10 ms ticks: enough to see a busy process, short beside a run


class OtherLoad:
    """Cores kept busy by other processes since construction: all busy CPU time (``/proc/stat``) minus this
    process's own. Linux only (elsewhere :meth:`cores` is None)."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, int, int] | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on
        except OSError:
            return None
        return time.perf_counter(), sum(ticks) - ticks[3] - ticks[4], int(own[11]) + int(own[12])  # utime + stime

    def cores(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None:
            return None
        (t0, busy0, own0), (t1, busy1, own1) = self._start, end
        return max(0, (busy1 - busy0) - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / max(t1 - t0, 1e-9)


def busy_cores(seconds: float = 1.0) -> float | None:
    """Cores other processes use over the next ``seconds`` (this one sleeps meanwhile); None off Linux."""
    load = OtherLoad()
    time.sleep(seconds)
    return load.cores()


def available_cores() -> int:
    """The cores this process may run on: its affinity mask (which containers restrict), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str  # how the count was chosen, for the run's record and its log line

    def to_dict(self) -> dict:
        return {"threads": self.threads, "reason": self.reason}


def choose_threads(requested: int | None = None) -> ThreadChoice:
    """The thread count of the rule above (ValueError for a requested count below 1)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return ThreadChoice(requested, "--threads")
    from_environment = os.environ.get("OMP_NUM_THREADS", "").strip()
    if from_environment.isdigit() and int(from_environment) >= 1:
        return ThreadChoice(int(from_environment), f"OMP_NUM_THREADS={from_environment}")
    cores = available_cores()
    busy = busy_cores(SAMPLE_SECONDS)
    if busy is None:
        return ThreadChoice(cores, f"all {cores} usable cores (no /proc/stat to see other load)")
    threads = max(1, min(cores, round(cores - busy)))
    return ThreadChoice(threads, f"{cores} usable cores, {busy:.1f} of them kept busy by other processes at start")


def use_threads(requested: int | None = None) -> ThreadChoice:
    """:func:`choose_threads`, applied to this process (``torch.set_num_threads``)."""
    choice = choose_threads(requested)
    torch.set_num_threads(choice.threads)
    return choice
