"""The proxy rank-consistency study: correlations, costs, outputs, resume."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.study import StudyConfig, run_study

TINY = dict(dataset="digits", architectures=4, ground_truth="c2r0s0e4", proxies=("c2r0s0e2", "c4r0s2e2"),
            channels=16, layers=3, batch_size=128)


def test_study_reports_rank_correlation_and_cost(tmp_path):
    result = run_study(StudyConfig(**TINY), tmp_path, progress=False)
    truth = result["ground_truth"]["val_accuracy"]
    assert len(truth) == 4 and len(set(truth)) > 1
    for name, entry in result["proxies"].items():
        if len(set(entry["val_accuracy"])) > 1:
            assert entry["spearman"] == pytest.approx(stats.spearmanr(entry["val_accuracy"], truth).statistic)
            assert entry["kendall"] == pytest.approx(stats.kendalltau(entry["val_accuracy"], truth).statistic)
        else:  # a proxy that ranks every network equal has no rank correlation
            assert entry["spearman"] is None and entry["kendall"] is None
        assert 0 < entry["cost_vs_ground_truth"] < 1
    # c4 halves the channels of c2 and s2 halves the samples: it costs far less than c2r0s0e2
    assert result["proxies"]["c4r0s2e2"]["cost_macs"] < result["proxies"]["c2r0s0e2"]["cost_macs"] / 3
    assert result["proxies"]["c2r0s0e2"]["cost_macs"] * 2 == result["ground_truth"]["cost_macs"]
    assert json.loads((tmp_path / "study.json").read_text())["proxies"].keys() == {"c2r0s0e2", "c4r0s2e2"}
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # weights are not kept


def test_study_resumes_from_its_journal(tmp_path):
    first = run_study(StudyConfig(**TINY), tmp_path, progress=False)
    journal_lines = (tmp_path / "journal.jsonl").read_text().count("\n")
    again = run_study(StudyConfig(**TINY), tmp_path, resume=True, progress=False)
    assert (tmp_path / "journal.jsonl").read_text().count("\n") == journal_lines  # nothing retrained
    assert again["proxies"] == first["proxies"]


def test_study_config_validation():
    with pytest.raises(ValueError, match="at least 3 architectures"):
        StudyConfig(architectures=2)
    with pytest.raises(ValueError, match="notation"):
        StudyConfig(proxies=("c4r4",))
    assert Proxy.parse(StudyConfig().ground_truth).epochs == 600
