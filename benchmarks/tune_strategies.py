"""Tunes the search strategies' population settings on a benchmark table, then checks the tuning on fresh seeds.

    python -m benchmarks.tune_strategies --table benchmarks/results/bench_cpu_fashion-mnist/table.jsonl \
        --proxies c8r4s20e3,c4r4s10e6 --out benchmarks/results/bench_cpu_fashion-mnist/tuning

Each strategy gets the same grid of variants of the ``cpu`` search preset (initial population, tournament
size, and for the hierarchical strategy its promotions per cycle), searched over seeds 0-99 at every budget
of ``bench compare``; a variant's score is its regret averaged over proxies and budgets, a search that
returned no network counting as the regret of the table's worst architecture (returning nothing is worse
than any architecture). Each strategy's best variant is then compared with the others on seeds 100-199, so
the comparison does not reuse the seeds that chose the settings. Writes tuning.json, tuning.md and the
fresh-seed comparison (compare.json, compare.md, compare.png).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from pyaccel_nas.bench import load_table
from pyaccel_nas.bench.compare import CompareConfig, compare, markdown
from pyaccel_nas.bench.simulate import TableEvaluator
from pyaccel_nas.econas.plots import plot_comparison
from pyaccel_nas.exec.files import write_json_atomically, write_text_atomically

# what a population-based search is sensitive to; the hierarchical strategy also promotes per cycle
SHARED = {"initial": (8, 16, 32), "tournament": (3, 5)}
PROMOTE = {"promote": ((4, 2), (8, 4))}


def variants(strategy: str) -> list[dict]:
    grid = {**SHARED, **(PROMOTE if strategy == "hierarchical" else {})}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def score(comparison: dict, worst_regret: float) -> float:
    regrets = [worst_regret if r["regret"] is None else r["regret"] for r in comparison["runs"]]
    return float(np.mean(regrets))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--proxies", required=True, help="comma-separated settings of the table")
    parser.add_argument("--strategies", default="hierarchical,evolution,random")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    table, out = load_table(args.table), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tests = [a.reference.test for a in TableEvaluator(table).architectures]
    worst_regret = max(tests) - min(tests)
    proxies, strategies = tuple(args.proxies.split(",")), tuple(args.strategies.split(","))

    tuning, best = [], {}
    for strategy in strategies:
        config = CompareConfig.preset("default", strategies=(strategy,), proxies=proxies, seeds=args.seeds)
        for overrides in variants(strategy) if strategy != "random" else [{}]:
            comparison = compare(table, config, search_overrides=overrides, progress=False)
            entry = {"strategy": strategy, "overrides": overrides, "score": score(comparison, worst_regret),
                     "groups": comparison["groups"]}
            tuning.append(entry)
            print(f"{strategy} {overrides}: mean regret {100 * entry['score']:.2f} points", flush=True)
            if strategy not in best or entry["score"] < best[strategy]["score"]:
                best[strategy] = entry
    write_json_atomically(out / "tuning.json", {"table": args.table, "proxies": proxies, "seeds": args.seeds,
                                                "worst_regret": worst_regret, "variants": tuning})
    lines = ["| strategy | variant | mean regret (points), seeds 0-%d |" % (args.seeds - 1), "| --- | --- | --- |"]
    lines += [f"| {t['strategy']} | {json.dumps(t['overrides'])} | {100 * t['score']:.2f} |" for t in tuning]
    write_text_atomically(out / "tuning.md", "\n".join(lines) + "\n")

    # the chosen variants on fresh seeds, one comparison per strategy (each with its own overrides), merged
    fresh = [compare(table, CompareConfig.preset("default", strategies=(s,), proxies=proxies, seeds=args.seeds,
                                                 first_seed=args.seeds),
                     search_overrides=best[s]["overrides"], progress=False) for s in strategies]
    merged = {**fresh[0], "search_overrides": {s: best[s]["overrides"] for s in strategies},
              "groups": [g for c in fresh for g in c["groups"]], "runs": [r for c in fresh for r in c["runs"]]}
    write_json_atomically(out / "compare.json", merged)
    write_text_atomically(out / "compare.md", markdown(merged))
    plot_comparison(merged, out / "compare.png")
    print(markdown(merged), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
