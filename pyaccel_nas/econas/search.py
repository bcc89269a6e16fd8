"""Running a search: settings and presets, the run that strategies drive, cost accounting, the final
retraining, and the outputs (``result.json``, ``search.png``, the journal and checkpoints under ``--out``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from pyaccel_nas.config import RunConfig, option, positive_float
from pyaccel_nas.data import DATASETS
from pyaccel_nas.econas.evaluation import (
    DataSpec,
    EvaluationResult,
    EvaluationTask,
    full_dataset,
    macs_per_image,
)
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.econas.journal import Journal
from pyaccel_nas.econas.network import NetworkConfig
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.result import best_network, retrained_network, search_result, write_result
from pyaccel_nas.econas.strategies import STRATEGIES, NoNetworkLeft, planned_training
from pyaccel_nas.econas.trainer import TrainRecipe
from pyaccel_nas.exec import InlineExecutor
from pyaccel_nas.exec.files import resolve_inside
from pyaccel_nas.validation import require_finite


@dataclass(frozen=True)
class SearchConfig(RunConfig):
    """Everything that determines a search. Defaults are the paper's and its released code's."""

    strategy: str = "hierarchical"
    dataset: str = option("dataset", "fashion-mnist", choices=sorted(DATASETS))
    data_root: str | None = option("directory holding the dataset (default: $PYACCEL_NAS_DATA, then the standard "
                                   "locations)", None)
    proxy: str = option("training setting of the search, c{x}r{y}s{z}e{n}", "c4r4s0e60")
    cycles: int = option("search cycles", 100)
    # MACs of training; the search stops before an evaluation would pass it
    budget: float | None = option("stop before the training cost passes this many MACs", None, parse=positive_float)
    seed: int = option("seed", 0)
    initial: int = option("networks of the initial (random) population", 16)
    children: tuple[int, int, int] = (6, 5, 5)  # per cycle; hierarchical: parents from the E, 2E, 3E tiers
    promote: tuple[int, int] = option("hierarchical: networks promoted per cycle from the E tier to 2E and from "
                                      "the 2E tier to 3E, comma-separated", (8, 4))
    age: int = 10  # hierarchical: cycles without training before a network dies
    tournament: int = option("evolution, hierarchical: networks drawn per tournament to pick a parent", 4)
    channels: int = option("channels of the first cells before the proxy divides them", 36)
    layers: int = option("cells in the network", 20)
    batch_size: int = 96
    learning_rate: float = 0.025
    final_top: int = option("how many of the best networks to retrain at --final-proxy", 5)
    final_proxy: str = option("setting the best networks are retrained at; paper: the ground truth", "c0r0s0e600")
    val_fraction: float = 0.1
    threads: int = 1  # torch threads per evaluation: results depend on it, the executor must not change it

    PRESETS = {
        # under a minute on 2 CPU cores: a handful of tiny networks on a slice of the data, each trained on both
        # cores (the other presets train one network per core: --executor process)
        "smoke": dict(proxy="c4r4s50e3", cycles=2, initial=4, children=(2, 1, 1), promote=(2, 1), age=3,
                      tournament=2, layers=5, batch_size=64, final_top=1, final_proxy="c4r4s25e3", threads=2),
        # minutes on a laptop CPU: small networks, a tenth of the data
        "cpu": dict(proxy="c4r4s10e6", cycles=4, initial=8, children=(3, 3, 2), promote=(4, 2), age=4, tournament=3,
                    layers=6, batch_size=96, final_top=2, final_proxy="c4r2s5e6"),
        # the paper: c4r4s0e60 proxy, 16 + 100 x 16 networks of 20 cells, top 5 retrained at ground truth
        "paper": dict(),
    }

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        Proxy.parse(self.proxy)
        Proxy.parse(self.final_proxy)
        for name in ("cycles", "initial", "tournament", "channels", "layers", "batch_size", "age", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"SearchConfig: `{name}` must be >= 1, got {getattr(self, name)}")
        require_finite(self, "budget", "learning_rate", "val_fraction")
        if not self.learning_rate > 0:
            raise ValueError(f"SearchConfig: `learning_rate` must be > 0, got {self.learning_rate}")
        if self.final_top < 0 or (self.budget is not None and self.budget <= 0):
            raise ValueError("SearchConfig: `final_top` must be >= 0 and `budget` > 0")
        object.__setattr__(self, "children", tuple(self.children))
        object.__setattr__(self, "promote", tuple(self.promote))
        if len(self.promote) != 2 or min(self.promote) < 0:
            raise ValueError(f"SearchConfig: `promote` must be two counts >= 0 (E to 2E, 2E to 3E), got {self.promote}")

    @property
    def data(self) -> DataSpec:
        """The dataset and the validation split the search trains and scores on."""
        return DataSpec(self.dataset, self.data_root, self.val_fraction, self.seed)

    def journal_settings(self) -> dict:
        """The settings a resumed search must share with the journal. How long it runs (cycles, budget)
        and the final retraining may change: they do not alter any evaluation already done."""
        settings = dataclasses.asdict(self)
        for name in ("cycles", "budget", "final_top", "final_proxy", "data_root"):
            del settings[name]
        return settings


class BudgetExhausted(Exception):
    """The next evaluation would pass the search's budget."""


@dataclass
class Candidate:
    """A network of the search and where it stands."""

    network_id: int
    genotype: Genotype
    macs_per_image: int
    epochs: int = 0
    val_accuracy: float = 0.0
    checkpoint: str | None = None
    last_trained_cycle: int = 0
    alive: bool = True
    failed: bool = False  # an evaluation of it failed every retry: it left the search


class Evaluator(Protocol):
    """Where a search's architectures come from and how their training is scored and charged: by training
    them (:class:`TrainingEvaluator`), or by looking them up in a benchmark table
    (:class:`pyaccel_nas.bench.simulate.TableEvaluator`). The strategies never know which."""

    train_images: int  # the full training split, which proxies divide in their cost

    def macs_per_image(self, genotype: Genotype, base: NetworkConfig, proxy: Proxy) -> int: ...

    def evaluate(self, tasks: list[EvaluationTask]) -> list[EvaluationResult]: ...

    def random_genotype(self, rng: random.Random) -> Genotype: ...

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype: ...


class TrainingEvaluator:
    """Trains every network, through ``executor``, recording each finished evaluation in ``journal``; the
    architectures are the whole search space. (Planning a search needs neither journal nor executor.)"""

    def __init__(self, data: DataSpec, journal: Journal | None = None, executor=None) -> None:
        self.data, self.journal, self.executor = data, journal, executor
        self.train_images = len(full_dataset(data).train)

    def macs_per_image(self, genotype: Genotype, base: NetworkConfig, proxy: Proxy) -> int:
        return macs_per_image(genotype, base, self.data, proxy)

    def evaluate(self, tasks: list[EvaluationTask]) -> list[EvaluationResult]:
        return self.journal.evaluate(tasks, self.executor)

    def random_genotype(self, rng: random.Random) -> Genotype:
        return Genotype.random(rng)

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        return genotype.mutate(rng)


# CPU training throughput of these networks, per core: about 1-2 GMAC/s (0.8-2.3) measured while building the cpu benchmark
# table (benchmarks/NOTES.md); small networks are overhead-bound and sit at the low end
CORE_MACS_PER_SECOND = (1e9, 2e9)


@dataclass(frozen=True)
class SearchPlan:
    """The most a search will cost, known before it starts (``pyaccel-nas search`` prints it first)."""

    config: SearchConfig
    networks: int
    network_epochs: int
    training_macs: float  # the network-epochs at the mean cost of a few random architectures
    final_macs: float  # retraining the final_top networks at final_proxy

    def describe(self) -> str:
        config = self.config
        training = self.training_macs if config.budget is None else min(self.training_macs, config.budget)
        capped = " (its budget)" if training < self.training_macs else ""
        total = training + self.final_macs
        slow, fast = (total / rate / 3600 for rate in CORE_MACS_PER_SECOND)
        return (f"plan: at most {self.networks} networks, {self.network_epochs} network-epochs at {config.proxy}, "
                f"~{training:.2g} training MACs{capped}; then {config.final_top} retrained at {config.final_proxy}, "
                f"~{self.final_macs:.2g} MACs; ~{fast:.2g}-{slow:.2g} core-hours at 1-2 GMAC/s per core")


def plan_search(config: SearchConfig, evaluator: Evaluator | None = None, *, samples: int = 8) -> SearchPlan:
    """What ``config`` would train at most, its MACs estimated from ``samples`` random architectures (drawn
    from their own RNG: planning does not change the search)."""
    if evaluator is None:
        evaluator = TrainingEvaluator(config.data)
    proxy, final = Proxy.parse(config.proxy), Proxy.parse(config.final_proxy)
    base = NetworkConfig(channels=config.channels, layers=config.layers)
    rng = random.Random(f"plan {config.seed}")
    genotypes = [evaluator.random_genotype(rng) for _ in range(samples)]

    def mean_cost(setting: Proxy, epochs: int) -> float:
        macs = sum(evaluator.macs_per_image(g, base, setting) for g in genotypes) / samples
        return setting.cost(macs, evaluator.train_images, epochs=epochs)

    networks, network_epochs = planned_training(config.strategy, config, proxy.epochs)
    return SearchPlan(config, networks, network_epochs, training_macs=mean_cost(proxy, network_epochs),
                      final_macs=config.final_top * mean_cost(final, final.epochs))


@dataclass
class SearchRun:
    """The state a strategy works on: its RNG, its networks, cost so far, and the evaluator behind it."""

    config: SearchConfig
    out: Path
    evaluator: Evaluator
    progress: bool = True

    def __post_init__(self) -> None:
        self.proxy = Proxy.parse(self.config.proxy)
        self.data = self.config.data
        self.full_train_images = self.evaluator.train_images
        self.base_config = NetworkConfig(channels=self.config.channels, layers=self.config.layers)
        self.recipe = TrainRecipe(batch_size=self.config.batch_size, learning_rate=self.config.learning_rate)
        self.rng = random.Random(self.config.seed)
        self.networks: list[Candidate] = []
        self.cycle = 0
        self.cost_macs = 0
        self.cost_epochs = 0
        self.history: list[dict] = []  # per cycle
        self.evaluations: list[dict] = []  # per finished training, in the order the cost was charged
        self.stopped_by = "cycles"  # or "budget", or "failures" (no network left): what ended the strategy
        self.failures: list[dict] = []
        self._bar = tqdm(total=self.config.cycles + 1, desc=f"{self.config.strategy} search", unit="cycle",
                         disable=not self.progress)

    # --- what strategies call -----------------------------------------------------------------------------

    def new_network(self, genotype: Genotype) -> Candidate:
        candidate = Candidate(len(self.networks), genotype,
                              self.evaluator.macs_per_image(genotype, self.base_config, self.proxy))
        self.networks.append(candidate)
        return candidate

    def random_genotype(self) -> Genotype:
        return self.evaluator.random_genotype(self.rng)

    def mutate(self, genotype: Genotype) -> Genotype:
        return self.evaluator.mutate(genotype, self.rng)

    def train(self, targets: list[tuple[Candidate, int]]) -> None:
        """Trains each candidate up to its target epochs (one batch of independent evaluations).

        A candidate whose evaluation failed (after the executor's retries) leaves the search, keeping what it
        had; the failure is recorded, and the cost counts finished training only. Raises
        BudgetExhausted, after running the evaluations that fit, if one would pass the budget.
        """
        tasks, exhausted, planned = [], False, self.cost_macs
        for candidate, target in targets:
            cost = self.proxy.cost(candidate.macs_per_image, self.full_train_images, epochs=target - candidate.epochs)
            if self.config.budget is not None and planned + cost > self.config.budget:
                exhausted = True
                break
            planned += cost
            tasks.append(self._task(candidate, target, self.proxy, resume_from=candidate.checkpoint))
        by_id = {c.network_id: c for c, _ in targets}
        for result in self.evaluate(tasks):
            candidate = by_id[result.network_id]
            if result.error is not None:
                self.failures.append({"key": result.key, "network_id": result.network_id, "error": result.error})
                candidate.failed = True
                self.retire(candidate)
                continue
            self.cost_macs += self.proxy.cost(candidate.macs_per_image, self.full_train_images,
                                              epochs=result.epochs - candidate.epochs)
            self.cost_epochs += result.epochs - candidate.epochs
            self._forget_checkpoint(candidate)
            candidate.epochs, candidate.val_accuracy = result.epochs, result.val_accuracy
            candidate.checkpoint, candidate.last_trained_cycle = result.checkpoint, self.cycle
            self.evaluations.append({"network_id": candidate.network_id, "epochs": result.epochs,
                                     "val_accuracy": result.val_accuracy, "cost_macs": self.cost_macs})
        if exhausted:
            raise BudgetExhausted

    def retire(self, candidate: Candidate) -> None:
        """Removes a network from the search (it stays in the history); its checkpoint is no longer needed."""
        candidate.alive = False
        self._forget_checkpoint(candidate)

    def cycles(self) -> Iterator[int]:
        for cycle in range(1, self.config.cycles + 1):
            self.cycle = cycle
            yield cycle
            self.end_cycle()

    def end_cycle(self) -> None:
        best = self.best()
        entry = {
            "cycle": self.cycle,
            "cost_macs": self.cost_macs,
            "cost_epochs": self.cost_epochs,
            "trained_networks": sum(c.epochs > 0 for c in self.networks),
            "best_val_accuracy": best.val_accuracy if best else None,
        }
        self.history.append(entry)
        best_text = "-" if best is None else f"{best.val_accuracy:.4f}"
        self._bar.set_postfix(best=best_text, networks=entry["trained_networks"], cost=f"{self.cost_macs:.3g}",
                              refresh=False)
        self._bar.update(1)

    # --- selection and evaluation --------------------------------------------------------------------

    def fully_trained(self) -> list[Candidate]:
        """Networks trained for all the proxy's epochs (alive or not): the ones rankings compare."""
        return sorted((c for c in self.networks if c.epochs == self.proxy.epochs),
                      key=lambda c: (-c.val_accuracy, c.network_id))

    def best(self) -> Candidate | None:
        ranked = self.fully_trained()
        return ranked[0] if ranked else None

    def evaluate(self, tasks: list[EvaluationTask]) -> list[EvaluationResult]:
        return self.evaluator.evaluate(tasks)

    def _task(self, candidate: Candidate, target: int, proxy: Proxy, *, resume_from: str | None = None,
              report_test: bool = False) -> EvaluationTask:
        """Training ``candidate`` to ``target`` epochs of the cosine schedule of ``proxy``'s epochs."""
        return EvaluationTask(
            network_id=candidate.network_id, genotype=candidate.genotype, proxy=proxy, data=self.data,
            base_config=self.base_config, recipe=self.recipe, target_epochs=target, schedule_epochs=proxy.epochs,
            seed=self.config.seed * 1_000_003 + candidate.network_id, run_dir=str(self.out),
            resume_from=resume_from, report_test=report_test, threads=self.config.threads,
        )

    def _forget_checkpoint(self, candidate: Candidate) -> None:
        # superseded by a later stage, or of a dead network: only the journal's last stage matters on resume
        if candidate.checkpoint:
            resolve_inside(self.out, candidate.checkpoint).unlink(missing_ok=True)
        candidate.checkpoint = None

    def close(self) -> None:
        self._bar.close()


def run_search(config: SearchConfig, out: str | Path, *, resume: bool = False, executor=None,
               progress: bool = True, evaluator: Evaluator | None = None) -> dict:
    """Runs (or resumes) a search, retrains its best networks, writes ``out/result.json`` and
    ``out/search.png``, and returns the result.

    By default every network is trained (by ``executor``, recorded in ``out/journal.jsonl``, which
    ``resume`` replays); another ``evaluator`` (a benchmark table's) scores them instead, and then there is
    no journal and nothing to resume.
    """
    out = Path(out).resolve()  # from here on nothing depends on the working directory
    if evaluator is None:
        journal = Journal(out / "journal.jsonl", config.journal_settings(), resume=resume)
        evaluator = TrainingEvaluator(config.data, journal, executor or InlineExecutor())
    else:
        out.mkdir(parents=True, exist_ok=True)
    run = execute(config, out, evaluator, progress)
    result = summarise(run)
    best = run.best()
    write_result(out, result, None if best is None else best.genotype)
    from pyaccel_nas.econas.plots import plot_search

    plot_search(result, out / "search.png")
    return result


def execute(config: SearchConfig, out: Path, evaluator: Evaluator, progress: bool = True) -> SearchRun:
    """Runs the strategy until its cycles, its budget or its networks run out (``run.stopped_by`` says which)."""
    run = SearchRun(config, out, evaluator, progress)
    try:
        STRATEGIES[config.strategy](run)
    except BudgetExhausted:
        run.stopped_by = "budget"
        run.end_cycle()
    except NoNetworkLeft:  # the result still says what was tried and why each network failed
        run.stopped_by = "failures"
        run.end_cycle()
    finally:
        run.close()
    return run


def summarise(run: SearchRun) -> dict:
    """The search's result (``result.json``), the final retraining of its best networks included."""
    best = run.best()
    return search_result(
        run.config, strategy=run.config.strategy, stopped_by=run.stopped_by,
        best=None if best is None else best_network(best.network_id, best.genotype, best.val_accuracy),
        trained_networks=sum(c.epochs > 0 for c in run.networks),
        cost={"epochs": run.cost_epochs, "macs": run.cost_macs}, history=run.history, failed=run.failures,
        final=_retrain_top(run), evaluations=run.evaluations,
    )


def _retrain_top(run: SearchRun) -> dict:
    """Retrains the ``final_top`` best networks from scratch at ``final_proxy``; reports val and test accuracy."""
    final_proxy = Proxy.parse(run.config.final_proxy)
    top = run.fully_trained()[: run.config.final_top]
    tasks = [run._task(c, final_proxy.epochs, final_proxy, report_test=True) for c in top]
    results = run.evaluate(tasks)
    return {
        "proxy": str(final_proxy),
        "networks": [retrained_network(c.network_id, c.genotype, c.val_accuracy, r) for c, r in zip(top, results)],
    }
