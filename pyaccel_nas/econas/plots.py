"""Figures of a search: cell graphs of a genotype. Matplotlib runs headless (Agg); nothing is shown."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pyaccel_nas.econas.genotype import CELL_INPUTS, EDGES_PER_NODE, NODES, Genotype  # noqa: E402

_OP_COLOURS = {
    "none": "#bbbbbb",
    "max_pool_3x3": "#8c564b",
    "avg_pool_3x3": "#e377c2",
    "skip_connect": "#7f7f7f",
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#17becf",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#bcbd22",
}


def _node_positions() -> dict[str, tuple[float, float]]:
    positions = {"c_{k-2}": (0.0, 1.0), "c_{k-1}": (0.0, -1.0), "c_{k}": (NODES + 1.5, 0.0)}
    for node in range(NODES):
        positions[str(node + CELL_INPUTS)] = (node + 1.0, 1.2 if node % 2 == 0 else -1.2)
    return positions


def _name(index: int) -> str:
    return ("c_{k-2}", "c_{k-1}")[index] if index < CELL_INPUTS else str(index)


def _draw_cell(ax, title: str, edges, concat) -> None:
    pos = _node_positions()
    for index, (op, source) in enumerate(edges):
        target = str(index // EDGES_PER_NODE + CELL_INPUTS)
        (x0, y0), (x1, y1) = pos[_name(source)], pos[target]
        # the two edges of a node may share a source: bend them apart
        bend = 0.25 if index % EDGES_PER_NODE else -0.25
        ax.annotate(
            "", xy=(x1, y1), xytext=(x0, y0),
            arrowprops=dict(arrowstyle="-|>", color=_OP_COLOURS[op], lw=2, shrinkA=14, shrinkB=14,
                            connectionstyle=f"arc3,rad={bend}"),
        )
        # the midpoint of matplotlib's arc3 curve: the chord's midpoint, pushed sideways by rad / 2
        label_x, label_y = (x0 + x1) / 2 + bend / 2 * (y1 - y0), (y0 + y1) / 2 - bend / 2 * (x1 - x0)
        ax.text(label_x, label_y, op, fontsize=7, ha="center", va="center",
                color=_OP_COLOURS[op], bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    for node in concat:
        (x0, y0), (x1, y1) = pos[str(node)], pos["c_{k}"]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1, ls="--", shrinkA=14, shrinkB=14))
    for name, (x, y) in pos.items():
        colour = "#ffd27f" if name.startswith("c_") else "#a6cee3"
        ax.text(x, y, f"${name}$" if name.startswith("c_") else name, ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round,pad=0.4", fc=colour, ec="#333333"))
    ax.set_title(title)
    ax.set_xlim(-0.7, NODES + 2.2)
    ax.set_ylim(-2.0, 2.0)
    ax.axis("off")


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_genotype(genotype: Genotype, path: str | Path) -> Path:
    """Draws the normal and the reduction cell of ``genotype`` side by side into a PNG at ``path``."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    _draw_cell(axes[0], "normal cell", genotype.normal, genotype.normal_concat)
    _draw_cell(axes[1], "reduction cell", genotype.reduce, genotype.reduce_concat)
    return _save(fig, path)


def plot_search(result: dict, path: str | Path) -> Path:
    """Best validation accuracy (of networks trained the whole proxy) against training cost, per cycle."""
    history = [h for h in result["history"] if h["best_val_accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if history:
        ax.step([h["cost_macs"] for h in history], [h["best_val_accuracy"] for h in history], where="post",
                marker="o", label=f"{result['strategy']} ({result['proxy']})")
        ax.legend(loc="lower right")
    ax.set_xlabel("training cost (MACs)")
    ax.set_ylabel("best validation accuracy")
    ax.set_title(f"{result['strategy']} search on {result['dataset']}: {result['trained_networks']} networks trained")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _drawable(accuracies: list[float | None]) -> list[float]:
    """Accuracies to plot: a failed evaluation (None) becomes NaN, which matplotlib leaves out."""
    return [float("nan") if a is None else a for a in accuracies]


def plot_study(result: dict, path: str | Path) -> Path:
    """One scatter per proxy: its validation accuracy against the ground truth's, with rho and tau."""
    proxies = result["proxies"]
    columns = min(3, len(proxies))
    rows = -(-len(proxies) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.8 * rows), squeeze=False)
    truth = _drawable(result["ground_truth"]["val_accuracy"])
    for ax, (name, entry) in zip(axes.flat, proxies.items()):
        ax.scatter(truth, _drawable(entry["val_accuracy"]), s=22)
        rho, tau = (("-" if v is None else f"{v:.2f}") for v in (entry["spearman"], entry["kendall"]))
        ax.set_title(f"{name}: rho {rho}, tau {tau}\n"
                     f"cost {entry['cost_vs_ground_truth']:.3f} x ground truth", fontsize=9)
        ax.set_xlabel(f"accuracy at {result['ground_truth']['setting']}")
        ax.set_ylabel(f"accuracy at {name}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(proxies):]:
        ax.axis("off")
    return _save(fig, path)


def plot_alphas(result: dict, path: str | Path) -> Path:
    """A DARTS search: per cell type, each operation's softmaxed alpha averaged over the edges, per epoch;
    and the supernet's validation accuracy per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    epochs = [entry["epoch"] for entry in result["alphas"]]
    for ax, cell in zip(axes, ("normal", "reduce")):
        for k, op in enumerate(result["primitives"]):
            mean = [sum(row[k] for row in entry[cell]) / len(entry[cell]) for entry in result["alphas"]]
            ax.plot(epochs, mean, marker="o", ms=3, color=_OP_COLOURS[op], label=op)
        ax.set_title(f"{cell} cell: softmax(alpha), mean over edges")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    axes[2].plot([h["epoch"] for h in result["history"]], [h["val_accuracy"] for h in result["history"]],
                 marker="o")
    axes[2].set_title(f"supernet validation accuracy ({result['proxy']})")
    axes[2].grid(alpha=0.3)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)
