"""Measuring and drawing an MDP run: CPU inference latency, and the per-block channels and resolutions."""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyaccel_nas.exec.files import save_figure_atomically  # noqa: E402
from pyaccel_nas.mdp.export import fold_batchnorms  # noqa: E402
from pyaccel_nas.mdp.layers import MDPNet  # noqa: E402


@torch.inference_mode()
def cpu_latency_ms(models: list[MDPNet], batch: int = 64, repeats: int = 20, channels_last: bool = True,
                   threads: int | None = None) -> list[dict[str, float]]:
    """Per model, the wall time (ms) of one eval-mode forward pass over ``batch`` random inputs on the CPU,
    with ``threads`` torch threads (default: the current count): ``median``, ``min`` and ``max`` over
    ``repeats`` passes after a warm-up pass. The models take turns, pass by pass, so a change in the
    machine's load falls on all of them alike; the median is the figure to compare, the range its spread.

    With ``channels_last`` (else NCHW), inputs and weights are channels-last (channels_last_3d for 3-D
    networks): how a CPU deployment runs, oneDNN's convolutions working in it natively. It is as fast as NCHW
    for a plain network, and a pruned block's pooling and nearest upsampling are several times faster in it
    than in PyTorch's NCHW kernels."""
    def layout(m: MDPNet) -> torch.memory_format:
        if not channels_last:
            return torch.contiguous_format
        return torch.channels_last if m.config.dims == 2 else torch.channels_last_3d

    models = [copy.deepcopy(m).eval().to(memory_format=layout(m)) for m in models]
    inputs = [torch.randn(batch, m.config.in_channels, *m.config.input_size).contiguous(memory_format=layout(m))
              for m in models]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)
    try:
        for model, x in zip(models, inputs):
            model(x)
        times: list[list[float]] = [[] for _ in models]
        for _ in range(repeats):
            for model, x, spent in zip(models, inputs, times):
                start = time.perf_counter()
                model(x)
                spent.append(1000 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous_threads)
    return [{"median": statistics.median(spent), "min": min(spent), "max": max(spent)} for spent in times]


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


def plot_report(report: dict, path: str | Path) -> Path:
    """Per prunable block: channels before and after MDP (a residual block's middle and output channels side
    by side) and after the channel-only arm, if the report has one; and MDP's chosen resolution factor."""
    blocks = report["blocks"]
    arms = {"before": blocks, "MDP": blocks}
    if "channel_only" in report:
        arms["channel-only"] = report["channel_only"]["blocks"]
    layers = []  # (label, {arm: channels})
    for index, b in enumerate(blocks):
        rows = {arm: arm_blocks[index] for arm, arm_blocks in arms.items()}
        if b["type"] == "residual":
            layers.append((f"{b['block']} mid", {arm: row["mid_before" if arm == "before" else "mid_after"]
                                                 for arm, row in rows.items()}))
        layers.append((f"{b['block']} out", {arm: row["channels_before" if arm == "before" else "channels_after"]
                                             for arm, row in rows.items()}))
    fig, (channels_ax, factor_ax) = plt.subplots(2, 1, figsize=(max(6.0, 0.4 * len(layers) + 2), 6.5))
    width = 0.8 / len(arms)
    for offset, arm in enumerate(arms):
        channels_ax.bar([p + (offset - (len(arms) - 1) / 2) * width for p in range(len(layers))],
                        [widths[arm] for _, widths in layers], width, label=arm)
    channels_ax.set_xticks(range(len(layers)), [label for label, _ in layers], rotation=60, fontsize=7)
    channels_ax.set_ylabel("channels")
    channels_ax.legend()
    title = (f"{report['config']['model']} on {report['dataset']['name']}, test accuracy unpruned "
             f"{100 * report['accuracy']['before']:.2f}\nMDP: MACs /{report['macs_reduction']:.2f}, CPU speed-up x"
             f"{report['speedup']:.2f}, accuracy {100 * report['accuracy']['after']:.2f}")
    if "channel_only" in report:
        arm = report["channel_only"]
        title += (f"; channel-only: MACs /{arm['macs_reduction']:.2f}, speed-up x{arm['speedup']:.2f}, "
                  f"accuracy {100 * arm['accuracy']:.2f}")
    channels_ax.set_title(title, fontsize=9)
    reduction = [math.prod(b["factor"]) for b in blocks]
    factor_ax.bar(range(len(blocks)), reduction, 0.6, color="tab:green")
    for p, b in enumerate(blocks):
        factor_ax.annotate("x".join(map(str, b["factor"])), (p, reduction[p]), ha="center", va="bottom", fontsize=8)
    factor_ax.set_ylabel("MDP's resolution reduction\n(product of factors)")
    factor_ax.set_xticks(range(len(blocks)), [f"{b['block']} {b['type']}" for b in blocks], rotation=60, fontsize=7)
    factor_ax.set_xlabel("block")
    fig.tight_layout()
    path = Path(path)
    save_figure_atomically(fig, path, dpi=120)
    plt.close(fig)
    return path
