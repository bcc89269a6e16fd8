"""CPU inference latency of MDP networks and of their blocks' resolution branches, as deployed.

Every measurement times its candidates in turns, pass by pass, so a change in the machine's load falls on
all of them alike; the median is the figure to compare, min and max its spread.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pyaccel_nas.mdp.export import fold_batchnorms, fold_block_batchnorms
from pyaccel_nas.mdp.layers import BLOCK_MODULES, MDPNet
from pyaccel_nas.mdp.losses import multi_resolution_inputs
from pyaccel_nas.mdp.models import plain
from pyaccel_nas.nn import MultiResSum


def _layout(dims: int, channels_last: bool) -> torch.memory_format:
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if dims == 2 else torch.channels_last_3d


@torch.inference_mode()
def interleaved_ms(calls: Sequence[Callable[[], object]], repeats: int, threads: int | None = None
                   ) -> list[dict[str, float]]:
    """Per call, ``median``, ``min`` and ``max`` wall time (ms) over ``repeats`` passes after a warm-up
    pass, the calls taking turns, with ``threads`` torch threads (default: the current count)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)
    try:
        for call in calls:
            call()
        times: list[list[float]] = [[] for _ in calls]
        for _ in range(repeats):
            for call, spent in zip(calls, times):
                start = time.perf_counter()
                call()
                spent.append(1000 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous_threads)
    return [{"median": statistics.median(spent), "min": min(spent), "max": max(spent)} for spent in times]


def cpu_latency_ms(models: list[MDPNet], batch: int = 64, repeats: int = 20, channels_last: bool = True,
                   threads: int | None = None) -> list[dict[str, float]]:
    """Per model, the wall time (ms) of one eval-mode forward pass over ``batch`` random inputs on the CPU,
    with ``threads`` torch threads (default: the current count): :func:`interleaved_ms`, the models taking
    turns.

    With ``channels_last`` (else NCHW), inputs and weights are channels-last (channels_last_3d for 3-D
    networks): how a CPU deployment runs, oneDNN's convolutions working in it natively. It is as fast as NCHW
    for a plain network, and a pruned block's pooling and nearest upsampling are several times faster in it
    than in PyTorch's NCHW kernels."""
    def layout(m: MDPNet) -> torch.memory_format:
        return _layout(m.config.dims, channels_last)

    models = [copy.deepcopy(m).eval().to(memory_format=layout(m)) for m in models]
    inputs = [torch.randn(batch, m.config.in_channels, *m.config.input_size).contiguous(memory_format=layout(m))
              for m in models]
    return interleaved_ms([lambda m=m, x=x: m(x) for m, x in zip(models, inputs)], repeats, threads)


def latency_runs_ms(models: dict[str, MDPNet], batch: int, repeats: int, threads: Sequence[int]) -> list[dict]:
    """Every model's CPU latency with BatchNorms folded, as deployed: per thread count in ``threads`` and
    layout (channels-last, then NCHW), the :func:`cpu_latency_ms` statistics of each model by name, the
    models taking turns."""
    deployed = [fold_batchnorms(model) for model in models.values()]
    runs = []
    for count in threads:
        for layout, channels_last in (("channels_last", True), ("nchw", False)):
            measured = cpu_latency_ms(deployed, batch, repeats, channels_last, count)
            runs.append({"threads": count, "layout": layout, "ms": dict(zip(models, measured))})
    return runs


def headline_latency_ms(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Per model of :func:`latency_runs_ms`' ``runs``: ``cpu_latency_ms`` (channels-last) and
    ``cpu_latency_ms_nchw``, the medians at the last thread count measured."""
    channels_last, nchw = runs[-2], runs[-1]
    return {name: {"cpu_latency_ms": channels_last["ms"][name]["median"],
                   "cpu_latency_ms_nchw": nchw["ms"][name]["median"]} for name in channels_last["ms"]}




def branch_latency_costs(model: MDPNet, batch: int = 64, repeats: int = 10) -> dict[MultiResSum, torch.Tensor]:
    """Per multi-resolution block of ``model``, keyed by its ``MultiResSum`` as
    :func:`~pyaccel_nas.mdp.losses.branch_costs`: the CPU time of the block run at each of its resolutions
    alone, as a pruned block runs (pool, convolutions with BatchNorms folded, nearest upsampling, shortcut),
    channels-last at ``batch``, as a fraction of the whole plain network's time; with one thread, as the
    cpu preset's runs measure. For ``L_cost``, in place of the MACs: resolution is then given up where it
    saves time on this machine, not only MACs."""
    example = torch.zeros(1, model.config.in_channels, *model.config.input_size)
    shapes = {block: x.shape[1:] for block, x in multi_resolution_inputs(model, example).items()}
    blocks = [(index, block) for index, block in model.prunable_blocks() if block in shapes]
    dims = model.config.dims
    network = fold_batchnorms(MDPNet(plain(model.config)))
    calls = [_call(network, torch.randn(batch, model.config.in_channels, *model.config.input_size))]
    for index, block in blocks:
        config = model.config.blocks[index]
        for factor in config.factors:
            single = BLOCK_MODULES[config.type](shapes[block][0], dataclasses.replace(
                config, factors=(factor,), gated=False), dims).eval()
            calls.append(_call(fold_block_batchnorms(single), torch.randn(batch, *shapes[block])))
    timed = iter(t["median"] for t in interleaved_ms(calls, repeats, threads=1))
    network_ms = next(timed)
    return {block.mix: torch.tensor([next(timed) / network_ms for _ in block.factors], dtype=torch.float64)
            for _, block in blocks}


def _call(module: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    layout = _layout(x.dim() - 2, channels_last=True)
    module, x = module.to(memory_format=layout), x.contiguous(memory_format=layout)
    return lambda: module(x)
