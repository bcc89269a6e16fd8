"""One unit of search work: train a network (from scratch or from its last checkpoint) and score it.

An :class:`EvaluationTask` is plain data, so any executor (in process, a process pool, a Ray task) can run
:func:`run_evaluation` on it; the search driver only schedules tasks and records their results.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pyaccel_nas.data import Dataset, load_dataset
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.econas.network import Network, NetworkConfig
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.trainer import Trainer, TrainRecipe


@dataclass(frozen=True)
class DataSpec:
    """Which data an evaluation trains on: a dataset, as a proxy reduces it."""

    dataset: str
    root: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0


@functools.lru_cache(maxsize=4)
def full_dataset(data: DataSpec) -> Dataset:
    """The dataset with its official sizes and resolution, loaded once per process."""
    return load_dataset(data.dataset, data.root, val_fraction=data.val_fraction, seed=data.split_seed)


def proxied_dataset(data: DataSpec, proxy: Proxy) -> Dataset:
    """The dataset at the proxy's resolution and sample count, loaded once per process."""
    full = full_dataset(data)
    return full.at_resolution(proxy.resolution or 1).subset_train(proxy.samples or 1, seed=data.split_seed)


def network_config(base: NetworkConfig, proxy: Proxy, dataset: Dataset) -> NetworkConfig:
    """The network size under the proxy: channels divided, input channels and classes from the dataset."""
    return dataclasses.replace(
        base,
        channels=proxy.channels_of(base.channels),
        in_channels=dataset.info.channels,
        num_classes=dataset.info.num_classes,
    )


@functools.lru_cache(maxsize=4096)
def macs_per_image(genotype: Genotype, base: NetworkConfig, data: DataSpec, proxy: Proxy) -> int:
    """MACs of one forward pass of ``genotype``'s network on one image, as ``proxy`` sizes both."""
    from pyaccel_nas.nn import count_macs

    dataset = proxied_dataset(data, proxy)
    info = dataset.info
    network = Network(genotype, network_config(base, proxy, dataset))
    return count_macs(network, torch.zeros(1, info.channels, info.image_size, info.image_size))


@dataclass(frozen=True)
class EvaluationTask:
    """Train network ``network_id`` to ``target_epochs`` of a ``schedule_epochs`` cosine schedule.

    ``resume_from`` is the checkpoint of an earlier stage (None: start from scratch with ``seed``).
    The result is scored on the validation split, and also on the test split when ``report_test`` (the
    final retraining: the search itself never sees the test split). Training runs ``threads`` torch
    threads, whatever the executor: CPU reductions split over another thread count round differently,
    so a fixed count is what makes an evaluation's result the same in any process.
    """

    network_id: int
    genotype: Genotype
    proxy: Proxy
    data: DataSpec
    base_config: NetworkConfig
    recipe: TrainRecipe
    target_epochs: int
    schedule_epochs: int
    seed: int
    checkpoint_dir: str
    resume_from: str | None = None
    report_test: bool = False
    threads: int = 1

    @property
    def key(self) -> str:
        """Identifies the task's result in the search journal."""
        final = "+test" if self.report_test else ""
        return f"net{self.network_id}@{self.target_epochs}/{self.schedule_epochs}:{self.proxy}{final}"

    @property
    def checkpoint(self) -> str:
        final = "-final" if self.report_test else ""
        return str(Path(self.checkpoint_dir) / f"net{self.network_id:05d}-{self.proxy}-e{self.target_epochs}{final}.pt")


_NUMBER = (int, float)
_RESULT_FIELDS = {  # the type of each field as it comes back from JSON
    "key": str, "network_id": int, "genotype": dict, "val_accuracy": _NUMBER + (type(None),),
    "test_accuracy": _NUMBER + (type(None),), "epochs": (int, type(None)), "checkpoint": (str, type(None)),
    "seconds": _NUMBER, "error": (str, type(None)),
}


@dataclass(frozen=True)
class EvaluationResult:
    """A finished evaluation: what it trained, its accuracies and checkpoint, or ``error``: why it failed
    (after the executor's retries), in which case the accuracies, epochs and checkpoint are None."""

    key: str
    network_id: int
    genotype: dict
    val_accuracy: float | None
    test_accuracy: float | None
    epochs: int | None
    checkpoint: str | None
    seconds: float
    error: str | None = None

    @classmethod
    def failure(cls, task: EvaluationTask, error: str) -> EvaluationResult:
        return cls(task.key, task.network_id, task.genotype.to_dict(), None, None, None, None, 0.0, error)

    @classmethod
    def from_dict(cls, record: object) -> EvaluationResult:
        """The result a JSON record holds; ValueError naming the field if it is not one."""
        if not isinstance(record, dict) or set(record) != set(_RESULT_FIELDS):
            raise ValueError(f"expected an object with the fields {', '.join(_RESULT_FIELDS)}")
        for name, types in _RESULT_FIELDS.items():
            if not isinstance(record[name], types) or isinstance(record[name], bool):
                raise ValueError(f"field `{name}` has the wrong type ({record[name]!r})")
        return cls(**record)


def run_evaluation(task: EvaluationTask, progress=None) -> EvaluationResult:
    """Trains the task's network and returns its accuracy (validation, and test if the task asks)."""
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(task.threads)
    try:
        dataset = proxied_dataset(task.data, task.proxy)
        if task.resume_from is not None:
            trainer = Trainer.load(task.resume_from, dataset)
        else:
            config = network_config(task.base_config, task.proxy, dataset)
            trainer = Trainer(task.genotype, dataset, config, task.schedule_epochs, task.recipe, task.seed)
        trainer.train(task.target_epochs - trainer.epochs_done, progress=progress)
        val_accuracy = trainer.evaluate("val")
        test_accuracy = trainer.evaluate("test") if task.report_test else None
        Path(task.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        trainer.save(task.checkpoint)
    finally:
        torch.set_num_threads(threads)
    return EvaluationResult(
        task.key, task.network_id, task.genotype.to_dict(), val_accuracy, test_accuracy, trainer.epochs_done,
        task.checkpoint, time.perf_counter() - start,
    )
