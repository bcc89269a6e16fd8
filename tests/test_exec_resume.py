"""Durable searches: a search killed with SIGKILL mid-cycle resumes to the result of an uninterrupted run
without redoing or losing a finished evaluation; failed evaluations are retried, then recorded and
replayed as failed; a corrupted or foreign journal is refused with a clear error; files are replaced
atomically."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyaccel_nas.econas import journal as journal_module
from pyaccel_nas.econas.journal import JournalError
from pyaccel_nas.econas.search import SearchConfig, run_search
from pyaccel_nas.exec import InlineExecutor
from pyaccel_nas.exec.files import atomic_writer

# the smoke preset shrunk to digits: 4 initial networks, 2 cycles of 4 children and their promotions (18 evaluations)
SEARCH = dict(dataset="digits", proxy="c4r0s0e3", channels=8, layers=3, cycles=2, final_proxy="c4r0s0e2", threads=1)
CLI = ["--preset", "smoke", "--dataset", "digits", "--proxy", "c4r0s0e3", "--channels", "8", "--layers", "3",
       "--cycles", "2", "--final-proxy", "c4r0s0e2", "--threads", "1", "--quiet"]


def journal_keys(out: Path) -> list[str]:
    return [json.loads(line)["key"] for line in (out / "journal.jsonl").read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_search(SearchConfig.preset("smoke", **SEARCH), out, progress=False)
    return out


def running(pid: str) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def search_cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pyaccel_nas.cli", "search", *CLI, "--out", str(out), *extra]


def test_a_search_killed_mid_cycle_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path):
    total = len(journal_keys(uninterrupted))
    out = tmp_path / "killed"
    search = subprocess.Popen(search_cli(out, "--executor", "process", "--workers", "2"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    journal, deadline = out / "journal.jsonl", time.monotonic() + 240
    # 4 initial networks and 2 of the 4 children of cycle 1 finished: the kill lands mid-cycle
    while not (journal.exists() and len(journal.read_text().splitlines()) > 1 + 6):
        assert search.poll() is None, search.stderr.read().decode()
        assert time.monotonic() < deadline, "the search did not get going"
        time.sleep(0.02)
    workers = Path(f"/proc/{search.pid}/task/{search.pid}/children").read_text().split()
    search.send_signal(signal.SIGKILL)
    search.wait()
    gone_by = time.monotonic() + 15
    while any(running(pid) for pid in workers):  # the pool's workers leave with the search
        assert time.monotonic() < gone_by, "worker processes outlived the killed search"
        time.sleep(0.1)
    finished = journal_keys(out)
    assert 6 <= len(finished) < total  # killed mid-search, with finished work to keep
    assert not (out / "result.json").exists()

    # resume through another executor: nothing the killed run finished is run again
    resumed = subprocess.run(search_cli(out, "--resume"), capture_output=True, text=True, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr
    keys = journal_keys(out)
    assert keys[: len(finished)] == finished  # kept, in place
    assert len(keys) == len(set(keys)) == total  # none redone, none lost
    assert set(keys) == set(journal_keys(uninterrupted))
    assert json.loads((out / "result.json").read_text()) == json.loads((uninterrupted / "result.json").read_text())


def test_a_failing_evaluation_is_retried_then_recorded_and_replayed_as_failed(tmp_path, monkeypatch):
    calls: list[str] = []
    broken = "net5@1/3:c4r0s0e3"  # the second child of cycle 1

    def evaluate(task):
        calls.append(task.key)
        if task.key == broken:
            raise torch_oom()
        return real_evaluation(task)

    real_evaluation = journal_module.run_evaluation
    monkeypatch.setattr(journal_module, "run_evaluation", evaluate)
    result = run_search(SearchConfig.preset("smoke", **SEARCH), tmp_path, executor=InlineExecutor(retries=2),
                        progress=False)
    assert calls.count(broken) == 3  # one run and 2 retries
    assert result["failed"] == [{"key": broken, "network_id": 5, "error": "OutOfMemoryError: injected"}]
    assert result["trained_networks"] == 4 + 2 * 4 - 1  # the search went on without it
    assert result["best"]["network_id"] != 5 and result["final"]["networks"][0]["network_id"] != 5
    (record,) = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()[1:]
                 if broken in line]
    assert record["error"] == "OutOfMemoryError: injected" and record["val_accuracy"] is None

    # a resume replays the failure from the journal: nothing runs again, the result is the same
    calls.clear()
    resumed = run_search(SearchConfig.preset("smoke", **SEARCH), tmp_path, resume=True, progress=False)
    assert calls == [] and resumed == result


def torch_oom() -> Exception:
    import torch

    return torch.OutOfMemoryError("injected")


def other_genotype(line: str) -> str:
    """The record with another operation on the first edge of its normal cell (a journal of another search)."""
    record = json.loads(line)
    edge = record["genotype"]["normal"][0]
    edge[0] = "sep_conv_3x3" if edge[0] != "sep_conv_3x3" else "sep_conv_5x5"
    return json.dumps(record)


@pytest.mark.parametrize("damage, message", [
    (lambda lines: ["{}"] + lines[1:], "not a search journal"),
    (lambda lines: [lines[0].replace("journal/3", "journal/2")] + lines[1:], "not a search journal of this version"),
    (lambda lines: lines[:2] + ["{not json"] + lines[3:], "line 3 is corrupted"),
    (lambda lines: lines[:2] + [lines[2].replace('"network_id": ', '"network_id": "x", "was": ')] + lines[3:],
     "line 3 is corrupted"),
    (lambda lines: lines[:2] + [lines[2].replace('"epochs": 1', '"epochs": "1"')] + lines[3:],
     "line 3 is corrupted .*`epochs` has the wrong type"),
    (lambda lines: lines[:2] + [other_genotype(lines[2])] + lines[3:], "trained another genotype"),
])
def test_a_corrupted_or_foreign_journal_is_refused(uninterrupted, tmp_path, damage, message):
    out = tmp_path / "damaged"
    shutil.copytree(uninterrupted, out)
    lines = (out / "journal.jsonl").read_text().splitlines()
    damaged = damage(lines)
    assert damaged != lines, "the damage must change the journal"
    (out / "journal.jsonl").write_text("\n".join(damaged) + "\n")
    with pytest.raises(JournalError, match=message):
        run_search(SearchConfig.preset("smoke", **SEARCH), out, resume=True, progress=False)


def test_a_resume_with_other_settings_or_without_a_journal_is_refused(uninterrupted, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    with pytest.raises(JournalError, match="other settings"):
        run_search(SearchConfig.preset("smoke", **{**SEARCH, "threads": 2}), out, resume=True, progress=False)
    with pytest.raises(JournalError, match="nothing to resume"):
        run_search(SearchConfig.preset("smoke", **SEARCH), tmp_path / "empty", resume=True, progress=False)


def test_atomic_writer_leaves_the_old_file_when_a_write_is_cut_short(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(path) as f:
            f.write(b"half of the new")
            raise KeyboardInterrupt  # a kill mid-save
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["checkpoint.pt"]
    with atomic_writer(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_atomic_writer_gives_the_permissions_of_a_newly_opened_file(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_writer(tmp_path / "result.json") as f:
            f.write(b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o640  # 0666 less the umask, not mkstemp's 0600


def test_study_correlations_leave_out_failed_evaluations():
    from scipy import stats

    from pyaccel_nas.econas.study import rank_correlation

    proxy = [0.52, None, 0.31, 0.77, 0.45, 0.60]
    truth = [0.81, 0.90, None, 0.95, 0.70, 0.85]
    kept = [0, 3, 4, 5]  # evaluated under both settings
    expected = stats.spearmanr([proxy[i] for i in kept], [truth[i] for i in kept]).statistic
    assert rank_correlation(stats.spearmanr, proxy, truth) == pytest.approx(expected)
    assert rank_correlation(stats.kendalltau, [0.1, None, 0.3, None], [0.2, 0.4, None, 0.5]) is None  # 1 pair left
