"""The rank-consistency study (the EcoNAS paper's central experiment): how well does each proxy rank
architectures the way the ground-truth setting does, and at what cost?

M random architectures are trained under the ground-truth setting and under every proxy; for each proxy
the study reports Spearman's rho and Kendall's tau between its validation accuracies and the ground
truth's, and the training cost of evaluating the M architectures. All evaluations go through a journal,
so an interrupted study resumes where it stopped. An evaluation that fails every retry is recorded as a
None accuracy, and that architecture is left out of the correlations it takes part in.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path

from scipy import stats
from tqdm import tqdm

from pyaccel_nas.config import RunConfig, option
from pyaccel_nas.data import DATASETS
from pyaccel_nas.econas.evaluation import DataSpec, EvaluationTask, full_dataset, macs_per_image
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.econas.journal import Journal
from pyaccel_nas.econas.network import NetworkConfig
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.trainer import TrainRecipe
from pyaccel_nas.exec import InlineExecutor
from pyaccel_nas.exec.files import write_json_atomically
from pyaccel_nas.validation import require_finite


@dataclass(frozen=True)
class StudyConfig(RunConfig):
    dataset: str = option("dataset", "fashion-mnist", choices=sorted(DATASETS))
    data_root: str | None = option("directory holding the dataset (default: $PYACCEL_NAS_DATA, then the standard "
                                   "locations)", None)
    architectures: int = option("how many random architectures", 50)
    ground_truth: str = option("reference setting", "c0r0s0e600")
    proxies: tuple[str, ...] = option("proxies, comma-separated",
                                      ("c4r4s0e60", "c4r4s0e20", "c8r4s0e60", "c4r2s0e60", "c4r4s2e60", "c0r0s0e60"))
    seed: int = option("seed", 0)
    channels: int = 36
    layers: int = option("cells in the network", 20)
    batch_size: int = 96
    learning_rate: float = 0.025
    threads: int = 1  # torch threads per evaluation (results depend on it; the executor does not)

    PRESETS = {
        "smoke": dict(architectures=4, ground_truth="c4r2s20e3", proxies=("c8r4s20e1", "c4r4s20e2"), layers=3),
        # 12 architectures of 5 cells; the "ground truth" is what a 2-core CPU affords in minutes: c4r4 on a
        # fifth of the data for 6 epochs, against proxies reducing samples, channels and epochs further
        "cpu": dict(architectures=12, ground_truth="c4r4s5e6", proxies=("c4r4s10e3", "c8r4s10e3", "c4r4s20e2",
                                                                         "c8r4s20e1"), layers=5),
        "paper": dict(),
    }

    def __post_init__(self) -> None:
        if self.architectures < 3:
            raise ValueError(f"StudyConfig: rank correlation needs at least 3 architectures, got {self.architectures}")
        if self.threads < 1:
            raise ValueError(f"StudyConfig: `threads` must be >= 1, got {self.threads}")
        require_finite(self, "learning_rate")
        if not self.learning_rate > 0:
            raise ValueError(f"StudyConfig: `learning_rate` must be > 0, got {self.learning_rate}")
        object.__setattr__(self, "proxies", tuple(self.proxies))
        if not self.proxies:
            raise ValueError("StudyConfig: `proxies` must name at least one proxy")
        for text in (self.ground_truth, *self.proxies):
            Proxy.parse(text)


def run_study(config: StudyConfig, out: str | Path, *, resume: bool = False, executor=None,
              progress: bool = True) -> dict:
    """Runs (or resumes) the study; writes ``out/study.json`` and ``out/study.png`` and returns the result."""
    out = Path(out).resolve()  # from here on nothing depends on the working directory
    settings = dataclasses.asdict(config)
    settings.pop("data_root")
    journal = Journal(out / "journal.jsonl", settings, resume=resume)
    executor = executor or InlineExecutor()
    rng = random.Random(config.seed)
    genotypes = [Genotype.random(rng) for _ in range(config.architectures)]
    data = DataSpec(config.dataset, config.data_root, split_seed=config.seed)
    base = NetworkConfig(channels=config.channels, layers=config.layers)
    recipe = TrainRecipe(batch_size=config.batch_size, learning_rate=config.learning_rate)
    train_images = len(full_dataset(data).train)

    settings_list = [config.ground_truth, *config.proxies]
    accuracies, costs = {}, {}
    for text in tqdm(settings_list, desc="proxy study", unit="setting", disable=not progress):
        proxy = Proxy.parse(text)
        tasks = [
            EvaluationTask(network_id=i, genotype=g, proxy=proxy, data=data, base_config=base, recipe=recipe,
                           target_epochs=proxy.epochs, schedule_epochs=proxy.epochs,
                           seed=config.seed * 1_000_003 + i, run_dir=str(out),
                           threads=config.threads, keep_checkpoint=False)  # the study needs accuracies only
            for i, g in enumerate(genotypes)
        ]
        accuracies[text] = [r.val_accuracy for r in journal.evaluate(tasks, executor)]
        costs[text] = sum(proxy.cost(macs_per_image(g, base, data, proxy), train_images) for g in genotypes)

    truth = accuracies[config.ground_truth]
    result = {
        "dataset": config.dataset,
        "architectures": [g.to_dict() for g in genotypes],
        "ground_truth": {"setting": config.ground_truth, "cost_macs": costs[config.ground_truth],
                         "val_accuracy": truth},
        "proxies": {
            text: {
                "spearman": rank_correlation(stats.spearmanr, accuracies[text], truth),
                "kendall": rank_correlation(stats.kendalltau, accuracies[text], truth),
                "cost_macs": costs[text],
                "cost_vs_ground_truth": costs[text] / costs[config.ground_truth],
                "val_accuracy": accuracies[text],
            }
            for text in config.proxies
        },
        "settings": dataclasses.asdict(config),
    }
    write_json_atomically(out / "study.json", result)
    from pyaccel_nas.econas.plots import plot_study

    plot_study(result, out / "study.png")
    return result


def rank_correlation(statistic, a: list[float | None], b: list[float | None]) -> float | None:
    """The rank correlation over the architectures both settings evaluated (None: failed), or None where
    it is undefined (fewer than 3 of them, or a setting that ranks every network equal)."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    value = float(statistic(*zip(*pairs)).statistic)
    return None if math.isnan(value) else value
