"""Search strategies compared over many seeds at equal cost, in benchmark mode (``pyaccel-nas bench compare``).

Each strategy searches the table (:mod:`pyaccel_nas.bench.simulate`) under each proxy, for every seed and
every budget. A budget is counted in *reference networks*: the mean cost of training one of the table's
architectures at the reference setting, so "budget 4" buys what training four networks at the reference
would. Per (strategy, proxy, budget) the comparison reports, over the seeds:

- the reference test accuracy of the architecture the search returns (the best, by the reference's
  validation accuracy, of its ``final_top`` networks retrained at the reference: the EcoNAS protocol), its
  mean with a 95 % bootstrap interval, and the regret against the table's best architecture;
- the networks trained;
- ``retrain_for_90``: how many of the search's best networks (by its proxy ranking) must be retrained at the
  reference for the best architecture it trained to be among them in 90 % of the seeds (the EcoNAS paper's
  "5 rather than 20-250 networks retrained").
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

from pyaccel_nas.bench.simulate import TableEvaluator
from pyaccel_nas.bench.table import BenchTable
from pyaccel_nas.config import RunConfig, option
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.search import SearchConfig, SearchRun, execute
from pyaccel_nas.econas.strategies import STRATEGIES

COVERAGE = 0.9  # retrain_for_90: the share of seeds whose best trained network must be retrained


@dataclasses.dataclass(frozen=True)
class CompareConfig(RunConfig):
    """Which searches the comparison runs: strategies x proxies x budgets x seeds."""

    strategies: tuple[str, ...] = option("strategies, comma-separated", ("hierarchical", "evolution", "random"))
    proxies: tuple[str, ...] = option("the table's settings to search on, comma-separated (default: all)", ())
    budgets: tuple[float, ...] = option("budgets in reference networks (the mean cost of training one network "
                                        "at the reference), comma-separated", (0.5, 1.0, 2.0, 4.0, 8.0))
    seeds: int = option("seeds per (strategy, proxy, budget)", 100)
    first_seed: int = option("the seeds are first_seed, first_seed + 1, ... (fresh seeds check a tuning)", 0)
    search_preset: str = option("the search preset whose population sizes the searches use", "cpu")
    final_top: int = option("networks of each search retrained at the reference", 5)

    PRESETS = {"smoke": dict(seeds=5, budgets=(1.0, 4.0)), "default": dict()}

    def __post_init__(self) -> None:
        for name in ("strategies", "proxies", "budgets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = set(self.strategies) - set(STRATEGIES)
        if not self.strategies or unknown:
            raise ValueError(f"CompareConfig: strategies must be some of {', '.join(STRATEGIES)}, got {self.strategies}")
        if not self.budgets or not all(math.isfinite(b) and b > 0 for b in self.budgets):
            raise ValueError(f"CompareConfig: budgets must be finite and > 0, got {self.budgets}")
        if self.seeds < 2 or self.final_top < 1:
            raise ValueError("CompareConfig: `seeds` must be >= 2 and `final_top` >= 1")
        SearchConfig.preset(self.search_preset)  # an unknown preset is refused now, not after the first searches


def reference_network_cost(table: BenchTable, evaluator: TableEvaluator) -> float:
    """The mean MACs of training one (fully measured) architecture of the table at its reference setting."""
    reference = Proxy.parse(table.reference)
    return float(np.mean([a.reference.cost(reference, table.train_images, reference.epochs)
                          for a in evaluator.architectures]))


def compare(table: BenchTable, config: CompareConfig, *, search_overrides: dict | None = None,
            progress: bool = True) -> dict:
    """Runs every search and returns the comparison (``compare.json``): per group the statistics above,
    and per search its raw outcome. ``search_overrides`` replaces fields of the search preset (population
    sizes, tournament, promotions: what tuning varies)."""
    search_overrides = dict(search_overrides or {})
    evaluator = TableEvaluator(table)
    proxies = config.proxies or tuple(table.settings)
    unit = reference_network_cost(table, evaluator)
    best_test = max(a.reference.test for a in evaluator.architectures)
    runs, groups = [], []
    plan = [(s, p, b) for s in config.strategies for p in proxies for b in config.budgets]
    for strategy, proxy, budget in tqdm(plan, desc="bench compare", unit="group", disable=not progress):
        search = SearchConfig.preset(config.search_preset, **{**search_overrides, "strategy": strategy,
                                                              "proxy": proxy, "budget": budget * unit,
                                                              "cycles": 10**6, "final_top": config.final_top})
        outcomes = [_one_search(evaluator, dataclasses.replace(search, seed=seed), best_test)
                    for seed in range(config.first_seed, config.first_seed + config.seeds)]
        runs += outcomes
        groups.append({"strategy": strategy, "proxy": proxy, "budget": budget, **_summary(outcomes, config)})
    return {"table_best_test_accuracy": best_test, "reference_network_macs": unit,
            "config": dataclasses.asdict(config), "search_overrides": search_overrides, "groups": groups,
            "runs": runs}


def _one_search(evaluator: TableEvaluator, search: SearchConfig, best_test: float) -> dict:
    run = execute(evaluator.search_config(search), Path("."), evaluator, progress=False)  # writes nothing
    outcome = {"strategy": search.strategy, "proxy": search.proxy, "budget_macs": search.budget, "seed": search.seed,
               "returned_test": None, "regret": None, "trained_networks": _trained(run), "rank_of_best": None}
    ranked = _distinct(run.fully_trained())  # a table's architecture trained twice is retrained once
    if not ranked:
        return outcome
    references = [_reference(evaluator, c) for c in ranked]
    retrained = references[: search.final_top]
    returned_test = max(retrained, key=lambda m: m.val[max(m.val)]).test  # chosen by the reference's val
    truth = [m.test for m in references]
    return {**outcome, "returned_test": returned_test, "regret": best_test - returned_test,
            "rank_of_best": truth.index(max(truth)) + 1}


def _distinct(ranked: list) -> list:
    seen, distinct = set(), []
    for candidate in ranked:
        if candidate.genotype not in seen:
            seen.add(candidate.genotype)
            distinct.append(candidate)
    return distinct


def _reference(evaluator: TableEvaluator, candidate):
    return evaluator.measurement(candidate.genotype, Proxy.parse(evaluator.table.reference))


def _trained(run: SearchRun) -> int:
    return sum(c.epochs > 0 for c in run.networks)


def _summary(outcomes: list[dict], config: CompareConfig) -> dict:
    found = [o for o in outcomes if o["returned_test"] is not None]
    test = np.array([o["returned_test"] for o in found])
    regret = np.array([o["regret"] for o in found])
    ranks = [o["rank_of_best"] for o in found]
    return {
        "searches": len(outcomes), "returned": len(found),
        "test_accuracy": _mean_with_interval(test), "regret": _mean_with_interval(regret),
        "trained_networks": float(np.mean([o["trained_networks"] for o in outcomes])),
        "retrain_for_90": int(np.quantile(ranks, COVERAGE, method="higher")) if ranks else None,
    }


def _mean_with_interval(values: np.ndarray) -> dict | None:
    """The mean and its 95 % percentile-bootstrap interval (None for fewer than two values)."""
    if len(values) < 2:
        return None
    if np.all(values == values[0]):  # bootstrap of a constant: the interval is the point
        return {"mean": float(values[0]), "low": float(values[0]), "high": float(values[0])}
    interval = stats.bootstrap((values,), np.mean, method="percentile", n_resamples=2000,
                               rng=np.random.default_rng(0)).confidence_interval
    return {"mean": float(values.mean()), "low": float(interval.low), "high": float(interval.high)}


def markdown(comparison: dict) -> str:
    """The groups as a Markdown table."""
    def interval(entry: dict | None, scale: float = 1.0) -> str:
        if entry is None:
            return "-"
        return f"{entry['mean'] * scale:.2f} [{entry['low'] * scale:.2f}, {entry['high'] * scale:.2f}]"

    lines = ["| strategy | proxy | budget (ref. networks) | returned | test accuracy % [95% CI] | "
             "regret (points) [95% CI] | networks trained | retrain for 90 % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g in comparison["groups"]:
        lines.append(f"| {g['strategy']} | {g['proxy']} | {g['budget']:g} | {g['returned']}/{g['searches']} | "
                     f"{interval(g['test_accuracy'], 100)} | {interval(g['regret'], 100)} | "
                     f"{g['trained_networks']:.1f} | {g['retrain_for_90'] or '-'} |")
    return "\n".join(lines) + "\n"
