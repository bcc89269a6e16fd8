"""Building the proxy benchmark table (``pyaccel-nas bench build``): N architectures sampled from the search
space, each trained under every proxy setting of a grid (3E epochs along one cosine schedule, validation
accuracy after E, 2E and 3E) and under a reference setting (validation and test accuracy).

Every training is an :class:`~pyaccel_nas.econas.evaluation.EvaluationTask` run by the search's executors
and recorded in a journal under ``OUT``, so a build runs in one process, a process pool or on Ray, and
``--resume`` continues it after a kill. Architectures are trained a chunk at a time and the table
(``OUT/table.jsonl``, :mod:`pyaccel_nas.bench.table`) is rewritten after each chunk, so an unfinished
build already has a usable table of its first architectures.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from tqdm import tqdm

from pyaccel_nas.bench.table import TABLE_FORMAT, write_table
from pyaccel_nas.config import RunConfig, option
from pyaccel_nas.econas.evaluation import DataSpec, EvaluationResult, EvaluationTask, full_dataset, network_size
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.econas.journal import Journal
from pyaccel_nas.econas.network import NetworkConfig
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.trainer import TrainRecipe
from pyaccel_nas.exec import InlineExecutor
from pyaccel_nas.provenance import machine, source_state
from pyaccel_nas.threads import available_cores
from pyaccel_nas.validation import require_finite

STAGES = 3  # a setting of 3E epochs is scored after E, 2E and 3E: the tiers of the hierarchical strategy
CHUNK = 5  # architectures trained (under every setting) between two writes of the table


@dataclasses.dataclass(frozen=True)
class BenchConfig(RunConfig):
    """What a benchmark table holds: which architectures, trained how, under which settings."""

    dataset: str = option("dataset", "cifar10")
    data_root: str | None = option("directory holding the dataset (default: the standard locations)", None)
    architectures: int = option("architectures sampled from the search space (uniform, deduplicated)", 100)
    settings: tuple[str, ...] = option(
        "proxy settings, comma-separated, each of 3E epochs",
        ("c4r4s0e60", "c4r4s2e120", "c4r4s4e240", "c8r4s0e60", "c8r2s0e60", "c4r2s0e60", "c16r4s0e30"))
    reference: str = option("the high-fidelity setting the proxies are judged against", "c0r0s0e600")
    seed: int = option("architecture sampling, weight initialisation and data order", 0)
    channels: int = option("channels of the first cells before a setting divides them", 36)
    layers: int = option("cells in the network", 20)
    batch_size: int = 96
    learning_rate: float = 0.025
    val_fraction: float = 0.1
    threads: int = 1  # torch threads per evaluation (results depend on it: a resume must keep it); --threads

    PRESETS = {
        # seconds on 2 cores: the machinery, not a measurement
        "smoke": dict(dataset="digits", architectures=4, settings=("c4r0s0e3", "c4r2s0e3"), reference="c2r0s0e6",
                      channels=8, layers=3),
        # ~3.5 CPU-hours on this project's 2-core machine (benchmarks/NOTES.md: the grid and why)
        "cpu": dict(dataset="fashion-mnist", architectures=100, layers=5,
                    settings=("c8r4s20e3", "c8r4s10e6", "c4r4s5e3", "c4r4s10e6", "c4r4s20e12", "c8r2s10e6"),
                    reference="c4r2s5e6"),
        # the EcoNAS paper's scale: CIFAR-10, 20-cell networks, the ground truth c0r0s0e600 (GPU-days)
        "paper": dict(),
    }

    def __post_init__(self) -> None:
        require_finite(self, "learning_rate", "val_fraction")
        for name in ("architectures", "channels", "layers", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchConfig: `{name}` must be >= 1, got {getattr(self, name)}")
        if self.architectures < 3:
            raise ValueError("BenchConfig: rank correlations need at least 3 architectures")
        if not self.learning_rate > 0:
            raise ValueError(f"BenchConfig: `learning_rate` must be > 0, got {self.learning_rate}")
        object.__setattr__(self, "settings", tuple(self.settings))
        if not self.settings or len(set(self.settings)) != len(self.settings):
            raise ValueError(f"BenchConfig: `settings` must be distinct proxies, got {self.settings}")
        for text in self.settings:
            if Proxy.parse(text).epochs % STAGES:
                raise ValueError(f"BenchConfig: setting {text} must have 3E epochs (scored after E, 2E, 3E)")
        Proxy.parse(self.reference)


def sample_architectures(count: int, seed: int) -> list[Genotype]:
    """``count`` distinct genotypes drawn uniformly from the search space with ``seed``."""
    rng, seen, genotypes = random.Random(seed), set(), []
    while len(genotypes) < count:
        genotype = Genotype.random(rng)
        if genotype not in seen:
            seen.add(genotype)
            genotypes.append(genotype)
    return genotypes


@dataclasses.dataclass
class _Build:
    config: BenchConfig
    out: Path

    def __post_init__(self) -> None:
        config = self.config
        self.data = DataSpec(config.dataset, config.data_root, config.val_fraction, config.seed)
        self.base = NetworkConfig(channels=config.channels, layers=config.layers)
        self.recipe = TrainRecipe(batch_size=config.batch_size, learning_rate=config.learning_rate)
        self.train_images = len(full_dataset(self.data).train)
        # what the build started from; a build resumed elsewhere names the machine and commit of its last sitting
        self.built_with = {**source_state(), "machine": {**machine(available_cores()), "threads": config.threads}}

    def tasks(self, arch: int, genotype: Genotype) -> list[EvaluationTask]:
        """Its training under every setting, then under the reference."""
        common = dict(network_id=arch, genotype=genotype, data=self.data, base_config=self.base, recipe=self.recipe,
                      seed=self.config.seed * 1_000_003 + arch, run_dir=str(self.out), threads=self.config.threads,
                      keep_checkpoint=False)
        tasks = []
        for text in self.config.settings:
            proxy = Proxy.parse(text)
            stage = proxy.epochs // STAGES
            tasks.append(EvaluationTask(proxy=proxy, target_epochs=proxy.epochs, schedule_epochs=proxy.epochs,
                                        score_epochs=tuple(k * stage for k in range(1, STAGES + 1)), **common))
        reference = Proxy.parse(self.config.reference)
        tasks.append(EvaluationTask(proxy=reference, target_epochs=reference.epochs, schedule_epochs=reference.epochs,
                                    report_test=True, **common))
        return tasks

    def row(self, arch: int, genotype: Genotype, results: list[EvaluationResult]) -> dict:
        names = [*self.config.settings, self.config.reference]
        entries = {name: self.measurement(genotype, Proxy.parse(name), r) for name, r in zip(names, results)}
        reference = entries.pop(self.config.reference)
        return {"id": arch, "genotype": genotype.to_dict(), "settings": entries,
                "reference": {"setting": self.config.reference, **reference}}

    def measurement(self, genotype: Genotype, proxy: Proxy, result: EvaluationResult) -> dict:
        if result.error is not None:
            return {"error": result.error}
        macs, params = network_size(genotype, self.base, self.data, proxy)
        val = result.val_curve or {str(result.epochs): result.val_accuracy}
        entry = {"val": val, "macs_per_image": macs, "params": params, "seconds": round(result.seconds, 3)}
        if result.test_accuracy is not None:
            entry["test"] = result.test_accuracy
        return entry

    def header(self, complete: bool) -> dict:
        return {"format": TABLE_FORMAT, "complete": complete, "config": dataclasses.asdict(self.config),
                "train_images": self.train_images,
                "built_with": self.built_with}


def build_table(config: BenchConfig, out: str | Path, *, resume: bool = False, executor=None,
                progress: bool = True) -> Path:
    """Builds (or resumes building) the table; returns the path of ``OUT/table.jsonl``."""
    out = Path(out).resolve()
    settings = dataclasses.asdict(config)
    settings.pop("data_root")
    journal = Journal(out / "journal.jsonl", settings, resume=resume)
    build = _Build(config, out)
    executor = executor or InlineExecutor()
    genotypes = sample_architectures(config.architectures, config.seed)
    rows, path = [], out / "table.jsonl"
    with tqdm(total=len(genotypes), desc="bench build", unit="arch", disable=not progress) as bar:
        for start in range(0, len(genotypes), CHUNK):
            chunk = list(enumerate(genotypes))[start: start + CHUNK]
            tasks = [task for arch, genotype in chunk for task in build.tasks(arch, genotype)]
            results = journal.evaluate(tasks, executor)
            per_arch = len(config.settings) + 1
            for i, (arch, genotype) in enumerate(chunk):
                rows.append(build.row(arch, genotype, results[i * per_arch: (i + 1) * per_arch]))
            write_table(path, build.header(complete=len(rows) == len(genotypes)), rows)
            bar.update(len(chunk))
    return path
