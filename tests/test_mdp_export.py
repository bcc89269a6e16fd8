"""Pruned MDP networks save, reload (state_dict + JSON config, weights_only) and export with torch.export."""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings

import pytest
import torch

from mdp_helpers import example, randomised
from pyaccel_nas.mdp import ArchConfig, MDPNet, export_model, load_model, prune, save_model
from pyaccel_nas.mdp.export import fold_batchnorms
from pyaccel_nas.validation import CheckpointError


@pytest.fixture(params=["resnet20", "c3d", "i3d", "mixed"])
def pruned(request):
    net = randomised(request.param)
    return prune(net, threshold=0.5, round_to=2).model.eval(), net


def test_save_and_load_round_trip(pruned, tmp_path):
    model, _ = pruned
    path = save_model(model, tmp_path / "pruned.pt")
    assert (tmp_path / "pruned.json").is_file()
    assert json.loads((tmp_path / "pruned.json").read_text())["format"] == "pyaccel_nas.mdp.arch/1"
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    x = example(model)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # the weights are tensors only: the safe loader reads them
    assert set(torch.load(path, weights_only=True)["state_dict"]) == set(model.state_dict())


def test_load_refuses_mismatched_weights_and_code_in_the_weights(pruned, tmp_path, capsys):
    model, over = pruned
    path = save_model(model, tmp_path / "pruned.pt")
    # weights of another architecture under this config's digest
    torch.save({**torch.load(path, weights_only=True), "state_dict": over.state_dict()}, path)
    with pytest.raises(ValueError, match="do not fit") as refused:
        load_model(path)
    assert "\n" not in str(refused.value)  # the line per tensor stays in the chained exception

    class Payload:
        def __reduce__(self):
            return (print, ("ran code from the checkpoint",))

    path.write_bytes(pickle.dumps({"x": Payload()}, protocol=2))
    with pytest.raises(CheckpointError, match="pruned.pt: not a readable torch file"):
        load_model(path)
    assert "ran code" not in capsys.readouterr().out


def with_other_first_factor(config: ArchConfig) -> ArchConfig:
    """``config`` with its first block at another resolution: another network, the same state_dict layout."""
    first = config.blocks[0]
    factor = (2,) * config.dims if first.factors[0] == (1,) * config.dims else (1,) * config.dims
    other = config.replace_blocks([dataclasses.replace(first, factors=(factor,)), *config.blocks[1:]])
    return ArchConfig.from_json(other.to_json())  # validated: the factor fits


def test_load_refuses_the_config_of_another_network(pruned, tmp_path):
    model, _ = pruned
    path = save_model(model, tmp_path / "pruned.pt")
    other = with_other_first_factor(model.config)
    MDPNet(other).load_state_dict(model.state_dict())  # the shapes cannot tell the two apart
    other.save(tmp_path / "pruned.json")
    with pytest.raises(ValueError, match="do not belong together") as refused:
        load_model(path)
    message = str(refused.value)
    assert str(path) in message and str(tmp_path / "pruned.json") in message and "\n" not in message


def test_load_refuses_weights_without_the_config_digest_until_adopted(pruned, tmp_path):
    """A bare state_dict (what save_model wrote before the digest) is refused, not trusted; load_model's
    docstring says how whoever knows the pair belongs together adopts it."""
    model, _ = pruned
    path = save_model(model, tmp_path / "pruned.pt")
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="without the digest") as refused:
        load_model(path)
    assert "\n" not in str(refused.value)
    adopted = MDPNet(ArchConfig.load(tmp_path / "pruned.json"))
    adopted.load_state_dict(torch.load(path, weights_only=True))
    save_model(adopted, path)
    assert load_model(path).config == model.config


def test_load_validates_the_config(pruned, tmp_path):
    model, _ = pruned
    path = save_model(model, tmp_path / "pruned.pt")
    data = json.loads((tmp_path / "pruned.json").read_text())
    data["blocks"][0]["out"] = -1
    (tmp_path / "pruned.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="out"):
        load_model(path)


def test_torch_export_round_trip(pruned, tmp_path):
    model, _ = pruned
    program = export_model(model)
    torch.export.save(program, tmp_path / "pruned.pt2")
    reloaded = torch.export.load(tmp_path / "pruned.pt2").module()
    x = example(model, 1)
    torch.testing.assert_close(reloaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_torchscript_trace_round_trip(pruned, tmp_path):
    model, _ = pruned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, yet still what some deploy
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        traced = torch.jit.trace(model, example(model, 2))
        traced.save(str(tmp_path / "pruned.ts"))
        reloaded = torch.jit.load(str(tmp_path / "pruned.ts"))
    x = example(model, 5)  # another batch size than traced
    torch.testing.assert_close(reloaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_fold_batchnorms_keeps_outputs_and_refuses_branches(pruned):
    model, over = pruned
    folded = fold_batchnorms(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = example(model)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="resolution branches"):
        fold_batchnorms(over)
