"""What a search run reads cannot delete, hide or poison work (issue 16, items 1-5): a journal names only files
inside its run; a run does not depend on its working directory; failures of the machine stop the run
without being recorded as the network's; reading a journal never destroys it; a failed start leaves no
journal; and a search killed at random moments, resumed from random working directories, ends as an
uninterrupted one."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyaccel_nas.econas import journal as journal_module
from pyaccel_nas.econas.journal import Journal, JournalError
from pyaccel_nas.econas.search import SearchConfig, run_search
from pyaccel_nas.econas.trainer import Trainer
from pyaccel_nas.exec import EnvironmentFailure

# the smoke preset shrunk to digits: 18 evaluations and a final retraining, seconds in all
SEARCH = dict(dataset="digits", proxy="c4r0s0e3", channels=8, layers=3, cycles=2, final_proxy="c4r0s0e2", threads=1)
CLI = ["search", "--preset", "smoke", "--dataset", "digits", "--proxy", "c4r0s0e3", "--channels", "8", "--layers",
       "3", "--cycles", "2", "--final-proxy", "c4r0s0e2", "--threads", "1", "--quiet"]


def config(**overrides):
    return SearchConfig.preset("smoke", **{**SEARCH, **overrides})


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()[1:]]


def result_of(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_search(config(), out, progress=False)
    return out


class Interrupted(BaseException):
    """A kill, as far as the search can tell: not an Exception, so no executor takes it for a failure."""


def interrupt_after(monkeypatch, finished: int) -> None:
    """Makes the search stop (as if killed) when it starts evaluation number ``finished + 1``."""
    real, calls = journal_module.run_evaluation, []

    def evaluate(task):
        calls.append(task.key)
        if len(calls) > finished:
            raise Interrupted
        return real(task)

    monkeypatch.setattr(journal_module, "run_evaluation", evaluate)


# --- 1. a journal names only files inside its run ---------------------------------------------------------


def tamper(out: Path, checkpoint: str) -> int:
    """Points the checkpoint of the first record that has one at ``checkpoint``; returns its line number."""
    lines = (out / "journal.jsonl").read_text().splitlines()
    number = next(i for i, line in enumerate(lines[1:], start=1) if json.loads(line)["checkpoint"])
    record = json.loads(lines[number])
    record["checkpoint"] = checkpoint
    lines[number] = json.dumps(record)
    (out / "journal.jsonl").write_text("\n".join(lines) + "\n")
    return number + 1


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_a_journal_naming_a_file_outside_its_run_is_refused_and_nothing_is_deleted(uninterrupted, tmp_path, how):
    out, victim = tmp_path / "run", tmp_path / "outside" / "precious.pt"
    shutil.copytree(uninterrupted, out)
    victim.parent.mkdir()
    victim.write_bytes(b"someone's work")
    if how == "symlink":
        (out / "checkpoints" / "elsewhere").symlink_to(victim.parent, target_is_directory=True)
    checkpoint = {"absolute": str(victim), "dotdot": "../outside/precious.pt",
                  "symlink": "checkpoints/elsewhere/precious.pt"}[how]
    line = tamper(out, checkpoint)
    with pytest.raises(JournalError, match=f"journal.jsonl: line {line} is corrupted"):
        run_search(config(), out, resume=True, progress=False)
    assert victim.read_bytes() == b"someone's work"


def test_checkpoints_are_journaled_relative_to_the_run(uninterrupted):
    named = [r["checkpoint"] for r in records(uninterrupted) if r["checkpoint"]]
    assert named and all(c.startswith("checkpoints/net") and not os.path.isabs(c) for c in named)


# --- 2. a run does not depend on the directory it was started from -----------------------------------------


def test_a_run_with_a_relative_out_resumes_from_another_working_directory(uninterrupted, tmp_path, monkeypatch):
    (tmp_path / "a" / "runs").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    with monkeypatch.context() as patch:
        interrupt_after(patch, 7)
        with pytest.raises(Interrupted):
            run_search(config(), "runs/search", progress=False)
    assert len(records(tmp_path / "a" / "runs" / "search")) == 7
    monkeypatch.chdir(tmp_path / "b")
    run_search(config(), "../a/runs/search", resume=True, progress=False)
    assert result_of(tmp_path / "a" / "runs" / "search") == result_of(uninterrupted)  # none failed


# --- 3. failures of the machine are not results ----------------------------------------------------------


def test_a_full_disk_stops_the_search_unrecorded_and_a_resume_finishes_it(uninterrupted, tmp_path, monkeypatch):
    out, saves, real_save = tmp_path / "run", [], Trainer.save

    def save(self, path):
        saves.append(path)
        if len(saves) == 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(self, path)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "save", save)
        with pytest.raises(EnvironmentFailure, match="No space left on device"):
            run_search(config(), out, progress=False)
    assert len(saves) == 6  # not retried: the disk, not the network, failed
    assert len(records(out)) == 5 and all(r["error"] is None for r in records(out))
    assert not (out / "result.json").exists()
    run_search(config(), out, resume=True, progress=False)
    assert result_of(out) == result_of(uninterrupted)


def test_a_vanished_run_directory_stops_the_search_instead_of_starting_a_headless_journal(tmp_path, monkeypatch):
    out, real = tmp_path / "run", journal_module.run_evaluation
    calls = []

    def evaluate(task):
        calls.append(task.key)
        if len(calls) == 3:
            shutil.rmtree(out)
        return real(task)

    monkeypatch.setattr(journal_module, "run_evaluation", evaluate)
    with pytest.raises(EnvironmentFailure, match="cannot save"):
        run_search(config(), out, progress=False)
    assert not out.exists() and len(calls) == 3


def test_when_every_evaluation_fails_the_search_says_so_in_its_result(tmp_path, monkeypatch):
    def evaluate(task):
        raise RuntimeError("this network diverges")

    monkeypatch.setattr(journal_module, "run_evaluation", evaluate)
    result = run_search(config(), tmp_path, progress=False)
    assert result["stopped_by"] == "failures" and result["best"] is None
    assert len(result["failed"]) == 4 and result_of(tmp_path)["stopped_by"] == "failures"


def test_a_missing_dataset_stops_the_start_and_leaves_no_journal(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_search(config(dataset="fashion-mnist", data_root=str(tmp_path / "nothing")), tmp_path / "run",
                   progress=False)
    assert not (tmp_path / "run" / "journal.jsonl").exists()


# --- 4. a journal is never destroyed by reading it ---------------------------------------------------------


SETTINGS = {"seed": 0}


def header() -> str:
    return json.dumps({"format": journal_module.JOURNAL_FORMAT, "settings": SETTINGS})


def test_a_header_only_journal_without_its_newline_keeps_its_header(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text(header())
    Journal(path, SETTINGS, resume=True)
    assert path.read_text() == header() + "\n"
    Journal(path, SETTINGS, resume=True)  # and it is still a journal


def test_only_a_torn_last_record_is_dropped(uninterrupted, tmp_path):
    lines = (uninterrupted / "journal.jsonl").read_text().splitlines()
    path = tmp_path / "journal.jsonl"
    settings = json.loads(lines[0])["settings"]

    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])  # cut mid-record
    assert len(Journal(path, settings, resume=True).results) == 2
    assert path.read_text() == "\n".join(lines[:3]) + "\n"

    path.write_text("\n".join(lines[:4]))  # whole, but for the newline
    assert len(Journal(path, settings, resume=True).results) == 3
    assert path.read_text() == "\n".join(lines[:4]) + "\n"


def test_a_cut_off_header_is_refused_not_rewritten(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text(header()[:20])
    with pytest.raises(JournalError, match="line 1 .*cut off"):
        Journal(path, SETTINGS, resume=True)
    assert path.read_text() == header()[:20]


# --- 5. a failed start leaves no state behind -------------------------------------------------------------


def test_a_search_that_fails_before_its_first_evaluation_leaves_no_journal(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="multiple of 3"):
        run_search(config(proxy="c4r0s0e4"), out, progress=False)  # the hierarchical tiers need 3E epochs
    assert not (out / "journal.jsonl").exists()
    run_search(config(), out, progress=False)  # the corrected command starts, without --resume
    assert (out / "result.json").exists()


# --- a property: killed at random moments, resumed from random directories ---------------------------------


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def killed_at_random(out: str, cwd: Path, rng: random.Random, total: int) -> None:
    """Starts the search in ``cwd`` (``--resume`` if it has a journal) and SIGKILLs it at a random moment."""
    journal = cwd / out / "journal.jsonl"
    resume = ["--resume"] if journal.exists() else []
    done = len(journal.read_text().splitlines()) - 1 if journal.exists() else 0
    wait_for = rng.randint(done, total)  # records to see finished, then a random delay more
    process = subprocess.Popen([sys.executable, "-m", "pyaccel_nas.cli", *CLI, "--out", out, *resume],
                               cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) - 1 >= wait_for:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.5))
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_searches_killed_at_random_and_resumed_from_random_directories_end_as_uninterrupted(
        uninterrupted, tmp_path, seed):
    rng = random.Random(seed)
    total = len(records(uninterrupted))
    dirs = [tmp_path / name for name in ("x", "y/z", "w")]
    for d in dirs:
        d.mkdir(parents=True)
    run = tmp_path / "runs" / "search"
    for _ in range(2):
        cwd = rng.choice(dirs)
        killed_at_random(os.path.relpath(run, cwd), cwd, rng, total)
    cwd = rng.choice(dirs)
    resume = ["--resume"] if (run / "journal.jsonl").exists() else []
    finished = subprocess.run([sys.executable, "-m", "pyaccel_nas.cli", *CLI, "--out", os.path.relpath(run, cwd),
                               *resume], cwd=cwd, capture_output=True, text=True, timeout=1800)
    assert finished.returncode == 0, finished.stderr[-2000:]
    keys = [r["key"] for r in records(run)]
    assert len(keys) == len(set(keys)) == total  # none redone, none lost
    assert result_of(run) == result_of(uninterrupted)
