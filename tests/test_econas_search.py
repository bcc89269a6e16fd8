"""EcoNAS searches end to end: the three strategies, cost accounting, budget, resume, outputs, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyaccel_nas.econas.journal import JournalError
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.search import SearchConfig, run_search

TINY = dict(dataset="digits", proxy="c4r0s0e3", channels=8, layers=3, initial=4, children=(1, 1, 1), promote=(1, 1),
            age=2, tournament=2, cycles=2, batch_size=128, final_top=1, final_proxy="c4r0s0e2")


def tiny(**overrides) -> SearchConfig:
    return SearchConfig(**{**TINY, **overrides})


@pytest.mark.parametrize("strategy", ["hierarchical", "evolution", "random"])
def test_each_strategy_writes_the_result_contract(tmp_path, strategy):
    result = run_search(tiny(strategy=strategy), tmp_path, progress=False)
    for key in ("strategy", "proxy", "best", "trained_networks", "cost", "history", "final"):
        assert key in result
    assert result["best"]["val_accuracy"] > 0.1 and set(result["best"]["genotype"]) >= {"normal", "reduce"}
    assert [h["cycle"] for h in result["history"]] == [0, 1, 2]
    costs = [h["cost_macs"] for h in result["history"]]
    assert costs == sorted(costs) and costs[-1] == result["cost"]["macs"] > 0
    (final,) = result["final"]["networks"]
    assert 0 < final["test_accuracy"] <= 1 and result["final"]["proxy"] == "c4r0s0e2"
    assert json.loads((tmp_path / "result.json").read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "search.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "best_genotype.json").exists()


def test_hierarchical_tiers_and_cost_accounting(tmp_path):
    result = run_search(tiny(cycles=3), tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()[1:]]
    search_records = [r for r in records if r["test_accuracy"] is None]
    assert {r["epochs"] for r in search_records} == {1, 2, 3}  # tiers E, 2E, 3E of a 3-epoch proxy
    # 4 initial + 3 children per cycle; promotions retrain existing networks and add none
    assert result["trained_networks"] == 4 + 3 * 3
    # every evaluation trains E epochs: the epoch count is E x evaluations
    assert result["cost"]["epochs"] == len(search_records)
    # the MAC cost is the proxy's formula summed over what was trained
    proxy = Proxy.parse(TINY["proxy"])
    assert result["cost"]["macs"] % proxy.cost(1, 1, epochs=1) == 0


def test_budget_stops_the_search_before_passing_it(tmp_path):
    full = run_search(tiny(strategy="random"), tmp_path / "full", progress=False)
    budget = full["history"][1]["cost_macs"] + 1
    capped = run_search(tiny(strategy="random", cycles=50, budget=budget), tmp_path / "capped", progress=False)
    assert capped["stopped_by"] == "budget"
    assert capped["cost"]["macs"] <= budget < full["cost"]["macs"]
    assert capped["history"][:2] == full["history"][:2]


def test_resume_continues_without_redoing_work_and_equals_a_straight_run(tmp_path):
    straight = run_search(tiny(cycles=3), tmp_path / "straight", progress=False)
    run_search(tiny(cycles=1), tmp_path / "staged", progress=False)
    journal = tmp_path / "staged" / "journal.jsonl"
    done_before = journal.read_text().splitlines()
    # a crash mid-write leaves half a record: it is dropped and redone
    with open(journal, "a") as f:
        f.write('{"key": "net99@1/3:c4r0s0e3", "network_id"')
    resumed = run_search(tiny(cycles=3), tmp_path / "staged", resume=True, progress=False)
    lines = journal.read_text().splitlines()
    assert lines[: len(done_before)] == done_before  # nothing finished was redone
    assert all(line.endswith("}") for line in lines)
    for key in ("best", "trained_networks", "cost", "history"):
        assert resumed[key] == straight[key], key
    assert [n["val_accuracy"] for n in resumed["final"]["networks"]] == [
        n["val_accuracy"] for n in straight["final"]["networks"]
    ]


def test_journal_refuses_other_searches_and_accidental_overwrite(tmp_path):
    run_search(tiny(cycles=1), tmp_path, progress=False)
    with pytest.raises(JournalError, match="exists: resume that search with --resume"):
        run_search(tiny(cycles=1), tmp_path, progress=False)
    with pytest.raises(JournalError, match="other settings"):
        run_search(tiny(cycles=1, seed=7), tmp_path, resume=True, progress=False)
    (tmp_path / "journal.jsonl").write_text("garbage\n")
    with pytest.raises(JournalError, match="not a search journal"):
        run_search(tiny(cycles=1), tmp_path, resume=True, progress=False)
    with pytest.raises(JournalError, match="nothing to resume"):
        run_search(tiny(cycles=1), tmp_path / "empty", resume=True, progress=False)


def test_mutation_never_selects_on_the_test_split(tmp_path, monkeypatch):
    from pyaccel_nas.econas import trainer

    seen = []
    original = trainer.Trainer.evaluate
    monkeypatch.setattr(trainer.Trainer, "evaluate", lambda self, split="val", **kw: seen.append(split) or original(self, split, **kw))
    run_search(tiny(cycles=1, final_top=0), tmp_path, progress=False)
    assert seen and set(seen) == {"val"}


@pytest.mark.slow
def test_cli_smoke_search_on_fashion_mnist(tmp_path):
    # what the run produced, not how long it took: a loaded machine must not fail it (speed is for benchmarks)
    out = subprocess.run(
        [sys.executable, "-m", "pyaccel_nas.cli", "search", "--preset", "smoke", "--dataset", "fashion-mnist",
         "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=1800,
    )
    assert out.returncode == 0, out.stderr
    assert "best validation accuracy" in out.stdout and "test" in out.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["best"]["val_accuracy"] > 0.3  # 10 classes
    trained = subprocess.run(
        [sys.executable, "-m", "pyaccel_nas.cli", "train", "--genotype", str(tmp_path / "best_genotype.json"),
         "--dataset", "digits", "--setting", "c4r0s0e1", "--layers", "3", "--out", str(tmp_path / "train")],
        capture_output=True, text=True, timeout=1800,
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads((tmp_path / "train" / "train.json").read_text())["test_accuracy"] > 0
