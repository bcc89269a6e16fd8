"""Measurements: the timing helper, saved-for-backward memory, fused-vs-eager error, and machine floors."""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.cases import PASSES, Case, make_step
from pyaccel_nas.threads import busy_cores

MIB = 2**20


def last_level_cache_bytes(default: int = 16 * MIB) -> int:
    """Size of the largest CPU cache (sysfs); data moved per call up to this size can stay cached between calls."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=default)


CACHE_RESIDENT_BYTES = last_level_cache_bytes()


@dataclass
class Samples:
    seconds: list[float]  # per call, one value per sample
    faults_per_call: float = 0.0  # minor page faults: fresh pages of large allocations glibc got from the OS

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class _Clock:
    """Wall time of CPU work; for CUDA work, CUDA events on the current stream (they time the GPU's
    execution of everything launched between them, and the caller waits for the end)."""

    def __init__(self, device: str) -> None:
        self.cuda = torch.device(device).type == "cuda"

    def start(self) -> object:
        if not self.cuda:
            return time.perf_counter()
        torch.cuda.synchronize()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds_since(self, start) -> float:
        if not self.cuda:
            return time.perf_counter() - start
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def time_steps(
    steps: dict[str, Callable[[], object]],
    *,
    warmup: int = 3,
    repeats: int = 15,
    min_repeat_s: float = 2e-3,
    budget_s: float = 3.0,
    device: str = "cpu",
) -> dict[str, Samples]:
    """Seconds per call of each step, one value per sample, after ``warmup`` calls of each.

    A sample times enough back-to-back calls to last ``min_repeat_s``, so calls of a few microseconds are
    not lost in the resolution and overhead of the clock. Samples are taken round robin (one of each step,
    then the next round), so a slow spell of a shared machine hits every step alike and ratios stay fair.
    Slow steps take fewer rounds (at least 5) so that all samples fit in about ``budget_s``. On a CUDA
    ``device`` the samples are CUDA-event times of the launched work.
    """
    clock = _Clock(device)
    number = {}
    for name, step in steps.items():
        start = clock.start()
        step()
        once = max(clock.seconds_since(start), 1e-9)
        for _ in range(warmup - 1):
            step()
        number[name] = (max(1, math.ceil(min_repeat_s / once)), once)
    round_s = sum(n * once for n, once in number.values())
    rounds = max(min(repeats, 5), min(repeats, int(budget_s / round_s)))
    samples = {name: Samples([]) for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            n, sample = number[name][0], samples[name]
            faults = _minor_faults()
            start = clock.start()
            for _ in range(n):
                step()
            sample.seconds.append(clock.seconds_since(start) / n)
            sample.faults_per_call += (_minor_faults() - faults) / (n * rounds)
    return samples


def wait_until_quiet(threshold: float, timeout_s: float = 120.0) -> float | None:
    """Polls busy_cores until it is at most ``threshold`` or ``timeout_s`` passed; returns the last value."""
    deadline = time.perf_counter() + timeout_s
    while True:
        busy = busy_cores()
        if busy is None or busy <= threshold or time.perf_counter() > deadline:
            return busy


def saved_for_backward_bytes(case: Case, impl: str, device: str = "cpu") -> int:
    """Bytes a forward keeps alive for the backward: the unique storages autograd saves, plus the output.

    Inputs count where the op saves them (the fused sep_conv2d saves x and the weights and nothing else).
    """
    fn = case.fn(impl)
    args = case.inputs(requires_grad=True, device=device)
    with saved_storages() as storages:
        out = fn(*args)
    storages[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
    return sum(storages.values())


@contextmanager
def saved_storages() -> Iterator[dict[int, int]]:
    """Records, while the block runs, the unique storages autograd saves for the backward: {address: bytes}."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield storages


def max_rel_error(case: Case, impl: str = "fused", against: str = "eager", device: str = "cpu") -> dict[str, float]:
    """Per pass, max |impl - against| / max |against| over the outputs (forward) or the gradients (fwd+bwd)."""
    errors = {}
    for pass_ in PASSES:
        got, want = (make_step(case, i, pass_, device)() for i in (impl, against))
        if isinstance(want, torch.Tensor):
            got, want = (got,), (want,)
        errors[pass_] = max((g - w).abs().max().item() / max(w.abs().max().item(), 1e-30) for g, w in zip(got, want))
    return errors


def cache_resident_bytes(device: str = "cpu") -> int:
    """Data moved per call up to this size can stay cached between calls: the CPU's last-level cache, or
    a GPU's L2."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(device).L2_cache_size
    return CACHE_RESIDENT_BYTES


@dataclass(frozen=True)
class Floors:
    dram_bytes_per_s: float  # copy of a 256 MiB tensor (read + write counted); on a GPU, device to device
    cache_bytes_per_s: float  # copy of a tensor that stays in cache (CPU last-level, GPU L2) between calls
    flops_per_s: float  # float32 matmul
    cache_resident_bytes: int = CACHE_RESIDENT_BYTES

    def seconds(self, case: Case, pass_: str) -> float:
        """Lower bound of one pass: the bytes that must move or the FLOPs that must run, whichever is slower."""
        flops, nbytes = case.work(pass_)
        bandwidth = self.cache_bytes_per_s if nbytes <= self.cache_resident_bytes else self.dram_bytes_per_s
        return max(nbytes / bandwidth, flops / self.flops_per_s)


def best_time(step: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    """The fastest sample: what the machine can do at best, for floors."""
    return min(time_steps({"step": step}, warmup=2, repeats=repeats, device=device)["step"].seconds)


def copy_bandwidth(nbytes: int, repeats: int = 10, device: str = "cpu") -> float:
    """Bytes read + written per second by a copy of ``nbytes`` (device to device on a GPU)."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / best_time(lambda: dst.copy_(src), repeats, device)


def matmul_flops(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b, out=out), repeats, device)


def measure_floors(device: str = "cpu") -> Floors:
    """Bandwidths and peak FLOP/s, each the best of several samples (a floor is what the machine can do)."""
    cached = cache_resident_bytes(device)
    return Floors(
        copy_bandwidth(256 * MIB, device=device),
        copy_bandwidth(4 * MIB, repeats=30, device=device),
        matmul_flops(device=device),
        cached,
    )
