"""The benchmark table's loader and the rank-consistency study computed from a table (``bench study``)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import stats

from pyaccel_nas.bench.build import BenchConfig, sample_architectures
from pyaccel_nas.bench.study import efficient_frontier, setting_groups, study_markdown, study_table
from pyaccel_nas.bench.table import TABLE_FORMAT, TableError, load_table, write_table
from pyaccel_nas.cli import main
from pyaccel_nas.econas.proxy import Proxy

TRAIN_IMAGES = 54_000
REFERENCE = "c4r2s5e6"
ARCHITECTURES = 30
SEED = 3


def _measurement(val: dict[int, float], macs: int, test: float | None = None) -> dict:
    entry = {"val": {str(epoch): accuracy for epoch, accuracy in val.items()}, "macs_per_image": macs,
             "params": 1_000, "seconds": 1.0}
    return entry if test is None else {**entry, "test": test}


def _write(path, settings: dict[str, list[dict]], truth: list[float]):
    """A table of len(truth) architectures: ``settings[name][i]`` is architecture i's entry under ``name``
    (a measurement or an error), ``truth[i]`` its reference test accuracy (None: the reference failed)."""
    header = {"format": TABLE_FORMAT, "complete": True,
              "config": {"dataset": "synthetic", "settings": list(settings), "reference": REFERENCE},
              "train_images": TRAIN_IMAGES, "built_with": {}}
    rows = [{"id": i, "genotype": genotype.to_dict(),
             "settings": {name: entries[i] for name, entries in settings.items()},
             "reference": {"setting": REFERENCE, **({"error": "diverged"} if truth[i] is None else
                                                    _measurement({6: truth[i]}, 10_000 + i, test=truth[i]))}}
            for i, genotype in enumerate(sample_architectures(len(truth), seed=0))]
    write_table(path, header, rows)
    return path


@pytest.fixture
def known(tmp_path):
    """30 architectures; c4r4s10e6 ranks them exactly as the truth after 6 epochs (rho = 1), unrelated
    after 2 and noisily after 4; c8r2s10e6 failed on architectures 0-4, and the reference on 29."""
    rng = np.random.default_rng(SEED)
    truth = list(rng.uniform(0.6, 0.9, ARCHITECTURES))
    shuffled, noisy = rng.permutation(truth), truth + rng.normal(0, 0.05, ARCHITECTURES)
    exact = [_measurement({2: shuffled[i], 4: float(np.clip(noisy[i], 0, 1)), 6: t ** 2}, 2_000 + i)
             for i, t in enumerate(truth)]
    failing = [{"error": "out of memory"} if i < 5 else _measurement({2: shuffled[i], 4: t, 6: t}, 3_000)
               for i, t in enumerate(truth)]
    truth[-1] = None
    return _write(tmp_path / "table.jsonl", {"c4r4s10e6": exact, "c8r2s10e6": failing}, truth), truth


def _points(result: dict) -> dict[tuple[str, int], dict]:
    return {(p["setting"], p["epoch"]): p for p in result["points"]}


def _scipy_interval(statistic, x, y, resamples: int, seed: int) -> tuple[float, float]:
    result = stats.bootstrap((x, y), lambda a, b: statistic(a, b).statistic, paired=True, vectorized=False,
                             n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed))
    return result.confidence_interval.low, result.confidence_interval.high


def test_correlations_and_intervals_are_scipy_s(known):
    path, truth = known
    table = load_table(path)
    points = _points(study_table(table, resamples=300, seed=7))
    assert sorted(points) == [(name, e) for name in ("c4r4s10e6", "c8r2s10e6") for e in (2, 4, 6)]
    exact = points["c4r4s10e6", 6]
    assert exact["spearman"] == {"value": pytest.approx(1), "low": pytest.approx(1), "high": pytest.approx(1)}
    assert exact["kendall"]["value"] == pytest.approx(1)
    used = [a for a in table.architectures if a.reference is not None]
    ground = [a.reference.test for a in used]
    for epoch in (2, 4):
        scores = [a.settings["c4r4s10e6"].val[epoch] for a in used]
        for key, statistic in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
            entry = points["c4r4s10e6", epoch][key]
            assert entry["value"] == pytest.approx(statistic(scores, ground).statistic)
            assert (entry["low"], entry["high"]) == pytest.approx(_scipy_interval(statistic, scores, ground, 300, 7))
            assert entry["low"] <= entry["value"] <= entry["high"]
    # the interval of a noisy ranking lies above the unrelated one
    assert points["c4r4s10e6", 2]["spearman"]["value"] < points["c4r4s10e6", 4]["spearman"]["low"]


def test_failed_measurements_are_left_out(known):
    path, truth = known
    table = load_table(path)
    points = _points(study_table(table, resamples=50))
    assert points["c4r4s10e6", 6]["architectures"] == ARCHITECTURES - 1  # the reference failed on one
    entry = points["c8r2s10e6", 4]
    assert entry["architectures"] == ARCHITECTURES - 6
    assert entry["spearman"]["value"] == pytest.approx(1)  # its accuracies are the truth where present
    scores = [a.settings["c8r2s10e6"].val[2] for a in table.architectures[5:-1]]
    assert points["c8r2s10e6", 2]["kendall"]["value"] == pytest.approx(
        stats.kendalltau(scores, truth[5:-1]).statistic)


def test_undefined_correlations_are_none(tmp_path):
    truth = [0.7, 0.8, 0.9, 0.6]
    settings = {"c4r4s10e6": [_measurement({6: 0.5}, 1_000)] * 4,  # ranks every architecture equal
                "c8r2s10e6": [_measurement({6: 0.5 + i / 10}, 1_000) if i < 2 else {"error": "x"} for i in range(4)],
                "c8r4s10e6": [_measurement({6: t}, 1_000) for t in truth[:3]] + [{"error": "x"}]}
    points = _points(study_table(load_table(_write(tmp_path / "t.jsonl", settings, truth)), resamples=200))
    for key in ("spearman", "kendall"):
        assert points["c4r4s10e6", 6][key] == {"value": None, "low": None, "high": None}
        assert points["c8r2s10e6", 6][key] == {"value": None, "low": None, "high": None}  # 2 pairs
    # 3 pairs: a correlation, but resamples that draw one architecture thrice leave the interval undefined
    assert points["c8r4s10e6", 6]["spearman"] == {"value": pytest.approx(1), "low": None, "high": None}
    assert points["c8r2s10e6", 6]["cost_vs_reference"] is not None  # what it cost is known all the same


def test_paired_differences_are_scipy_s_paired_bootstrap(tmp_path):
    rng = np.random.default_rng(SEED)
    truth = list(rng.uniform(0.6, 0.9, ARCHITECTURES))
    x, y = (np.array(truth) + rng.normal(0, sd, ARCHITECTURES) for sd in (0.02, 0.08))  # x ranks better
    settings = {"c4r4s10e6": [_measurement({2: 0.1, 6: v}, 2_000) for v in x],
                "c8r2s10e6": [_measurement({2: 0.1, 6: v}, 2_000) for v in y],
                "c8r4s10e6": [_measurement({6: v}, 1_000) for v in y]}  # in no group with the others
    result = study_table(load_table(_write(tmp_path / "t.jsonl", settings, truth)), resamples=400, seed=5)
    (difference,) = result["differences"]
    assert (difference["question"], difference["first"], difference["second"], difference["epochs"]) == (
        "channels_vs_resolution", "c4r4s10e6", "c8r2s10e6", [6, 6])

    def expected(a, b, t):
        return stats.spearmanr(a, t).statistic - stats.spearmanr(b, t).statistic

    interval = stats.bootstrap((x, y, truth), expected, paired=True, vectorized=False, n_resamples=400,
                               method="percentile", rng=np.random.default_rng(5)).confidence_interval
    assert difference["spearman_difference"] == {"value": pytest.approx(expected(x, y, truth)),
                                                 "low": pytest.approx(interval.low),
                                                 "high": pytest.approx(interval.high)}
    assert 0 < difference["spearman_difference"]["low"]  # the better ranking shows, paired
    assert "| channels vs resolution | s10e6, c x r = 16 | c4r4s10e6 - c8r2s10e6 |" in study_markdown(result)


def test_cost_is_relative_to_the_reference_per_architecture(known):
    path, _ = known
    table = load_table(path)
    point = _points(study_table(table, resamples=10))["c4r4s10e6", 4]
    # c4r4s10e6 after 4 epochs on a tenth of the images, the reference 6 epochs on a fifth
    expected = np.mean([(2_000 + a.id) * (TRAIN_IMAGES // 10) * 4 / ((10_000 + a.id) * (TRAIN_IMAGES // 5) * 6)
                        for a in table.architectures[:-1]])
    assert point["cost_vs_reference"] == pytest.approx(expected)
    assert Proxy.parse("c4r4s10e6").cost(2_000, TRAIN_IMAGES, 4) == 2_000 * 5_400 * 4 * 3


def test_groups_of_the_cpu_grid():
    groups = setting_groups(list(BenchConfig.PRESETS["cpu"]["settings"]))
    # c4r4 at 0.6 passes over the training set three ways; c8r4s20e3 (0.15) and c8r4s10e6 (0.6) differ
    assert [g["settings"] for g in groups["samples_vs_epochs"]] == [["c4r4s5e3", "c4r4s10e6", "c4r4s20e12"]]
    assert [g["settings"] for g in groups["channels_vs_resolution"]] == [["c4r4s10e6", "c8r2s10e6"]]
    assert groups["channels_vs_resolution"][0]["label"] == "s10e6, c x r = 16"
    # a divisor 0 counts as 1; a single setting of a kind forms no group
    assert setting_groups(["c0r4s0e3", "c4r0s0e3", "c2r2s0e6"]) == {
        "samples_vs_epochs": [], "channels_vs_resolution": [{"label": "s0e3, c x r = 4",
                                                              "settings": ["c0r4s0e3", "c4r0s0e3"]}]}


def test_efficient_frontier_by_hand():
    def point(name, cost, rho):
        return {"setting": name, "epoch": 1, "cost_vs_reference": cost, "spearman": {"value": rho}}

    points = [point("a", 0.01, 0.5), point("b", 0.02, 0.5),  # b: costs more for the same rho
              point("c", 0.02, 0.7), point("d", 0.05, 0.6),  # d: c is cheaper and better
              point("e", 0.10, 0.9), point("f", 0.10, 0.9),  # equal points do not dominate each other
              point("g", 0.001, None), point("h", None, 0.95)]  # undefined: on no frontier
    assert [p["setting"] for p in efficient_frontier(points)] == ["a", "c", "e", "f"]


def test_cli_writes_the_study_and_refuses_to_overwrite_it(known, tmp_path, capsys):
    path, _ = known
    out = tmp_path / "study"
    args = ["bench", "study", "--table", str(path), "--out", str(out), "--resamples", "50", "--seed", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "study.json").read_text())
    assert result == study_table(load_table(path), resamples=50, seed=1)
    assert (out / "study.md").read_text() in printed
    assert "| c4r4s10e6 | 6 |" in printed and str(out / "study.png") in printed
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"
    frontier = [(f["setting"], f["epoch"]) for f in result["frontier"]]
    assert frontier and all(p["on_frontier"] == ((p["setting"], p["epoch"]) in frontier) for p in result["points"])
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


# --- the loader ------------------------------------------------------------------------------------


def _malformed(lines: list[dict]) -> dict[str, tuple[int, str]]:
    """Each way to break the table: (the line it breaks, that line's new text)."""
    header, first, second = lines[0], lines[1], lines[2]
    missing = {**first, "settings": {k: v for k, v in first["settings"].items() if k != "c8r2s10e6"}}
    too_high = json.loads(json.dumps(second))
    too_high["settings"]["c4r4s10e6"]["val"]["4"] = 1.5
    return {"not JSON": (3, "{not json"),
            "wrong format": (1, json.dumps({**header, "format": "pyaccel_nas.bench.table/0"})),
            "a setting missing": (2, json.dumps(missing)),
            "accuracy above 1": (3, json.dumps(too_high)),
            "duplicate id": (3, json.dumps({**second, "id": first["id"]}))}


@pytest.mark.parametrize("how", ["not JSON", "wrong format", "a setting missing", "accuracy above 1",
                                 "duplicate id"])
def test_loader_refuses_a_malformed_table_naming_file_and_line(known, how):
    path, _ = known
    lines = path.read_text().splitlines()
    number, text = _malformed([json.loads(line) for line in lines[:3]])[how]
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TableError, match=f"^{re.escape(str(path))}: line {number}\\b"):
        load_table(path)
