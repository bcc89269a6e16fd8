"""Training one network under a proxy, in stages along one cosine schedule, with exact resume.

The recipe is the paper's (DARTS'): SGD with momentum and weight decay, gradient-norm clipping, one cosine
learning-rate schedule over ``schedule_epochs`` (3E for the hierarchical strategy) that training follows
stage by stage. A checkpoint after a stage holds the weights, the optimizer and scheduler state and the
data-order RNG, so training E epochs, saving, loading and training E more gives exactly the weights that
2E epochs in one go give. Checkpoints are tensors and plain data, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from pyaccel_nas.data import Dataset
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.econas.network import Network, NetworkConfig
from pyaccel_nas.exec.files import atomic_writer
from pyaccel_nas.training import EpochStats, ModelTrainer, TrainRecipe
from pyaccel_nas.validation import load_tensors

__all__ = ["CHECKPOINT_FORMAT", "EpochStats", "TrainRecipe", "Trainer"]

CHECKPOINT_FORMAT = "pyaccel_nas.econas.checkpoint/1"


class Trainer(ModelTrainer):
    """One EcoNAS network, its optimizer and its place in the schedule, with checkpoints.

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
        self.genotype = genotype
        self.network_config = network_config
        with torch.random.fork_rng(devices=[]):  # initialise from the seed without touching the global RNG
            torch.manual_seed(seed)
            model = Network(genotype, network_config)
        super().__init__(model, dataset, schedule_epochs, recipe, seed)

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
        """The trainer saved at ``path``, ready to continue on ``dataset`` (the same data it trained on);
        ValueError naming the file if it is not a whole checkpoint."""
        state = load_tensors(path)
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
