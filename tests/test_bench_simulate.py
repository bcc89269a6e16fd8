"""Benchmark mode (searches whose training is a table look-up) and the strategy comparison built on it, on a
small synthetic table whose every number is known; and the configuration system the bench commands use."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pyaccel_nas.bench.build import BenchConfig, sample_architectures
from pyaccel_nas.bench.compare import CompareConfig, compare
from pyaccel_nas.bench.simulate import TableEvaluator
from pyaccel_nas.bench.table import TABLE_FORMAT, load_table, write_table
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.search import SearchConfig, execute, plan_search, run_search, summarise

SETTINGS = ("c4r0s0e3", "c4r2s2e6")
REFERENCE = "c2r0s0e6"
TRAIN_IMAGES = 1000
ARCHITECTURES = 12


def accuracy(arch: int, setting: int, epoch: int) -> float:
    """A number that names what was looked up: the architecture, the setting and the epoch."""
    return round(0.1 + arch / 100 + setting / 1000 + epoch / 10000, 6)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    genotypes = sample_architectures(ARCHITECTURES, seed=3)
    rows = []
    for arch, genotype in enumerate(genotypes):
        settings = {}
        for index, name in enumerate(SETTINGS):
            epochs = Proxy.parse(name).epochs
            settings[name] = {"val": {str(e): accuracy(arch, index, e) for e in range(epochs // 3, epochs + 1, epochs // 3)},
                              "macs_per_image": 1000 * (arch + 1) * (index + 1), "params": 10, "seconds": 1.0}
        rows.append({"id": arch, "genotype": genotype.to_dict(), "settings": settings,
                     "reference": {"setting": REFERENCE, "val": {"6": 0.5 + arch / 100}, "test": 0.4 + (arch % 5) / 100,
                                   "macs_per_image": 50_000, "params": 100, "seconds": 10.0}})
    config = BenchConfig.preset("smoke", settings=SETTINGS, reference=REFERENCE, architectures=ARCHITECTURES)
    header = {"format": TABLE_FORMAT, "complete": True, "config": {**config.__dict__, "settings": list(SETTINGS)},
              "train_images": TRAIN_IMAGES, "built_with": {}}
    path = tmp_path_factory.mktemp("table") / "table.jsonl"
    write_table(path, header, rows)
    return path


@pytest.fixture(scope="module")
def evaluator(table_path):
    return TableEvaluator(load_table(table_path))


def search(evaluator, **overrides):
    config = evaluator.search_config(
        SearchConfig.preset("smoke", **{"proxy": SETTINGS[0], "cycles": 4, "final_top": 2, **overrides}))
    return execute(config, Path("unused: benchmark mode writes nothing"), evaluator, progress=False)


@pytest.mark.parametrize("strategy", ["hierarchical", "evolution", "random"])
def test_benchmark_mode_looks_accuracies_up_and_charges_the_tables_cost(evaluator, strategy):
    run = search(evaluator, strategy=strategy)
    ids = {a.genotype: a.id for a in evaluator.architectures}
    trained = [c for c in run.networks if c.epochs > 0]
    assert trained
    for candidate in trained:
        assert candidate.genotype in ids  # architectures are the table's
        assert candidate.val_accuracy == accuracy(ids[candidate.genotype], 0, candidate.epochs)
    proxy = Proxy.parse(SETTINGS[0])
    expected = sum(proxy.cost(1000 * (ids[c.genotype] + 1), TRAIN_IMAGES, epochs=c.epochs) for c in trained)
    assert run.cost_macs == expected
    assert run.cost_epochs == sum(c.epochs for c in trained)


def test_the_hierarchical_tiers_see_the_tables_staged_accuracies(evaluator):
    run = search(evaluator, strategy="hierarchical", cycles=6)
    assert {c.epochs for c in run.networks if c.epochs} == {1, 2, 3}  # E, 2E and 3E were all looked up


@pytest.mark.parametrize("strategy", ["hierarchical", "evolution", "random"])
def test_the_plan_printed_before_a_search_bounds_what_it_trains(evaluator, strategy):
    run = search(evaluator, strategy=strategy)
    plan = plan_search(run.config, evaluator)
    trained = sum(c.epochs > 0 for c in run.networks)
    if strategy == "hierarchical":  # promotions can find fewer networks in a tier than they ask for
        assert trained == plan.networks and 0 < run.cost_epochs <= plan.network_epochs
    else:
        assert (trained, run.cost_epochs) == (plan.networks, plan.network_epochs)
    # the MACs are the network-epochs at the mean of the table's sampled architectures: 1000-12000 per image
    per_epoch = Proxy.parse(SETTINGS[0]).cost(1, TRAIN_IMAGES, epochs=1)
    assert 1000 * per_epoch * plan.network_epochs <= plan.training_macs <= 12000 * per_epoch * plan.network_epochs
    assert plan.final_macs == 2 * Proxy.parse(REFERENCE).cost(50_000, TRAIN_IMAGES)
    assert f"at most {plan.networks} networks" in plan.describe()
    assert "(its budget)" in plan_search(dataclasses.replace(run.config, budget=1.0), evaluator).describe()


@pytest.mark.parametrize("strategy", ["hierarchical", "evolution"])
def test_the_result_lists_every_training_in_the_order_it_was_paid(evaluator, strategy):
    run = search(evaluator, strategy=strategy, cycles=6)
    evaluations = summarise(run)["evaluations"]
    # a promoted network's record holds its epochs in total; the cost counts the epochs each training added
    assert sum(e["epochs"] - before for e, before in _epochs_before(evaluations)) == run.cost_epochs
    costs = [e["cost_macs"] for e in evaluations]
    assert costs == sorted(costs) and costs[-1] == run.cost_macs and len(set(costs)) == len(costs)
    full = [e["val_accuracy"] for e in evaluations if e["epochs"] == run.proxy.epochs]
    assert max(full) == run.best().val_accuracy


def _epochs_before(evaluations):
    seen = {}
    for e in evaluations:
        yield e, seen.get(e["network_id"], 0)
        seen[e["network_id"]] = e["epochs"]


def test_benchmark_searches_are_deterministic_per_seed(evaluator, tmp_path):
    first = run_search(search_config(evaluator, seed=5), tmp_path / "a", evaluator=evaluator, progress=False)
    again = run_search(search_config(evaluator, seed=5), tmp_path / "b", evaluator=evaluator, progress=False)
    other = run_search(search_config(evaluator, seed=6), tmp_path / "c", evaluator=evaluator, progress=False)
    assert first == again and first["history"] != other["history"]
    assert not (tmp_path / "a" / "journal.jsonl").exists()  # nothing to resume in benchmark mode
    final = first["final"]
    assert final["proxy"] == REFERENCE and all(n["test_accuracy"] is not None for n in final["networks"])


def search_config(evaluator, **overrides):
    return evaluator.search_config(SearchConfig.preset("smoke", **{"proxy": SETTINGS[0], "cycles": 3, **overrides}))


def test_a_mutation_moves_to_the_nearest_other_architecture_of_the_table(evaluator):
    rng = random.Random(0)
    genotypes = [a.genotype for a in evaluator.architectures]
    for _ in range(20):
        parent = rng.choice(genotypes)
        state = rng.getstate()
        child = evaluator.mutate(parent, rng)
        rng.setstate(state)
        mutated = parent.mutate(rng)
        distance = [sum(x != y for x, y in zip(mutated.normal + mutated.reduce, g.normal + g.reduce))
                    for g in genotypes if g != parent]
        assert child in genotypes and child != parent
        assert sum(x != y for x, y in zip(mutated.normal + mutated.reduce, child.normal + child.reduce)) == min(distance)


def test_benchmark_mode_refuses_a_proxy_the_table_lacks(evaluator):
    with pytest.raises(ValueError, match="not in the table"):
        evaluator.search_config(SearchConfig.preset("smoke"))


def test_the_comparison_covers_every_group_and_is_deterministic(table_path):
    table = load_table(table_path)
    config = CompareConfig.preset("smoke", search_preset="smoke", final_top=2)
    result = compare(table, config, progress=False)
    assert len(result["groups"]) == 3 * len(SETTINGS) * len(config.budgets)
    assert len(result["runs"]) == len(result["groups"]) * config.seeds
    for group in result["groups"]:
        assert group["returned"] == config.seeds and group["retrain_for_90"] >= 1
        assert 0 <= group["regret"]["low"] <= group["regret"]["mean"] <= group["regret"]["high"]
    best = max(a.reference.test for a in table.architectures)
    assert all(r["regret"] == pytest.approx(best - r["returned_test"]) for r in result["runs"])
    assert compare(table, config, progress=False) == result


def test_cli_search_benchmark_and_bench_compare(table_path, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pyaccel_nas.cli", *args], capture_output=True, text=True,
                              timeout=1800)

    done = cli("search", "--preset", "smoke", "--proxy", SETTINGS[1], "--benchmark", str(table_path), "--out",
               str(tmp_path / "search"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "search" / "result.json").read_text())["final"]["proxy"] == REFERENCE
    refused = cli("search", "--preset", "smoke", "--benchmark", str(table_path), "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "not in the table" in refused.stderr
    done = cli("bench", "compare", "--table", str(table_path), "--preset", "smoke", "--search-preset", "smoke",
               "--seeds", "3", "--strategies", "evolution,random", "--out", str(tmp_path / "compare"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "compare").iterdir()} == {"compare.json", "compare.md", "compare.png"}
    assert len(json.loads((tmp_path / "compare" / "compare.json").read_text())["groups"]) == 2 * 2 * 2


# --- the configuration system -----------------------------------------------------------------------------


def test_flags_are_made_from_the_config_fields_and_override_the_preset():
    parser = argparse.ArgumentParser()
    BenchConfig.add_arguments(parser, default_preset="cpu")
    args = parser.parse_args(["--preset", "smoke", "--architectures", "7", "--settings", "c4r0s0e3,c8r0s0e6"])
    config = BenchConfig.from_arguments(args)
    assert config == BenchConfig.preset("smoke", architectures=7, settings=("c4r0s0e3", "c8r0s0e6"))
    assert BenchConfig.from_arguments(parser.parse_args([])) == BenchConfig.preset("cpu")
    assert "smoke: 4, cpu: 100, paper: 100" in parser.format_help().replace("\n", " ").replace("  ", " ")


def test_presets_and_fields_are_checked():
    with pytest.raises(ValueError, match="unknown preset"):
        BenchConfig.preset("huge")
    with pytest.raises(ValueError, match="no field"):
        BenchConfig.preset("smoke", architecturez=3)
    with pytest.raises(ValueError, match="3E epochs"):
        BenchConfig.preset("smoke", settings=("c4r0s0e4",))
    with pytest.raises(ValueError, match="finite"):
        BenchConfig.preset("smoke", learning_rate=float("nan"))
