"""Drawing an MDP run: the per-block channels of both arms and MDP's resolutions."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyaccel_nas.exec.files import save_figure_atomically  # noqa: E402


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
