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
from pyaccel_nas.exec.base import EnvironmentFailure, describe
from pyaccel_nas.exec.files import resolve_inside
from pyaccel_nas.validation import quote


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


@functools.lru_cache(maxsize=8)
def proxied_dataset(data: DataSpec, proxy: Proxy) -> Dataset:
    """The dataset at the proxy's resolution and sample count, made once per process (a search evaluates
    many networks under one proxy; resizing the training set for each cost seconds)."""
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
def network_size(genotype: Genotype, base: NetworkConfig, data: DataSpec, proxy: Proxy) -> tuple[int, int]:
    """MACs of one forward pass of ``genotype``'s network on one image, and its parameter count, as
    ``proxy`` sizes both."""
    from pyaccel_nas.nn import count_macs

    dataset = proxied_dataset(data, proxy)
    info = dataset.info
    network = Network(genotype, network_config(base, proxy, dataset))
    macs = count_macs(network, torch.zeros(1, info.channels, info.image_size, info.image_size))
    return macs, sum(p.numel() for p in network.parameters())


def macs_per_image(genotype: Genotype, base: NetworkConfig, data: DataSpec, proxy: Proxy) -> int:
    """MACs of one forward pass of ``genotype``'s network on one image, as ``proxy`` sizes both."""
    return network_size(genotype, base, data, proxy)[0]


@dataclass(frozen=True)
class EvaluationTask:
    """Train network ``network_id`` to ``target_epochs`` of a ``schedule_epochs`` cosine schedule.

    ``run_dir`` is the (absolute) directory of the run the task belongs to; its checkpoints live under
    ``run_dir/checkpoints`` and are named relative to ``run_dir`` (``resume_from``, the checkpoint of an
    earlier stage, too; None: start from scratch with ``seed``), so a run's files are found from any working
    directory and never outside the run. The result is scored on the validation split, and also on the test
    split when ``report_test`` (the final retraining: the search itself never sees the test split), and on
    the validation split after each epoch of ``score_epochs`` too (the stages of a schedule, for a
    benchmark table); ``keep_checkpoint=False`` saves no checkpoint (nothing will continue it). Training
    runs ``threads`` torch threads, whatever the executor: CPU reductions split over another thread count
    round differently, so a fixed count is what makes an evaluation's result the same in any process.
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
    run_dir: str
    resume_from: str | None = None
    report_test: bool = False
    threads: int = 1
    score_epochs: tuple[int, ...] = ()
    keep_checkpoint: bool = True

    @property
    def key(self) -> str:
        """Identifies the task's result in the search journal."""
        final = "+test" if self.report_test else ""
        return f"net{self.network_id}@{self.target_epochs}/{self.schedule_epochs}:{self.proxy}{final}"

    @property
    def checkpoint(self) -> str:
        """Where the task saves its network, relative to ``run_dir``."""
        final = "-final" if self.report_test else ""
        return f"{CHECKPOINTS}/net{self.network_id:05d}-{self.proxy}-e{self.target_epochs}{final}.pt"


CHECKPOINTS = "checkpoints"  # the folder of a run's checkpoints, inside its directory


_NUMBER = (int, float)
_RESULT_FIELDS = {  # the type of each field as it comes back from JSON
    "key": str, "network_id": int, "genotype": dict, "val_accuracy": _NUMBER + (type(None),),
    "test_accuracy": _NUMBER + (type(None),), "epochs": (int, type(None)), "checkpoint": (str, type(None)),
    "seconds": _NUMBER, "error": (str, type(None)), "val_curve": dict,
}


@dataclass(frozen=True)
class EvaluationResult:
    """A finished evaluation: what it trained, its accuracies and checkpoint (relative to the run
    directory), or ``error``: why it failed (after the executor's retries), in which case the accuracies,
    epochs and checkpoint are None."""

    key: str
    network_id: int
    genotype: dict
    val_accuracy: float | None
    test_accuracy: float | None
    epochs: int | None
    checkpoint: str | None
    seconds: float
    error: str | None = None
    val_curve: dict[str, float] = dataclasses.field(default_factory=dict)  # epoch (as text) -> val accuracy

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
                raise ValueError(f"field `{name}` has the wrong type ({quote(record[name])})")
        if not all(k.isdigit() and isinstance(v, _NUMBER) for k, v in record["val_curve"].items()):
            raise ValueError("field `val_curve` must map epochs to accuracies")
        return cls(**record)


def run_evaluation(task: EvaluationTask, progress=None) -> EvaluationResult:
    """Trains the task's network and returns its accuracy (validation, and test if the task asks).

    What is not the network's doing raises :class:`EnvironmentFailure` (data that cannot be loaded, a
    checkpoint that cannot be read or written: a full disk, a read-only or vanished run directory), so no
    executor charges it to the network; an exception while training it is the network's failure.
    """
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(task.threads)
    try:
        trainer = _trainer_for(task)
        val_curve = {}
        for stop in sorted({e for e in task.score_epochs if e > trainer.epochs_done} | {task.target_epochs}):
            trainer.train(stop - trainer.epochs_done, progress=progress)  # in pieces: the same weights as at once
            if stop in task.score_epochs:
                val_curve[str(stop)] = trainer.evaluate("val")
        final = str(task.target_epochs)
        val_accuracy = val_curve[final] if final in val_curve else trainer.evaluate("val")
        test_accuracy = trainer.evaluate("test") if task.report_test else None
        if task.keep_checkpoint:
            _save(trainer, task)
    finally:
        torch.set_num_threads(threads)
    return EvaluationResult(
        task.key, task.network_id, task.genotype.to_dict(), val_accuracy, test_accuracy, trainer.epochs_done,
        task.checkpoint if task.keep_checkpoint else None, time.perf_counter() - start, val_curve=val_curve,
    )


def _trainer_for(task: EvaluationTask) -> Trainer:
    """A new trainer for the task, or the one its earlier stage saved."""
    try:
        dataset = proxied_dataset(task.data, task.proxy)
    except Exception as exc:  # noqa: BLE001 - any reason the data cannot be had stops the run
        raise EnvironmentFailure(f"the {task.data.dataset} data for {task.proxy}: {describe(exc)}") from exc
    if task.resume_from is None:
        config = network_config(task.base_config, task.proxy, dataset)
        return Trainer(task.genotype, dataset, config, task.schedule_epochs, task.recipe, task.seed)
    try:
        return Trainer.load(resolve_inside(task.run_dir, task.resume_from), dataset)
    except Exception as exc:  # noqa: BLE001 - the run's own file gone or unreadable: the network is not at fault
        raise EnvironmentFailure(f"cannot continue {task.key} from {task.resume_from}: {describe(exc)}") from exc


def _save(trainer: Trainer, task: EvaluationTask) -> None:
    # no parents=True: a run directory that vanished must stop the run, not be created again half empty
    path = Path(task.run_dir) / task.checkpoint
    try:
        path.parent.mkdir(exist_ok=True)
        trainer.save(path)
    except OSError as exc:
        raise EnvironmentFailure(f"cannot save {task.key} to {path}: {describe(exc)}") from exc
