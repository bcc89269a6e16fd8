"""Executors: every executor runs each task once, retries failures (exceptions and dead workers) up to its
limit, then reports the error; and the same search gives the same result.json through each of them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pyaccel_nas.econas.search import SearchConfig, run_search
from pyaccel_nas.exec import EnvironmentFailure, InlineExecutor, ProcessExecutor, make_executor

ray = pytest.importorskip("ray")

# a tiny search on scikit-learn's digits: 4 initial networks, 2 cycles of 3 children and their promotions
SEARCH = dict(dataset="digits", proxy="c4r0s0e3", channels=8, layers=3, cycles=2, children=(1, 1, 1),
              promote=(1, 1), batch_size=128, final_top=1, final_proxy="c4r0s0e2", threads=1)


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray instance with two CPUs; this module's functions travel by value to its workers."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(params=["inline", "process", "ray"])
def executor(request):
    if request.param == "ray":
        request.getfixturevalue("local_ray")
    kwargs = {"workers": 2} if request.param == "process" else {}
    with make_executor(request.param, retries=2, **kwargs) as executor:
        yield executor


def _attempt_number(path: str) -> int:
    """Counts a run of a task in a file, safely across processes; returns this run's number (1, 2, ...)."""
    with open(path, "a") as f:
        f.write(".")
    return len(Path(path).read_text())


def flaky(task: tuple[str, int, str]) -> int:
    """Fails the first ``failures`` runs (raising, or killing its worker process), then returns its run number."""
    path, failures, how = task
    attempt = _attempt_number(path)
    if attempt <= failures:
        if how == "die":
            os._exit(3)  # what the OOM killer does to a worker: no exception, no cleanup
        raise MemoryError(f"injected failure in run {attempt}")
    return attempt


def test_each_task_runs_once_and_comes_back_once(executor, tmp_path):
    tasks = [(str(tmp_path / f"task{i}"), 0, "raise") for i in range(5)]
    outcomes = list(executor.run(flaky, tasks))
    assert sorted(o.task for o in outcomes) == sorted(tasks)
    assert all(o.error is None and o.result == 1 for o in outcomes)


def test_a_failing_task_is_retried_then_reported_and_the_batch_goes_on(executor, tmp_path):
    healthy, recovers, hopeless = [(str(tmp_path / name), n, "raise") for name, n in
                                   (("healthy", 0), ("recovers", 2), ("hopeless", 99))]
    outcomes = {o.task: o for o in executor.run(flaky, [hopeless, recovers, healthy])}
    assert outcomes[healthy].result == 1
    assert outcomes[recovers].result == 3 and outcomes[recovers].error is None  # 2 failures, retries=2
    assert outcomes[hopeless].result is None
    assert outcomes[hopeless].error == "MemoryError: injected failure in run 3"
    assert Path(hopeless[0]).read_text() == "..."  # 1 run + 2 retries, no more


@pytest.mark.parametrize("name", ["process", "ray"])
def test_a_dead_worker_is_a_failed_attempt_of_its_task_only(name, tmp_path, request):
    if name == "ray":
        request.getfixturevalue("local_ray")
    kwargs = {"workers": 2} if name == "process" else {}
    dies_once, hopeless, healthy = ((str(tmp_path / file), failures, "die")
                                    for file, failures in (("dies_once", 1), ("hopeless", 99), ("healthy", 0)))
    with make_executor(name, retries=1, **kwargs) as executor:
        outcomes = {o.task: o for o in executor.run(flaky, [dies_once, hopeless, healthy])}
    assert outcomes[dies_once].error is None and outcomes[dies_once].result >= 2
    assert outcomes[healthy].error is None  # in flight when another task killed its worker: not charged
    assert outcomes[hopeless].result is None and "died" in outcomes[hopeless].error
    runs = len(Path(hopeless[0]).read_text())
    # Ray runs it once per attempt; a broken process pool reruns the tasks it held, each alone in a fresh
    # worker, to charge the failure to the one that killed it
    assert runs == 2 if name == "ray" else 2 <= runs <= 4


def test_bad_executor_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        make_executor("dask")
    with pytest.raises(ValueError, match="`workers` applies to the process executor only"):
        make_executor("inline", workers=2)
    with pytest.raises(ValueError, match="`address` applies to the ray executor only"):
        make_executor("process", address="auto")
    with pytest.raises(ValueError, match="`retries` must be >= 0"):
        InlineExecutor(retries=-1)
    with pytest.raises(ValueError, match="`workers` and `threads` must be >= 1"):
        ProcessExecutor(0)


@pytest.fixture(scope="module")
def inline_search(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("inline")
    run_search(SearchConfig.preset("smoke", **SEARCH), out, progress=False)
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("name", ["process", "ray"])
def test_the_same_search_gives_the_same_result_on_every_executor(name, inline_search, tmp_path, request):
    if name == "ray":
        request.getfixturevalue("local_ray")
    kwargs = {"workers": 2} if name == "process" else {}
    with make_executor(name, **kwargs) as executor:
        run_search(SearchConfig.preset("smoke", **SEARCH), tmp_path, executor=executor, progress=False)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["trained_networks"] == 4 + 2 * 3 and result["best"]["val_accuracy"] > 0.1  # it really searched
    assert result == inline_search  # accuracies, cost, history, the final retraining: all exactly equal


def machine_failure(task: tuple[str, bool]) -> str:
    """Fails as the machine would (a full disk) when asked to, else finishes; counts its runs."""
    path, fail = task
    _attempt_number(path)
    if fail:
        raise EnvironmentFailure("cannot save: [Errno 28] No space left on device")
    return path


def test_a_failure_of_the_machine_stops_the_batch_and_is_neither_retried_nor_an_outcome(executor, tmp_path):
    tasks = [(str(tmp_path / "disk-full"), True)] + [(str(tmp_path / f"task{i}"), False) for i in range(3)]
    handed_back = []
    with pytest.raises(EnvironmentFailure, match="No space left"):
        for outcome in executor.run(machine_failure, tasks):
            handed_back.append(outcome)
    assert Path(tasks[0][0]).read_text() == "."  # run once: not retried
    assert all(o.error is None and o.task != tasks[0] for o in handed_back)  # what finished is handed back
