"""The thread-count rule of every run (pyaccel_nas.threads): an explicit count, OMP_NUM_THREADS, else the
cores other processes leave idle; and the command line applying it."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
import torch

from pyaccel_nas import cli, threads
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.threads import OtherLoad, choose_threads, use_threads


@pytest.fixture(autouse=True)
def keep_thread_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_an_explicit_count_wins_over_the_environment_and_the_load(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(threads, "busy_cores", lambda seconds: pytest.fail("sampled the load"))
    assert choose_threads(5) == threads.ThreadChoice(5, "--threads")
    assert choose_threads() == threads.ThreadChoice(3, "OMP_NUM_THREADS=3")
    with pytest.raises(ValueError, match="--threads must be at least 1, got 0"):
        choose_threads(0)


@pytest.mark.parametrize("cores, busy, expected", [(2, 0.0, 2), (2, 0.3, 2), (2, 0.7, 1), (2, 2.0, 1),
                                                   (2, 3.5, 1), (8, 2.4, 6), (8, None, 8)])
def test_otherwise_the_idle_cores_at_start_decide(monkeypatch, cores, busy, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # set but empty: not a count
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda seconds: busy)
    choice = choose_threads()
    assert choice.threads == expected
    assert (f"{busy:.1f} of them kept busy" if busy is not None else "no /proc/stat") in choice.reason
    assert use_threads().threads == torch.get_num_threads() == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_other_load_counts_a_busy_process():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        load = OtherLoad()
        # the busy loop is another process: it counts (a machine loaded by more only adds to it)
        deadline = time.perf_counter() + 1.0
        while time.perf_counter() < deadline:
            pass  # this process's own work does not count
        assert load.cores() > 0.5
    finally:
        busy.kill()
        busy.wait()


def test_train_refuses_a_thread_count_below_one_before_it_makes_the_output(tmp_path, capsys):
    Genotype.random(random.Random(0)).save(tmp_path / "genotype.json")
    code = cli.main(["train", "--dataset", "digits", "--genotype", str(tmp_path / "genotype.json"), "--out",
                     str(tmp_path / "run"), "--threads", "0"])
    assert (code, capsys.readouterr().err) == (2, "pyaccel-nas: error: --threads must be at least 1, got 0\n")
    assert not (tmp_path / "run").exists()
