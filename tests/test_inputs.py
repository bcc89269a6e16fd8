"""What a run is handed: numbers that are numbers, input files whose errors are short and name the file,
output directories checked before any work; and the CLI's one-line errors (exit status 2, --debug)."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from pyaccel_nas import cli
from pyaccel_nas.darts import DartsConfig
from pyaccel_nas.darts.run import CHECKPOINT_NAME
from pyaccel_nas.econas.genotype import Genotype, GenotypeError
from pyaccel_nas.econas.search import SearchConfig
from pyaccel_nas.econas.study import StudyConfig
from pyaccel_nas.exec.files import write_json_atomically
from pyaccel_nas.mdp.pipeline import PruneConfig
from pyaccel_nas.training import TrainRecipe
from pyaccel_nas.validation import CheckpointError, load_tensors

TRAIN = ["train", "--dataset", "digits", "--setting", "c4r0s0e1", "--layers", "3", "--channels", "8"]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """The CLI's exit status and what it wrote to stderr."""
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def genotype_file(tmp_path, content: bytes):
    path = tmp_path / "genotype.json"
    path.write_bytes(content)
    return path


# --- numbers are numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["search", "--budget", "nan"], ["search", "--budget", "inf"], ["search", "--budget", "-1"],
    ["train", "--genotype", "g.json", "--learning-rate", "nan"],
    ["prune", "--mac-reduction", "nan"], ["prune", "--mac-reduction", "1e999"], ["prune", "--threshold", "nan"],
    ["prune", "--threshold", "-0.1"], ["prune", "--learning-rate=-inf"], ["prune", "--beta", "NaN"],
])
def test_cli_refuses_numbers_that_are_not_finite_or_in_range(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--out", "unused"])
    assert exit_.value.code == 2
    assert "expected a" in capsys.readouterr().err


@pytest.mark.parametrize("make, field", [
    (SearchConfig, "budget"), (SearchConfig, "learning_rate"), (DartsConfig, "budget"),
    (DartsConfig, "learning_rate_min"), (DartsConfig, "arch_learning_rate"), (StudyConfig, "learning_rate"),
    (PruneConfig, "mac_reduction"), (PruneConfig, "learning_rate"), (PruneConfig, "beta"), (TrainRecipe, "momentum"),
    (TrainRecipe, "learning_rate"),
])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_configs_refuse_nan_and_inf(make, field, value):
    with pytest.raises(ValueError, match=f"`{field}` must be a finite number"):
        make(**{field: value})


def test_prune_config_refuses_a_nan_threshold():
    with pytest.raises(ValueError, match="`threshold` must be a finite number"):
        PruneConfig(mac_reduction=None, threshold=math.nan)


def test_no_nan_is_written_to_json(tmp_path):
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json_atomically(tmp_path / "result.json", {"accuracy": math.nan})
    assert not list(tmp_path.iterdir())


# --- errors are short and name the file ---------------------------------------------------------------


def test_a_huge_bad_genotype_gives_a_short_error(tmp_path, capsys):
    edges = [["sep_conv_3x3" * 1000, 0]] * 400  # 5 MB
    path = genotype_file(tmp_path, json.dumps({"normal": edges, "reduce": edges}).encode())
    assert path.stat().st_size > 5_000_000
    code, err = run_cli(capsys, *TRAIN, "--genotype", path, "--out", tmp_path / "run")
    assert code == 2 and len(err) < 1000
    assert err.startswith("pyaccel-nas: error: ") and str(path) in err and "must list 8" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    (b"[" * 100_000, "nested too deeply"),
    (b'{"normal": [["none", ' + b"9" * 5000 + b"]]}", "integer string conversion"),
    (json.dumps({"normal": [["none", 10**3999 - 1]] + [["none", 0]] * 7, "reduce": []}).encode(),
     r"input must be an int in \[0, 2\), got 9+\.\.\.9+$"),
    (b'{"normal": "\xff\xfe"}', "can't decode byte 0xff"),
    (b'{"normal": [1, 2, 3, 4, 5, 6, 7, 8], "reduce": []}', "edge 0 must be an .operation, input. pair, got 1"),
])
def test_malformed_genotype_files_are_genotype_errors_naming_the_file(tmp_path, content, message):
    path = genotype_file(tmp_path, content)
    with pytest.raises(GenotypeError, match=message) as error:
        Genotype.load(path)
    assert str(error.value).startswith(f"{path}: ") and len(str(error.value)) < 400


def test_bad_genotype_files_end_the_cli_with_one_line_and_status_2(tmp_path, capsys):
    path = genotype_file(tmp_path, b"[" * 100_000)
    code, err = run_cli(capsys, *TRAIN, "--genotype", path, "--out", tmp_path / "run")
    assert (code, err) == (2, f"pyaccel-nas: error: {path}: not a JSON genotype: nested too deeply\n")
    assert not (tmp_path / "run").exists()  # the inputs are checked before the output directory is made
    with pytest.raises(GenotypeError, match="nested too deeply"):
        cli.main(["--debug", *TRAIN, "--genotype", str(path), "--out", str(tmp_path / "run")])
    with pytest.raises(GenotypeError, match="nested too deeply"):
        cli.main([*TRAIN, "--genotype", str(path), "--out", str(tmp_path / "run"), "--debug"])


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise RuntimeError("a bug deep in torch")

    monkeypatch.setattr(cli, "_info", broken)
    with pytest.raises(RuntimeError, match="a bug deep in torch"):
        cli.main(["info"])


def truncated_torch_file(path, keep: int = -10):
    """A torch file of ``keep`` bytes (negative: all but as many)."""
    torch.save({"weights": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_torch_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "net.pt"
    for keep in (0, 10, 2000, -10):  # empty, no zip header, no central directory, a truncated end
        truncated_torch_file(path, keep)
        with pytest.raises(CheckpointError, match="not a readable torch file") as error:
            load_tensors(path)
        assert str(error.value).startswith(f"{path}: ") and len(str(error.value)) < 400


def test_a_truncated_checkpoint_ends_a_resume_with_one_line(tmp_path, capsys):
    truncated_torch_file(tmp_path / CHECKPOINT_NAME)
    code, err = run_cli(capsys, "search", "--strategy", "darts", "--preset", "smoke", "--out", tmp_path, "--resume")
    assert code == 2 and err.startswith(f"pyaccel-nas: error: {tmp_path / CHECKPOINT_NAME}: not a readable torch file")
    assert len(err.splitlines()) == 1


# --- outputs are never silently overwritten, errors come before work ---------------------------------------


def test_train_refuses_a_finished_run_unless_overwrite(tmp_path, capsys):
    path = tmp_path / "genotype.json"
    Genotype.random(random.Random(0)).save(path)
    out = tmp_path / "run"
    assert run_cli(capsys, *TRAIN, "--genotype", path, "--out", out)[0] == 0
    first = (out / "train.json").read_text()
    code, err = run_cli(capsys, *TRAIN, "--genotype", path, "--out", out, "--seed", "1")
    assert code == 2 and f"{out / 'train.json'} exists" in err and "--overwrite" in err
    assert (out / "train.json").read_text() == first
    assert run_cli(capsys, *TRAIN, "--genotype", path, "--out", out, "--seed", "1", "--overwrite")[0] == 0
    assert json.loads((out / "train.json").read_text()) != json.loads(first)


def test_train_checks_out_is_writable_before_training(tmp_path, capsys, monkeypatch):
    import pyaccel_nas.econas.evaluation as evaluation

    monkeypatch.setattr(evaluation, "run_evaluation", lambda task: pytest.fail("trained before checking --out"))
    path = tmp_path / "genotype.json"
    Genotype.random(random.Random(0)).save(path)
    (tmp_path / "file").write_text("")
    code, err = run_cli(capsys, *TRAIN, "--genotype", path, "--out", tmp_path / "file" / "run")
    assert code == 2 and str(tmp_path / "file") in err
