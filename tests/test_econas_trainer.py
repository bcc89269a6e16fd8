"""The proxy trainer: it learns, evaluates on the held-out split, and resumes exactly from checkpoints."""

from __future__ import annotations

import random

import pytest
import torch

from pyaccel_nas.data import load_dataset
from pyaccel_nas.econas import Genotype, NetworkConfig
from pyaccel_nas.econas.trainer import Trainer, TrainRecipe
from pyaccel_nas.training import TrainingDiverged

CONFIG = NetworkConfig(channels=4, layers=3, in_channels=1)
RECIPE = TrainRecipe(batch_size=64, learning_rate=0.05)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def make_trainer(digits, seed=0, schedule=4):
    return Trainer(Genotype.random(random.Random(seed)), digits, CONFIG, schedule_epochs=schedule, recipe=RECIPE, seed=seed)


def test_training_learns_and_reports(digits):
    trainer = make_trainer(digits)
    before = trainer.evaluate("val")
    stats = trainer.train(4)
    assert [s.epoch for s in stats] == [1, 2, 3, 4]
    assert stats[-1].loss < stats[0].loss
    assert stats[0].learning_rate == RECIPE.learning_rate > stats[-1].learning_rate  # cosine decay
    assert trainer.evaluate("val") > max(before, 0.3)  # 10 classes: chance is 0.1
    with pytest.raises(ValueError, match="pass the end of the 4-epoch schedule"):
        trainer.train(1)


def test_resume_from_checkpoint_equals_straight_training(digits, tmp_path):
    straight = make_trainer(digits, seed=3)
    straight.train(2)

    staged = make_trainer(digits, seed=3)
    staged.train(1)
    path = staged.save(tmp_path / "net.pt")
    resumed = Trainer.load(path, digits)
    assert resumed.epochs_done == 1 and resumed.genotype == staged.genotype
    resumed.train(1)

    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
    assert straight.evaluate() == resumed.evaluate()


def test_same_seed_same_result_other_seed_differs(digits):
    a, b, c = make_trainer(digits, seed=5), make_trainer(digits, seed=5), make_trainer(digits, seed=6)
    for t in (a, b, c):
        t.train(1)
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.model.parameters(), c.model.parameters()) if x.shape == y.shape)


def test_checkpoint_is_data_only_and_foreign_files_are_refused(digits, tmp_path):
    path = make_trainer(digits).save(tmp_path / "net.pt")
    state = torch.load(path, weights_only=True)  # no pickled code needed
    assert state["format"].startswith("pyaccel_nas.econas.checkpoint")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a pyaccel_nas EcoNAS checkpoint"):
        Trainer.load(tmp_path / "foreign.pt", digits)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write cleaned up


def test_a_truncated_checkpoint_is_refused_naming_the_file(digits, tmp_path):
    path = make_trainer(digits).save(tmp_path / "net.pt")
    data = path.read_bytes()
    for cut in (0, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"^{path}: not a readable torch file"):
            Trainer.load(path, digits)


def test_a_diverging_training_stops_at_the_first_non_finite_loss(digits):
    trainer = Trainer(Genotype.random(random.Random(0)), digits, CONFIG, schedule_epochs=2,
                      recipe=TrainRecipe(batch_size=64, learning_rate=1e30), seed=0)
    with pytest.raises(TrainingDiverged, match="the loss is (nan|inf)"):
        trainer.train(2)
    assert trainer.epochs_done == 0
