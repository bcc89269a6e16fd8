"""Figures of searches and proxy studies, and cell graphs of a genotype. Matplotlib runs headless (Agg);
nothing is shown."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pyaccel_nas.econas.genotype import CELL_INPUTS, EDGES_PER_NODE, NODES, Genotype  # noqa: E402
from pyaccel_nas.econas.proxy import Proxy  # noqa: E402
from pyaccel_nas.exec.files import save_figure_atomically  # noqa: E402

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
    save_figure_atomically(fig, path, dpi=110)
    plt.close(fig)
    return path


def draw_genotype(genotype: Genotype, path: str | Path) -> Path:
    """Draws the normal and the reduction cell of ``genotype`` side by side into a PNG at ``path``."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    _draw_cell(axes[0], "normal cell", genotype.normal, genotype.normal_concat)
    _draw_cell(axes[1], "reduction cell", genotype.reduce, genotype.reduce_concat)
    return _save(fig, path)


def plot_search(result: dict, path: str | Path) -> Path:
    """Every training the search paid for (validation accuracy against the cost spent when it finished,
    one colour per epochs trained), with the best network trained the whole proxy so far as a line and
    the point where the initial population had been trained (once) as a dotted one."""
    evaluations, full = result["evaluations"], Proxy.parse(result["proxy"]).epochs
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for epochs in sorted({e["epochs"] for e in evaluations}):
        points = [e for e in evaluations if e["epochs"] == epochs]
        ax.scatter([e["cost_macs"] for e in points], [e["val_accuracy"] for e in points], s=14, alpha=0.7,
                   label=f"trained {epochs} of {full} epochs")
    best, xs, ys = None, [], []
    for e in evaluations:
        if e["epochs"] == full and (best is None or e["val_accuracy"] > best):
            best = e["val_accuracy"]
        if best is not None:
            xs.append(e["cost_macs"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="black", linewidth=1.2, label="best so far (whole proxy)")
    initial = result.get("settings", {}).get("initial")
    first_trained = {}  # network -> the cost when its first training finished
    for e in evaluations:
        first_trained.setdefault(e["network_id"], e["cost_macs"])
    initial_done = [cost for network, cost in first_trained.items() if initial and network < initial]
    if initial_done:  # what the search found after this is what it adds to random sampling
        ax.axvline(max(initial_done), color="grey", linestyle=":", linewidth=1.2,
                   label=f"initial population ({initial}) trained")
    if evaluations:
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("training cost spent (MACs)")
    ax.set_ylabel(f"validation accuracy ({result['proxy']})")
    ax.set_title(f"{result['strategy']} search on {result['dataset']}: {result['trained_networks']} networks, "
                 f"{len(evaluations)} trainings")
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


def plot_bench_study(result: dict, path: str | Path) -> Path:
    """The study of a benchmark table (:func:`pyaccel_nas.bench.study.study_table`): Spearman with its
    bootstrap interval (a) at the final stage of the settings of each samples-vs-epochs group, (b) the same
    for each channels-vs-resolution group, (c) at every stage against the cost relative to the reference,
    with the efficient frontier."""
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.8), gridspec_kw=dict(width_ratios=[1, 1, 1.5]))
    final = {p["setting"]: p for p in result["points"] if p["epoch"] == Proxy.parse(p["setting"]).epochs}
    _draw_groups(axes[0], result["groups"]["samples_vs_epochs"], final,
                 "(a) fewer samples or fewer epochs, equal images seen", "ordered by the sample divisor s")
    _draw_groups(axes[1], result["groups"]["channels_vs_resolution"], final,
                 "(b) fewer channels or lower resolution, equal c x r", "ordered by the channel divisor c")
    _draw_cost_panel(axes[2], result)
    fig.suptitle(f"Proxy rank consistency on {result['dataset']}: {result['architectures']} architectures, ground "
                 f"truth the {result['ground_truth']} ({result['reference']}); bars: {result['confidence']:.0%} "
                 f"bootstrap intervals", fontsize=11)
    return _save(fig, path)


def _spearman_with_bars(ax, xs: list[float], points: list[dict | None], **style) -> None:
    """Spearman of each point (left out where undefined or absent) as a line in ``style``, and its bootstrap
    interval as a bar of the line's colour."""
    (line,) = ax.plot(xs, _drawable([None if p is None else p["spearman"]["value"] for p in points]), **style)
    bars = [(x, p["spearman"]["low"], p["spearman"]["high"]) for x, p in zip(xs, points)
            if p is not None and p["spearman"]["low"] is not None]
    if bars:
        ax.vlines(*zip(*bars), color=line.get_color(), lw=1.5, alpha=0.6)


def _draw_groups(ax, groups: list[dict], final: dict[str, dict], title: str, order: str) -> None:
    """Each group's settings side by side (a gap between groups), their final-stage Spearman joined."""
    ticks, labels = [], []
    for group in groups:
        first = ticks[-1] + 2 if ticks else 0  # an empty slot between two groups
        xs = list(range(first, first + len(group["settings"])))
        _spearman_with_bars(ax, xs, [final.get(s) for s in group["settings"]], marker="o", label=group["label"])
        ticks += xs
        labels += group["settings"]
    if groups:
        ax.set_xticks(ticks, labels, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no two settings of the grid\ndiffer in this trade-off only", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"setting at its final stage (3E epochs), {order}")
    ax.set_ylabel("Spearman rho")
    ax.grid(alpha=0.3)


def _draw_cost_panel(ax, result: dict) -> None:
    """Every (setting, stage) point, a setting's stages joined; the frontier as a black line over rings."""
    for setting in dict.fromkeys(p["setting"] for p in result["points"]):
        points = [p for p in result["points"] if p["setting"] == setting]
        _spearman_with_bars(ax, _drawable([p["cost_vs_reference"] for p in points]), points,
                            marker="o", ms=5, lw=0.8, ls=":", label=setting)
        for p in points:
            if p["spearman"]["value"] is not None:
                ax.annotate(f"{setting}@{p['epoch']}", (p["cost_vs_reference"], p["spearman"]["value"]),
                            textcoords="offset points", xytext=(4, 3), fontsize=6.5)
    frontier = {(f["setting"], f["epoch"]) for f in result["frontier"]}
    on = sorted((p["cost_vs_reference"], p["spearman"]["value"]) for p in result["points"]
                if (p["setting"], p["epoch"]) in frontier)
    if on:
        ax.plot(*zip(*on), color="black", lw=1.5, marker="o", ms=11, mfc="none", label="efficient frontier",
                zorder=3)
    ax.set_xscale("log")
    ax.set_title("(c) rank consistency against cost, every setting after E, 2E, 3E epochs", fontsize=10)
    ax.set_xlabel(f"training cost relative to the reference {result['reference']} (log)")
    ax.set_ylabel("Spearman rho")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3, which="both")


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
        # from 0, with the uniform 1/8 in view: autoscaling zoomed onto 0.1249-0.1251 and showed noise as trends
        ax.axhline(1 / len(result["primitives"]), color="black", lw=0.8, ls=":", label="uniform")
        ax.set_ylim(0, max(2 / len(result["primitives"]), ax.get_ylim()[1]))
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


def plot_comparison(comparison: dict, path: str | Path) -> Path:
    """Regret (points of reference test accuracy) against budget, one line per strategy (colour) and proxy
    (line style), with the 95 % intervals as bands."""
    fig, ax = plt.subplots(figsize=(8, 5))
    strategies = sorted({g["strategy"] for g in comparison["groups"]})
    proxies = sorted({g["proxy"] for g in comparison["groups"]})
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3))]
    for s_index, strategy in enumerate(strategies):
        for p_index, proxy in enumerate(proxies):
            groups = sorted((g for g in comparison["groups"] if g["strategy"] == strategy and g["proxy"] == proxy
                             and g["regret"] is not None), key=lambda g: g["budget"])
            if not groups:
                continue
            x = [g["budget"] for g in groups]
            colour = f"C{s_index}"
            ax.plot(x, [100 * g["regret"]["mean"] for g in groups], color=colour, marker="o", markersize=3,
                    linestyle=styles[p_index % len(styles)], label=f"{strategy}, {proxy}")
            ax.fill_between(x, [100 * g["regret"]["low"] for g in groups], [100 * g["regret"]["high"] for g in groups],
                            color=colour, alpha=0.12, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("budget (training cost of this many networks at the reference setting)")
    ax.set_ylabel("regret (points of reference test accuracy)")
    seeds = comparison["config"]["seeds"]
    ax.set_title(f"Search strategies on the benchmark table, {seeds} seeds each (bands: 95 % intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)
