"""Training one network under a proxy, in stages along one cosine schedule, with exact resume.

The recipe is the paper's (DARTS'): SGD with momentum and weight decay, gradient-norm clipping, one cosine
learning-rate schedule over ``schedule_epochs`` (3E for the hierarchical strategy) that training follows
stage by stage. A checkpoint after a stage holds the weights, the optimizer and scheduler state and the
data-order RNG, so training E epochs, saving, loading and training E more gives exactly the weights that
2E epochs in one go give. Checkpoints are tensors and plain data, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pyaccel_nas.data import Dataset
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.econas.network import Network, NetworkConfig
from pyaccel_nas.exec.files import atomic_writer

CHECKPOINT_FORMAT = "pyaccel_nas.econas.checkpoint/1"


@dataclass(frozen=True)
class TrainRecipe:
    """Optimisation settings (DARTS' defaults, which the EcoNAS code keeps)."""

    learning_rate: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    batch_size: int = 96
    augment: bool = True


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    train_accuracy: float
    learning_rate: float


class Trainer:
    """One network, its optimizer and its place in the schedule.

    Args:
        genotype: the architecture.
        dataset: the data as the proxy sees it (resolution and sample subset already applied).
        network_config: the network's size (channels already divided by the proxy).
        schedule_epochs: the length of the cosine schedule the stages follow.
        seed: weight initialisation and data order.
    """

    def __init__(
        self,
        genotype: Genotype,
        dataset: Dataset,
        network_config: NetworkConfig,
        schedule_epochs: int,
        recipe: TrainRecipe = TrainRecipe(),
        seed: int = 0,
    ) -> None:
        if schedule_epochs < 1:
            raise ValueError(f"Trainer: `schedule_epochs` must be >= 1, got {schedule_epochs}")
        self.genotype = genotype
        self.dataset = dataset
        self.network_config = network_config
        self.schedule_epochs = schedule_epochs
        self.recipe = recipe
        self.seed = seed
        with torch.random.fork_rng(devices=[]):  # initialise from the seed without touching the global RNG
            torch.manual_seed(seed)
            self.model = Network(genotype, network_config)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=recipe.learning_rate, momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=schedule_epochs)
        self.data_rng = torch.Generator().manual_seed(seed)
        self.epochs_done = 0
        self._loss = nn.CrossEntropyLoss()

    def train(self, epochs: int, progress=None) -> list[EpochStats]:
        """Trains ``epochs`` more epochs (not past the schedule's end). ``progress(step)`` is called per batch."""
        if self.epochs_done + epochs > self.schedule_epochs:
            raise ValueError(
                f"Trainer: {epochs} more epochs would pass the end of the {self.schedule_epochs}-epoch schedule "
                f"({self.epochs_done} done)"
            )
        stats = []
        self.model.train()
        for _ in range(epochs):
            learning_rate = self.optimizer.param_groups[0]["lr"]
            total_loss, correct, seen = 0.0, 0, 0
            batches = self.dataset.batches(
                "train", self.recipe.batch_size, shuffle=True, augment=self.recipe.augment, generator=self.data_rng
            )
            for x, y in batches:
                logits = self.model(x)
                loss = self._loss(logits, y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
                self.optimizer.step()
                total_loss += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                if progress is not None:
                    progress(1)
            self.scheduler.step()
            self.epochs_done += 1
            stats.append(EpochStats(self.epochs_done, total_loss / seen, correct / seen, learning_rate))
        return stats

    @torch.no_grad()
    def evaluate(self, split: str = "val", batch_size: int = 500) -> float:
        """Top-1 accuracy on ``split`` ("val" for selection; "test" only for final reports)."""
        self.model.eval()
        correct = total = 0
        for x, y in self.dataset.batches(split, batch_size):
            correct += (self.model(x).argmax(1) == y).sum().item()
            total += len(y)
        return correct / total

    def steps_per_epoch(self) -> int:
        return -(-len(self.dataset.train) // self.recipe.batch_size)

    # --- checkpoints ------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Writes a checkpoint atomically (a crash leaves the previous file or the new one, never half)."""
        path = Path(path)
        state = {
            "format": CHECKPOINT_FORMAT,
            "genotype": self.genotype.to_json(),
            "network_config": dataclasses.asdict(self.network_config),
            "recipe": dataclasses.asdict(self.recipe),
            "schedule_epochs": self.schedule_epochs,
            "seed": self.seed,
            "epochs_done": self.epochs_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data_rng": self.data_rng.get_state(),
        }
        with atomic_writer(path) as f:
            torch.save(state, f)
        return path

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset) -> Trainer:
        """The trainer saved at ``path``, ready to continue on ``dataset`` (the same data it trained on)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a pyaccel_nas EcoNAS checkpoint (expected format {CHECKPOINT_FORMAT})")
        trainer = cls(
            Genotype.from_json(state["genotype"]),
            dataset,
            NetworkConfig(**state["network_config"]),
            state["schedule_epochs"],
            TrainRecipe(**state["recipe"]),
            state["seed"],
        )
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.data_rng.set_state(state["data_rng"])
        trainer.epochs_done = state["epochs_done"]
        return trainer
