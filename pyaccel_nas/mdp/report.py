"""Measuring and drawing an MDP run: CPU inference latency, and the per-block channels and resolutions."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyaccel_nas.exec.files import save_figure_atomically  # noqa: E402
from pyaccel_nas.mdp.layers import MDPNet  # noqa: E402


@torch.inference_mode()
def cpu_latency_ms(models: list[MDPNet], batch: int = 64, repeats: int = 10, channels_last: bool = True) -> list[float]:
    """Per model, the wall time (ms) of one eval-mode forward pass over ``batch`` random inputs on the CPU
    with torch's current thread count: the fastest of ``repeats`` after a warm-up pass (on a shared machine
    the fastest run is the one least disturbed by other work; medians there measure the load). The models
    take turns, so a change in the load falls on all of them alike.

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
    for model, x in zip(models, inputs):
        model(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for model, x, spent in zip(models, inputs, times):
            start = time.perf_counter()
            model(x)
            spent.append(time.perf_counter() - start)
    return [1000 * min(spent) for spent in times]


def plot_report(report: dict, path: str | Path) -> Path:
    """Per prunable block: channels before and after (a residual block's middle and output channels side by
    side), and the chosen resolution factor."""
    blocks = report["blocks"]
    layers = []  # (label, before, after)
    for b in blocks:
        if b["type"] == "residual":
            layers.append((f"{b['block']} mid", b["mid_before"], b["mid_after"]))
        layers.append((f"{b['block']} out", b["channels_before"], b["channels_after"]))
    fig, (channels_ax, factor_ax) = plt.subplots(2, 1, figsize=(max(6.0, 0.3 * len(layers) + 2), 6.5))
    positions = range(len(layers))
    channels_ax.bar([p - 0.2 for p in positions], [before for _, before, _ in layers], 0.4, label="before")
    channels_ax.bar([p + 0.2 for p in positions], [after for _, _, after in layers], 0.4, label="after")
    channels_ax.set_xticks(list(positions), [label for label, _, _ in layers], rotation=60, fontsize=7)
    channels_ax.set_ylabel("channels")
    channels_ax.legend()
    channels_ax.set_title(
        f"{report['config']['model']} on {report['dataset']['name']}: MACs /{report['macs_reduction']:.2f}, "
        f"CPU speed-up x{report['speedup']:.2f}\ntest accuracy {100 * report['accuracy']['before']:.2f} (unpruned) "
        f"-> {100 * report['accuracy']['after']:.2f} (pruned)", fontsize=10)
    reduction = [math.prod(b["factor"]) for b in blocks]
    factor_ax.bar(range(len(blocks)), reduction, 0.6, color="tab:green")
    for p, b in enumerate(blocks):
        factor_ax.annotate("x".join(map(str, b["factor"])), (p, reduction[p]), ha="center", va="bottom", fontsize=8)
    factor_ax.set_ylabel("resolution reduction\n(product of factors)")
    factor_ax.set_xticks(range(len(blocks)), [f"{b['block']} {b['type']}" for b in blocks], rotation=60, fontsize=7)
    factor_ax.set_xlabel("block")
    fig.tight_layout()
    path = Path(path)
    save_figure_atomically(fig, path, dpi=120)
    plt.close(fig)
    return path
