"""A training step on a shared machine: the same step timed on a quiet machine and beside busy processes.

    python -m benchmarks.contention [--proxy c4r4] [--batch 96] [--busy 2] [--threads 1,2,auto] \
        [--wait-policies default,spin10k] [--repeats 10] [--out DIR]

Every (OpenMP wait policy, torch thread count) setting runs in a fresh process, since OpenMP reads its
environment (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``) once, when torch loads it: the process builds the
fused proxy network of :mod:`benchmarks.model_step`, warms up and times ``--repeats`` training steps
(median and range), first with the machine quiet, then with ``--busy`` processes busy-looping (``while
True: pass``, default: one per core), which are stopped afterwards. A thread count of ``auto`` is the runs'
rule (:mod:`pyaccel_nas.threads`): the child counts the idle cores when it starts, so it picks its threads
from what it finds, quiet or busy. The report gives, per setting, the quiet and busy medians and their
ratio, and each busy median against the quiet median of the fastest quiet setting. Results go to
``benchmarks/results/contention_*.json``. Run it on a quiet machine: it makes the contention itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import RESULTS_DIR, save_report

# OpenMP waiting behaviour, as environment variables: libgomp (torch's OpenMP) spins 300000 rounds at a
# barrier by default before it sleeps; GOMP_SPINCOUNT shortens that without sleeping at every barrier as
# PASSIVE does
POLICIES = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "active": {"OMP_WAIT_POLICY": "ACTIVE"},
            "spin10k": {"GOMP_SPINCOUNT": "10000"}}
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")  # OMP_NUM_THREADS would decide "auto"
BUSY_LOOP = "while True: pass"


def _child(proxy: str, batch: int, layers: int, threads: str, repeats: int, budget_s: float) -> dict:
    """In the setting's own process: step times in ms (stops early once ``budget_s`` is spent)."""
    import torch

    from benchmarks.cases import require_kernels
    from benchmarks.model_step import batch as make_batch, build, training_step
    from pyaccel_nas._extension import OPS
    from pyaccel_nas.econas.proxy import Proxy
    from pyaccel_nas.nn import set_fused
    from pyaccel_nas.threads import use_threads

    require_kernels(OPS)
    use_threads(None if threads == "auto" else int(threads))
    parsed = Proxy.parse(f"{proxy}s0e1")
    model = set_fused(build(parsed, layers), True)
    x, y = make_batch(parsed, batch)
    step = training_step(model, x, y)
    for _ in range(2):
        step()
    times, started = [], time.perf_counter()
    while len(times) < repeats and (time.perf_counter() - started < budget_s or len(times) < 3):
        begin = time.perf_counter()
        step()
        times.append(1000 * (time.perf_counter() - begin))
    return {"ms": times, "threads": torch.get_num_threads()}


def _run_setting(args: argparse.Namespace, policy: str, threads: str) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in OPENMP_VARIABLES}
    env.update(POLICIES[policy])
    command = [sys.executable, "-m", "benchmarks.contention", "--child", "--proxy", args.proxy, "--batch",
               str(args.batch), "--layers", str(args.layers), "--repeats", str(args.repeats),
               "--threads", threads, "--budget", str(args.budget)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy", default="c4r4", help="channel/resolution part of a proxy (default c4r4)")
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed steps per setting at most")
    parser.add_argument("--busy", type=int, default=os.cpu_count(), help="busy-looping processes (default: cores)")
    parser.add_argument("--threads", default="1,2,auto",
                        help="torch thread counts to try; auto: the runs' rule, from the cores idle at start")
    parser.add_argument("--wait-policies", default="default,spin10k", help=f"of {', '.join(POLICIES)}")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.proxy, args.batch, args.layers, args.threads, args.repeats, args.budget)))
        return None
    policies = args.wait_policies.split(",")
    unknown = set(policies) - set(POLICIES)
    if unknown:
        parser.error(f"unknown wait policies {sorted(unknown)}; known: {', '.join(POLICIES)}")
    settings = [(policy, threads) for policy in policies for threads in args.threads.split(",")]

    load_before = os.getloadavg()[0]
    quiet = {setting: _run_setting(args, *setting) for setting in settings}
    busy_processes = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.busy)]
    try:
        time.sleep(1)  # let them reach the loop
        busy = {setting: _run_setting(args, *setting) for setting in settings}
    finally:
        for process in busy_processes:
            process.kill()
            process.wait()
    best_quiet = min(statistics.median(run["ms"]) for run in quiet.values())
    rows = []
    for setting in settings:
        q, b = _summary(quiet[setting]["ms"]), _summary(busy[setting]["ms"])
        rows.append({"wait_policy": setting[0], "threads": setting[1], "quiet_ms": q, "busy_ms": b,
                     "threads_used": {"quiet": quiet[setting]["threads"], "busy": busy[setting]["threads"]},
                     "busy_over_quiet": b["median"] / q["median"], "busy_over_best_quiet": b["median"] / best_quiet})
    fields = {"proxy": args.proxy, "batch": args.batch, "layers": args.layers, "busy_processes": args.busy,
              "load_before": round(load_before, 2), "rows": rows}
    report, path = save_report("contention", fields, os.cpu_count(), args.out, tag=f"{args.proxy}_b{args.batch}")
    print(f"{'policy':<8} {'threads':>12} {'quiet ms':>9} {'busy ms':>9} {'busy/quiet':>10} {'busy/best quiet':>15}")
    for row in rows:
        used = row["threads_used"]
        threads = row["threads"] if row["threads"] != "auto" else f"auto ({used['quiet']}, {used['busy']})"
        print(f"{row['wait_policy']:<8} {threads:>12} {row['quiet_ms']['median']:>9.1f} "
              f"{row['busy_ms']['median']:>9.1f} {row['busy_over_quiet']:>10.2f} {row['busy_over_best_quiet']:>15.2f}")
    return report


if __name__ == "__main__":
    main()
