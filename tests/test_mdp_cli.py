"""``pyaccel-nas prune --preset smoke`` for a 2-D and two 3-D bases: the report, plot and models it writes, the
pruned model exporting."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyaccel_nas.mdp import export_model, load_model
from pyaccel_nas.mdp.arch import INCEPTION_OUTPUT

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model, dataset", [("resnet20", "fashion-mnist"), ("c3d", "moving-digits"),
                                            ("i3d", "moving-digits")])
def test_smoke_prune_cli(model, dataset, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # no wall-time assertion: on a loaded machine a smoke run takes minutes; speed lives in benchmarks/
    done = subprocess.run(
        [sys.executable, "-m", "pyaccel_nas.cli", "prune", "--preset", "smoke", "--model", model, "--dataset", dataset,
         "--seed", "1", "--out", str(out)], env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "search" in done.stderr and "fine-tune" in done.stderr  # the progress bars
    assert "channel-only arm" in done.stdout
    report = json.loads((out / "report.json").read_text())
    for key in ("params", "macs", "cpu_latency_ms", "cpu_latency_ms_nchw", "accuracy"):
        assert set(report[key]) == {"before", "after"}
    assert report["macs"]["after"] <= report["macs"]["before"] / 2
    # the channel-only arm: at most MDP's MACs, the same fields, timed in the same turns
    arm = report["channel_only"]
    assert arm["macs"] <= report["macs"]["after"] and arm["pruning"]["mac_budget"] == report["macs"]["after"]
    assert arm["speedup"] == pytest.approx(report["cpu_latency_ms"]["before"] / arm["cpu_latency_ms"])
    assert len(arm["blocks"]) == len(report["blocks"]) and len(arm["finetune"]["epochs"]) == 1
    run = report["latency"]["runs"][-2]  # the headline thread count, channels-last
    assert run["layout"] == "channels_last" and set(run["ms"]) == {"before", "after", "channel_only"}
    assert run["ms"]["after"]["median"] == report["cpu_latency_ms"]["after"]
    assert report["provenance"]["machine"]["cores"] >= 1 and "commit" in report["provenance"]
    assert report["provenance"]["machine"]["threads"] == 1
    assert load_model(out / "channel_only.pt")(torch.zeros(1, *report["dataset"]["input"])).shape == (1, 10)
    assert report["config"]["seed"] == 1 and report["baseline_epochs"] == 3
    assert all({"factor", "channels_before", "channels_after", "kept"} <= set(b) for b in report["blocks"])
    for block in report["blocks"]:  # an Inception block's output concatenates its columns
        output = ("out",) if "out" in block["kept"] else INCEPTION_OUTPUT
        assert sum(len(block["kept"][name]) for name in output) == block["channels_after"]
    assert (out / "report.png").stat().st_size > 10_000
    pruned = load_model(out / "pruned.pt")
    x = torch.randn(2, *report["dataset"]["input"])
    assert pruned(x).shape == (2, 10)
    torch.testing.assert_close(export_model(pruned, batch=2, fold=True).module()(x), pruned(x), rtol=1e-4, atol=1e-4)


def test_bad_settings_are_refused_before_any_training(tmp_path):
    from pyaccel_nas.mdp.pipeline import PruneConfig, run_prune

    with pytest.raises(ValueError, match="round_to"):
        PruneConfig.preset("smoke", round_to=0)
    with pytest.raises(ValueError, match="exactly one"):
        PruneConfig.preset("smoke", threshold=0.1)  # the preset also sets mac_reduction
    with pytest.raises(ValueError, match="finetune_learning_rate"):
        PruneConfig.preset("smoke", finetune_learning_rate=0.0)
    with pytest.raises(ValueError, match="unknown preset"):
        PruneConfig.preset("huge")
    with pytest.raises(ValueError, match="`cost` must be one of macs, latency"):
        PruneConfig.preset("smoke", cost="flops")
    with pytest.raises(ValueError, match="`group_score` must be one of max, mean"):
        PruneConfig.preset("smoke", group_score="min")
    with pytest.raises(ValueError, match="`latency_threads` must be thread counts >= 1"):
        PruneConfig.preset("smoke", latency_threads=(0,))
    with pytest.raises(ValueError, match="unknown model"):
        PruneConfig.preset("smoke", model="resnet34")
    with pytest.raises(ValueError, match="`image_size` must be >= 1"):
        PruneConfig.preset("smoke", image_size=0)
    with pytest.raises(ValueError, match="3-D but dataset 'digits' holds images"):
        run_prune(PruneConfig.preset("smoke", model="c3d", dataset="digits"), tmp_path)


def test_prune_refuses_a_finished_run_and_an_unreachable_reduction_before_training(tmp_path, capsys, monkeypatch):
    from pyaccel_nas import cli
    from pyaccel_nas.mdp import pipeline

    monkeypatch.setattr(pipeline, "_train", lambda *args: pytest.fail("trained before refusing"))
    (tmp_path / "report.json").write_text("{}")
    assert cli.main(["prune", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'report.json'} exists" in err and "--overwrite" in err
    # resnet20 on 28x28 images: every block at 1/4 resolution and 4 channels a group is 1/233.7 of the MACs
    argv = ["prune", "--preset", "smoke", "--mac-reduction", "300", "--out", str(tmp_path), "--overwrite"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "`mac_reduction` 300 is out of reach" in err and "at most 233.7" in err


def test_a_missing_torch_pruning_is_refused_before_training(tmp_path, monkeypatch):
    from pyaccel_nas.mdp import pipeline

    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # import fails
    monkeypatch.setattr(pipeline, "_train", lambda *args: pytest.fail("trained before refusing"))
    with pytest.raises(ImportError, match="--no-channel-only"):
        pipeline.run_prune(pipeline.PruneConfig.preset("smoke"), tmp_path, progress=False)


def test_a_budget_the_searched_resolutions_miss_fails_after_saving_the_baseline(tmp_path):
    from pyaccel_nas.mdp.pipeline import PruneConfig, run_prune
    from pyaccel_nas.mdp.prune import MacBudgetError

    # reachable only if the one search epoch picked the lowest resolution in every block
    saved = re.escape(f"the trained baseline is saved in {tmp_path / 'baseline.pt'}")
    with pytest.raises(MacBudgetError, match=f"allow a `mac_reduction` of at most [0-9.]+ .*; {saved}$"):
        run_prune(PruneConfig.preset("smoke", mac_reduction=233), tmp_path, progress=False)
    assert load_model(tmp_path / "baseline.pt")(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    assert not (tmp_path / "report.json").exists()
