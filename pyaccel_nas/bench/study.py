"""The proxy rank-consistency study of a benchmark table (``pyaccel-nas bench study``).

For every setting of the table's grid and every epoch it was scored at (E, 2E and 3E), the study gives
Spearman's rho and Kendall's tau between the setting's validation accuracies and the ground truth, each
with a 95% percentile bootstrap interval over architectures, and the setting's training cost up to that
epoch relative to the reference's. The ground truth is the reference's *test* accuracy: its test split
(10,000 images on CIFAR-10 and Fashion-MNIST) is larger than the validation split, so it ranks the
architectures with less noise, and the study selects no architecture, so scoring on test leaks into no
choice. An architecture whose evaluation failed under the setting or the reference is left out.

From these points the study derives the efficient frontier (the points no cheaper-or-equal point matches
or beats in Spearman) and the groups of settings that answer the EcoNAS questions at equal budget: fewer
samples or fewer epochs at equal images seen, fewer channels or lower resolution at equal cost; within each
group, the difference in Spearman between every two settings, with a paired bootstrap interval.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from statistics import fmean

import numpy as np
from scipy import stats

from pyaccel_nas.bench.table import BenchTable, Measurement
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.study import rank_correlation
from pyaccel_nas.exec.files import write_json_atomically, write_text_atomically

CONFIDENCE = 0.95
STATISTICS = {"spearman": stats.spearmanr, "kendall": stats.kendalltau}


def study_table(table: BenchTable, *, resamples: int = 2000, seed: int = 0) -> dict:
    """The study of ``table`` as plain data (see the module's docstring); ``resamples`` bootstrap resamples
    per interval, drawn with a numpy Generator seeded ``seed``."""
    if resamples < 1:
        raise ValueError(f"the bootstrap needs at least 1 resample, got {resamples}")
    points = [_point(table, name, epoch, resamples, seed) for name in table.settings
              for epoch in _recorded_epochs(table, name)]
    frontier = [(p["setting"], p["epoch"]) for p in efficient_frontier(points)]
    groups = setting_groups(table.settings)
    for point in points:
        point["on_frontier"] = (point["setting"], point["epoch"]) in frontier
    return {
        "dataset": table.header["config"]["dataset"],
        "reference": table.reference,
        "ground_truth": "test accuracy under the reference",
        "architectures": len(table.architectures),
        "complete": table.complete,
        "confidence": CONFIDENCE,
        "resamples": resamples,
        "seed": seed,
        "points": points,
        "frontier": [{"setting": setting, "epoch": epoch} for setting, epoch in frontier],
        "groups": groups,
        "differences": paired_differences(table, groups, resamples, seed),
    }


def _recorded_epochs(table: BenchTable, name: str) -> list[int]:
    measured = [a.settings[name] for a in table.architectures if a.settings[name] is not None]
    return sorted({epoch for measurement in measured for epoch in measurement.val})


def _point(table: BenchTable, name: str, epoch: int, resamples: int, seed: int) -> dict:
    """One setting after ``epoch`` epochs, over the architectures scored there and under the reference."""
    proxy, reference = Proxy.parse(name), Proxy.parse(table.reference)
    pairs: list[tuple[Measurement, Measurement]] = [
        (a.settings[name], a.reference) for a in table.architectures if _scored(a.settings[name], epoch, a.reference)]
    scores, truth = [m.val[epoch] for m, _ in pairs], [r.test for _, r in pairs]
    costs = [m.cost(proxy, table.train_images, epoch) / r.cost(reference, table.train_images, reference.epochs)
             for m, r in pairs]
    return {"setting": name, "epoch": epoch, "architectures": len(pairs),
            "cost_vs_reference": fmean(costs) if costs else None,
            **{key: _with_interval(statistic, scores, truth, resamples, seed) for key, statistic in STATISTICS.items()}}


def _scored(measurement: Measurement | None, epoch: int, reference: Measurement | None) -> bool:
    """Whether an architecture has a validation accuracy after ``epoch`` and a ground truth (None: failed)."""
    return (measurement is not None and epoch in measurement.val
            and reference is not None and reference.test is not None)


def _with_interval(statistic, x: list[float], y: list[float], resamples: int, seed: int) -> dict:
    """``{"value", "low", "high"}``: the correlation (None where undefined) and its percentile bootstrap
    interval, resampling architectures (pairs). Every interval draws from a Generator seeded ``seed``, so
    intervals over the same architectures use the same resamples, and each one is reproducible alone. The
    interval is None where some resample ranks every architecture equal (likely with 6 architectures
    or fewer: scipy then gives NaN bounds)."""
    return _bootstrapped(lambda a, b: rank_correlation(statistic, a, b), (x, y), resamples, seed)


def _bootstrapped(function, samples: tuple[list[float], ...], resamples: int, seed: int) -> dict:
    """``function(*samples)`` (None where undefined) with its percentile bootstrap interval, resampling the
    architectures: the same indices in every sequence of ``samples``."""
    with warnings.catch_warnings():
        # a constant ranking makes the correlation NaN, reported as None: the warning adds nothing
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        value = function(*samples)
        if value is None:
            return {"value": None, "low": None, "high": None}
        interval = stats.bootstrap(samples, lambda *resampled: _nan_if_none(function(*resampled)), paired=True,
                                   vectorized=False, n_resamples=resamples, confidence_level=CONFIDENCE,
                                   method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    low, high = float(interval.low), float(interval.high)
    if np.isnan(low) or np.isnan(high):
        return {"value": value, "low": None, "high": None}
    return {"value": value, "low": low, "high": high}


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def paired_differences(table: BenchTable, groups: dict[str, list[dict]], resamples: int, seed: int) -> list[dict]:
    """For each pair of settings within a group of :func:`setting_groups`, each at its last recorded epoch:
    the Spearman of the first minus that of the second, over the architectures scored under both, with a
    paired bootstrap interval (both correlations computed on the same resampled architectures). Whether
    one trade-off ranks better than the other is this difference's sign; an interval that holds 0 says the
    table cannot tell them apart."""
    differences = []
    for question, question_groups in groups.items():
        for group in question_groups:
            for first, second in itertools.combinations(group["settings"], 2):
                last = {name: _recorded_epochs(table, name)[-1] for name in (first, second)}
                rows = [(a.settings[first].val[last[first]], a.settings[second].val[last[second]], a.reference.test)
                        for a in table.architectures
                        if all(_scored(a.settings[name], last[name], a.reference) for name in (first, second))]
                columns = tuple(map(list, zip(*rows))) if rows else ([], [], [])

                def difference(x, y, truth):
                    rho_x, rho_y = (rank_correlation(stats.spearmanr, v, truth) for v in (x, y))
                    return None if rho_x is None or rho_y is None else rho_x - rho_y

                differences.append({"question": question, "group": group["label"], "first": first,
                                    "second": second, "epochs": [last[first], last[second]],
                                    "architectures": len(rows),
                                    "spearman_difference": _bootstrapped(difference, columns, resamples, seed)})
    return differences


def efficient_frontier(points: list[dict]) -> list[dict]:
    """The points with a Spearman and a cost that no other point dominates (costs at most as much and ranks
    at least as well, one of them strictly), cheapest first."""
    scored = [p for p in points if p["spearman"]["value"] is not None and p["cost_vs_reference"] is not None]

    def dominates(q: dict, p: dict) -> bool:
        (q_cost, q_rho), (p_cost, p_rho) = _cost_and_rho(q), _cost_and_rho(p)
        return q_cost <= p_cost and q_rho >= p_rho and (q_cost, q_rho) != (p_cost, p_rho)

    return sorted((p for p in scored if not any(dominates(q, p) for q in scored)), key=_cost_and_rho)


def _cost_and_rho(point: dict) -> tuple[float, float]:
    return point["cost_vs_reference"], point["spearman"]["value"]


def setting_groups(settings: list[str]) -> dict[str, list[dict]]:
    """The settings that differ in one trade-off only, each group with at least 2 settings and a label:

    - ``samples_vs_epochs``: the same channels and resolution and the same images seen, epochs / s (s0 =
      the whole training set; compared as a fraction, so a training-set size that s does not divide does
      not split a group), differing s; ordered by s.
    - ``channels_vs_resolution``: the same samples and epochs and the same c x r (0 counting as 1), differing
      c; ordered by c.
    """
    def samples_vs_epochs(p: Proxy):
        return p.channels, p.resolution, Fraction(p.epochs, p.samples or 1)

    def channels_vs_resolution(p: Proxy):
        return p.samples, p.epochs, (p.channels or 1) * (p.resolution or 1)

    return {
        "samples_vs_epochs": [
            {"label": f"c{c}r{r}, {float(passes):g} x the training set", "settings": members}
            for (c, r, passes), members in _grouped(settings, samples_vs_epochs, lambda p: p.samples)],
        "channels_vs_resolution": [
            {"label": f"s{s}e{e}, c x r = {product}", "settings": members}
            for (s, e, product), members in _grouped(settings, channels_vs_resolution, lambda p: p.channels)],
    }


def _grouped(settings: list[str], key, order) -> list[tuple[tuple, list[str]]]:
    groups = defaultdict(list)
    for text in settings:
        groups[key(Proxy.parse(text))].append(text)
    return [(k, sorted(members, key=lambda text: order(Proxy.parse(text))))
            for k, members in groups.items() if len(members) >= 2]


def study_markdown(result: dict) -> str:
    """The study's points as a Markdown table, under a line saying what they are measured against."""
    level = f"{result['confidence']:.0%}"
    lines = [f"Rank consistency against the {result['ground_truth']} ({result['reference']}), "
             f"{result['architectures']} architectures on {result['dataset']}"
             f"{'' if result['complete'] else ' (unfinished table)'}; {level} bootstrap intervals over "
             f"architectures ({result['resamples']} resamples).",
             "",
             f"| setting | epoch | cost vs reference | Spearman [{level} CI] | Kendall [{level} CI] | n "
             "| on frontier |",
             "| --- | ---: | ---: | --- | --- | ---: | :---: |"]
    for p in result["points"]:
        cost = "n/a" if p["cost_vs_reference"] is None else f"{p['cost_vs_reference']:.3g}"
        lines.append(f"| {p['setting']} | {p['epoch']} | {cost} | {_estimate(p['spearman'])} | "
                     f"{_estimate(p['kendall'])} | {p['architectures']} | {'yes' if p['on_frontier'] else ''} |")
    if result["differences"]:
        lines += ["", f"Trade-offs at equal budget, each setting at its last epoch: Spearman of the first minus the "
                      f"second, with a paired {level} bootstrap interval (an interval holding 0: no difference shown).",
                  "", "| question | group | first - second | Spearman difference [CI] | n |", "| --- | --- | --- | --- | ---: |"]
        for d in result["differences"]:
            lines.append(f"| {d['question'].replace('_', ' ')} | {d['group']} | {d['first']} - {d['second']} | "
                         f"{_estimate(d['spearman_difference'])} | {d['architectures']} |")
    lines += ["", "n/a: undefined, over fewer than 3 architectures or a ranking of all equal; an interval also where "
                  "a resample ranks all equal (likely with 6 architectures or fewer)."]
    return "\n".join(lines) + "\n"


def _estimate(entry: dict) -> str:
    if entry["value"] is None:
        return "n/a"
    interval = "[n/a]" if entry["low"] is None else f"[{entry['low']:.3f}, {entry['high']:.3f}]"
    return f"{entry['value']:.3f} {interval}"


def write_study(result: dict, out: str | Path) -> list[Path]:
    """Writes ``study.json``, ``study.md`` and ``study.png`` into the directory ``out``; returns their paths."""
    from pyaccel_nas.econas.plots import plot_bench_study

    out = Path(out)
    paths = [out / "study.json", out / "study.md", out / "study.png"]
    write_json_atomically(paths[0], result)
    write_text_atomically(paths[1], study_markdown(result))
    plot_bench_study(result, paths[2])
    return paths
