"""pytest-benchmark suite: every case x {forward, fwd+bwd} x {eager, compiled, fused}.

    python -m pytest benchmarks                           # quick grid
    PYACCEL_BENCH_GRID=full python -m pytest benchmarks   # full grid (hours)
    PYACCEL_BENCH_OPS=sep_conv2d python -m pytest benchmarks

Each (case, pass) is one ``benchmark.group``, so pytest-benchmark prints eager, compiled and fused in one
table. The parameters are ordered case by case, so each case's torch.compile happens once per pass (see
``benchmarks.cases._compiled``); don't reorder them (e.g. with -p random-order).
"""

from __future__ import annotations

import os

import pytest

from benchmarks.cases import IMPLS, PASSES, grid, make_step, set_threads

GRID = os.environ.get("PYACCEL_BENCH_GRID", "quick")
OPS = [op for op in os.environ.get("PYACCEL_BENCH_OPS", "").split(",") if op] or None
CASES = grid(GRID, OPS)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    set_threads()


@pytest.mark.parametrize(
    "case, pass_, impl",
    [pytest.param(c, p, i, id=f"{c.id}-{p}-{i}") for c in CASES for p in PASSES for i in IMPLS],
)
def test_op(benchmark, case, pass_, impl):
    step = make_step(case, impl, pass_)
    step()  # compiles the compiled impl outside the timing
    benchmark.group = f"{case.id} {pass_}"
    benchmark.extra_info.update(op=case.op, case=case.name, pass_=pass_, impl=impl)
    benchmark(step)
