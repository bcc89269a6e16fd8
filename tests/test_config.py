"""The configuration system (pyaccel_nas.config): the commands' flags are made from the config fields, and a
command line builds the very configuration the hand-written flag maps built before (their presets are
copied here as they were)."""

from __future__ import annotations

import argparse

import pytest

from pyaccel_nas import cli
from pyaccel_nas.config import RunConfig
from pyaccel_nas.darts import DartsConfig
from pyaccel_nas.econas.search import SearchConfig
from pyaccel_nas.econas.study import StudyConfig
from pyaccel_nas.mdp.pipeline import PruneConfig

# the presets as the module-level PRESETS dicts held them before RunConfig
OLD_SEARCH = {
    "smoke": dict(proxy="c4r4s50e3", cycles=2, initial=4, children=(2, 1, 1), promote=(2, 1), age=3, tournament=2,
                  layers=5, batch_size=64, final_top=1, final_proxy="c4r4s25e3", threads=2),
    "cpu": dict(proxy="c4r4s10e6", cycles=4, initial=8, children=(3, 3, 2), promote=(4, 2), age=4, tournament=3,
                layers=6, batch_size=96, final_top=2, final_proxy="c4r2s5e6"),
    "paper": dict(),
}
OLD_DARTS = {
    "smoke": dict(proxy="c4r4s100e2", channels=16, layers=3, final_proxy="c4r4s50e2", final_channels=16,
                  final_layers=3, val_fraction=0.02),
    "cpu": dict(proxy="c4r2s10e6", channels=16, layers=5, final_proxy="c4r2s5e6", final_channels=16,
                final_layers=6),
    "paper": dict(),
}
OLD_STUDY = {
    "smoke": dict(architectures=4, ground_truth="c4r2s20e3", proxies=("c8r4s20e1", "c4r4s20e2"), layers=3),
    "cpu": dict(architectures=12, ground_truth="c4r4s5e6", proxies=("c4r4s10e3", "c8r4s10e3", "c4r4s20e2",
                                                                     "c8r4s20e1"), layers=5),
    "paper": dict(),
}
OLD_PRUNE = {
    "smoke": dict(train_divisor=200, eval_samples=200, pretrain_epochs=1, search_epochs=1, finetune_epochs=1,
                  batch_size=32, latency_batch=16, latency_repeats=2,
                  latency_threads=(1,)),  # added with latency at 1 and 2 threads (issue 18)
    "cpu": dict(train_divisor=10, eval_samples=None, pretrain_epochs=4, search_epochs=1, finetune_epochs=5,
                batch_size=32, learning_rate=0.05, finetune_learning_rate=0.03, alpha=3.0, eta=0.01),
    "paper": dict(),
}


def configured(*argv: str):
    args = cli.build_parser().parse_args([*argv, "--out", "unused"])
    return cli.run_config(args)


# (command line, the old code's result: its preset and the overrides its flag maps passed); a command line
# without --preset now starts from cpu (it used to start the paper-sized run: days on a CPU)
CASES = [
    (["search"], SearchConfig, OLD_SEARCH["cpu"], {}),
    *[(["search", "--preset", name], SearchConfig, OLD_SEARCH[name], {}) for name in OLD_SEARCH],
    (["search", "--preset", "cpu", "--strategy", "evolution", "--dataset", "mnist", "--data-root", "/d",
      "--proxy", "c8r4s0e6", "--cycles", "7", "--budget", "1e12", "--seed", "3", "--final-top", "1",
      "--final-proxy", "c4r4s0e6", "--layers", "4", "--channels", "12", "--threads", "3"],
     SearchConfig, OLD_SEARCH["cpu"],
     dict(strategy="evolution", dataset="mnist", data_root="/d", proxy="c8r4s0e6", cycles=7, budget=1e12, seed=3,
          final_top=1, final_proxy="c4r4s0e6", layers=4, channels=12, threads=3)),
    (["search", "--preset", "smoke", "--seed", "0", "--strategy", "random"], SearchConfig, OLD_SEARCH["smoke"],
     dict(seed=0, strategy="random")),
    (["search", "--strategy", "darts"], DartsConfig, OLD_DARTS["cpu"], {}),
    *[(["search", "--strategy", "darts", "--preset", name], DartsConfig, OLD_DARTS[name], {}) for name in OLD_DARTS],
    (["search", "--strategy", "darts", "--preset", "smoke", "--dataset", "cifar10", "--data-root", "/d",
      "--proxy", "c4r4s50e1", "--budget", "2.5e11", "--seed", "5", "--final-top", "0", "--final-proxy",
      "c4r4s0e2", "--layers", "4", "--channels", "8", "--max-skips", "2", "--unrolled", "--reference-ops",
      "--threads", "2"],  # --threads never reached DARTS
     DartsConfig, OLD_DARTS["smoke"],
     dict(dataset="cifar10", data_root="/d", proxy="c4r4s50e1", budget=2.5e11, seed=5, final_top=0,
          final_proxy="c4r4s0e2", layers=4, channels=8, max_skips=2, unrolled=True, fused=False)),
    (["proxy-study"], StudyConfig, OLD_STUDY["cpu"], {}),
    *[(["proxy-study", "--preset", name], StudyConfig, OLD_STUDY[name], {}) for name in OLD_STUDY],
    (["proxy-study", "--preset", "cpu", "--dataset", "digits", "--data-root", "/d", "--architectures", "5",
      "--ground-truth", "c4r4s5e8", "--seed", "2", "--layers", "3", "--proxies", "c4r4s10e3,c8r4s0e2",
      "--threads", "2"],
     StudyConfig, OLD_STUDY["cpu"],
     dict(dataset="digits", data_root="/d", architectures=5, ground_truth="c4r4s5e8", seed=2, layers=3,
          proxies=("c4r4s10e3", "c8r4s0e2"), threads=2)),
    (["proxy-study", "--proxies", "c4r4s0e60"], StudyConfig, OLD_STUDY["cpu"], dict(proxies=("c4r4s0e60",))),
    (["prune"], PruneConfig, OLD_PRUNE["cpu"], {}),
    *[(["prune", "--preset", name], PruneConfig, OLD_PRUNE[name], {}) for name in OLD_PRUNE],
    (["prune", "--preset", "cpu", "--model", "resnet56", "--dataset", "cifar10", "--data-root", "/d", "--seed",
      "4", "--pretrain-epochs", "0", "--search-epochs", "2", "--finetune-epochs", "3", "--train-divisor", "5",
      "--learning-rate", "0.2", "--finetune-learning-rate", "0.02", "--alpha", "0", "--eta", "1e-3", "--beta",
      "0.25", "--round-to", "8", "--mac-reduction", "3"],
     PruneConfig, OLD_PRUNE["cpu"],
     dict(model="resnet56", dataset="cifar10", data_root="/d", seed=4, pretrain_epochs=0, search_epochs=2,
          finetune_epochs=3, train_divisor=5, learning_rate=0.2, finetune_learning_rate=0.02, alpha=0.0, eta=1e-3,
          beta=0.25, round_to=8, mac_reduction=3.0)),
    (["prune", "--preset", "smoke", "--threshold", "0.05"], PruneConfig, OLD_PRUNE["smoke"],
     dict(threshold=0.05, mac_reduction=None)),
]


@pytest.mark.parametrize("argv, kind, old_preset, overrides", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_command_line_builds_the_config_the_old_flag_maps_built(argv, kind, old_preset, overrides):
    config = configured(*argv)
    assert type(config) is kind
    assert config == kind(**{**old_preset, **overrides})


@pytest.mark.parametrize("kind, old", [(SearchConfig, OLD_SEARCH), (DartsConfig, OLD_DARTS),
                                       (StudyConfig, OLD_STUDY), (PruneConfig, OLD_PRUNE)])
def test_presets_are_the_old_ones(kind, old):
    assert list(kind.PRESETS) == list(old)
    for name, fields in old.items():
        assert kind.preset(name) == kind(**fields)
    assert issubclass(kind, RunConfig)


@pytest.mark.parametrize("argv, message", [
    (["search", "--max-skips", "2"], "--max-skips applies to --strategy darts only"),
    (["search", "--strategy", "evolution", "--unrolled"], "--unrolled applies to --strategy darts only"),
    (["search", "--reference-ops"], "--reference-ops applies to --strategy darts only"),
    (["search", "--strategy", "darts", "--cycles", "3"], "--cycles does not apply to --strategy darts"),
    (["search", "--strategy", "darts", "--final-top", "2"], "`final_top` must be 0 or 1"),
    (["search", "--cycles", "0"], "`cycles` must be >= 1"),
    (["proxy-study", "--architectures", "2"], "at least 3 architectures"),
    (["proxy-study", "--proxies", ","], "at least one proxy"),
    (["prune", "--preset", "smoke", "--round-to", "0"], "`round_to` must be >= 1"),
    (["prune", "--mac-reduction", "1"], "`mac_reduction` must be > 1"),
])
def test_settings_a_run_cannot_use_are_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        configured(*argv)


@pytest.mark.parametrize("argv", [
    ["search", "--budget", "-1"], ["search", "--budget", "nan"], ["search", "--dataset", "imagenet"],
    ["search", "--strategy", "darts", "--budget", "0"], ["proxy-study", "--dataset", "imagenet"],
    ["prune", "--model", "resnet34"], ["prune", "--alpha", "-1"], ["prune", "--learning-rate", "0"],
    ["prune", "--threshold", "0.1", "--mac-reduction", "2"], ["prune", "--preset", "huge"],
])
def test_flags_refuse_bad_values_before_anything_runs(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        configured(*argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_shows_each_presets_value_once_from_the_config():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    search = " ".join(commands["search"].format_help().split())
    assert "(smoke: 2, cpu: 4, paper: 100)" in search  # --cycles
    prune = " ".join(commands["prune"].format_help().split())
    assert "(smoke: 1, cpu: 4, paper: 100)" in prune  # --pretrain-epochs


def test_from_arguments_puts_the_commands_own_settings_on_top():
    parser = argparse.ArgumentParser()
    StudyConfig.add_arguments(parser, default_preset="smoke")
    args = parser.parse_args(["--seed", "3"])
    assert StudyConfig.from_arguments(args, seed=4, threads=2) == StudyConfig.preset("smoke", seed=4, threads=2)
    only = argparse.ArgumentParser()
    DartsConfig.add_arguments(only, default_preset=None, only=["max_skips"])
    assert [a.dest for a in only._actions if a.dest != "help"] == ["max_skips"]
