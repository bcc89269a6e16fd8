"""MDP against the channel-only arm, over several seeds per model: the table of issue 18.

    python -m benchmarks.mdp_compare --models resnet20,resnet56,vgg,c3d,i3d,resnet18,mobilenet_v2 --seeds 0,1,2 \
        --out benchmarks/results/mdp_vs_channel_only

1. Runs ``pyaccel-nas prune --preset cpu`` for every (model, seed) whose OUT/<model>/seed<S>/report.json
   is missing (so a killed run resumes where it stopped), ``--workers`` at a time with one torch thread each;
   extra flags after ``--`` go to every run (e.g. ``-- --beta 1``: give such a variant its own --out).
2. Times every run's three networks again (``baseline.pt``, ``pruned.pt``, ``channel_only.pt``), one run
   after another with nothing else running: the latencies inside the reports were taken beside the other
   runs' training and are not comparable. Median of interleaved passes at 1 and 2 threads, BatchNorms folded.
3. Writes OUT/summary.json and OUT/summary.md: per model, mean and standard deviation over seeds (and each
   seed's value) of the accuracy drop, MAC reduction and channels-last / NCHW speed-up of MDP and of the
   channel-only arm, with the machine, the load average before timing, and the commit. Models timed by an
   earlier call with the same OUT keep their entries.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from pyaccel_nas.exec.files import write_json_atomically, write_text_atomically
from pyaccel_nas.mdp import load_model
from pyaccel_nas.mdp.latency import latency_runs_ms
from pyaccel_nas.provenance import machine, source_state
from pyaccel_nas.threads import available_cores

# the dataset each model is measured on (issue 18), and flags of its own
DATASETS = {"resnet20": ("fashion-mnist", []), "resnet56": ("fashion-mnist", []), "vgg": ("mnist", []),
            "c3d": ("moving-digits", ["--train-divisor", "5"]), "i3d": ("moving-digits", ["--train-divisor", "5"]),
            # torchvision's networks downsample by 32: Fashion-MNIST enlarged to 32x32
            "resnet18": ("fashion-mnist", ["--image-size", "32"]),
            "mobilenet_v2": ("fashion-mnist", ["--image-size", "32"])}
ARMS = {"mdp": "pruned.pt", "channel_only": "channel_only.pt"}
THREADS = (1, 2)


def run_dir(out: Path, model: str, seed: int) -> Path:
    return out / model / f"seed{seed}"


def prune_run(out: Path, model: str, seed: int, extra: list[str]) -> Path:
    """One ``prune`` run with one torch thread, unless its report exists; its directory."""
    directory = run_dir(out, model, seed)
    if (directory / "report.json").exists():
        return directory
    dataset, flags = DATASETS[model]
    command = [sys.executable, "-m", "pyaccel_nas.cli", "prune", "--preset", "cpu", "--model", model, "--dataset",
               dataset, "--seed", str(seed), *flags, *extra, "--out", str(directory), "--overwrite", "--quiet"]
    log = directory.parent / f"seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}); see {log}")
    return directory


def retimed(directory: Path, batch: int, repeats: int) -> dict:
    """The run's baseline and both arms timed again, in turns, at each of THREADS."""
    models = {"baseline": load_model(directory / "baseline.pt"),
              **{arm: load_model(directory / path) for arm, path in ARMS.items()}}
    runs = latency_runs_ms(models, batch, repeats, THREADS)
    return {f"{run['layout']}_t{run['threads']}": {name: ms["median"] for name, ms in run["ms"].items()}
            | {f"{name}_spread": [ms["min"], ms["max"]] for name, ms in run["ms"].items()} for run in runs}


def seed_row(directory: Path, latency: dict) -> dict:
    report = json.loads((directory / "report.json").read_text())
    arms = {"mdp": {"accuracy": report["accuracy"]["after"], "macs": report["macs"]["after"]},
            "channel_only": {"accuracy": report["channel_only"]["accuracy"], "macs": report["channel_only"]["macs"]}}
    row = {"seed": report["config"]["seed"], "baseline_accuracy": report["accuracy"]["before"],
           "baseline_macs": report["macs"]["before"]}
    for arm, values in arms.items():
        row[arm] = {"accuracy_drop_points": 100 * (row["baseline_accuracy"] - values["accuracy"]),
                    "macs_reduction": row["baseline_macs"] / values["macs"],
                    **{f"speedup_{key}": timing["baseline"] / timing[arm] for key, timing in latency.items()}}
    row["latency_ms"] = latency
    row["mdp"]["factors"] = [block["factor"] for block in report["blocks"]]
    return row


def summarise(rows: list[dict]) -> dict:
    """Per arm and measure: mean, standard deviation (over seeds) and the values, seed by seed."""
    summary = {}
    for arm in ARMS:
        summary[arm] = {}
        for measure, first in rows[0][arm].items():
            if isinstance(first, (int, float)):
                values = [row[arm][measure] for row in rows]
                summary[arm][measure] = {"mean": statistics.fmean(values),
                                         "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                         "values": values}
    return summary


def markdown(results: dict) -> str:
    lines = [f"Mean +/- standard deviation over seeds (values per seed, the machine, the load average before "
             f"timing and the commit of each model in summary.json). Speed-up: baseline latency / pruned latency, "
             f"batch {results['batch']}, BatchNorms folded, median of {results['repeats']} interleaved passes.", ""]
    columns = ["accuracy_drop_points", "macs_reduction", *(f"speedup_{layout}_t{t}" for t in THREADS
                                                         for layout in ("channels_last", "nchw"))]
    lines += ["| model | seeds | arm | " + " | ".join(columns) + " |", "|" + " --- |" * (3 + len(columns))]
    for model, entry in results["models"].items():
        for arm in ARMS:
            cells = [f"{entry['summary'][arm][c]['mean']:.2f} +/- {entry['summary'][arm][c]['std']:.2f}"
                     for c in columns]
            lines.append(f"| {model} | {len(entry['seeds'])} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet20", help="comma-separated, of " + ", ".join(DATASETS))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=available_cores(), help="prune runs at a time")
    parser.add_argument("--batch", type=int, default=64, help="latency batch")
    parser.add_argument("--repeats", type=int, default=30, help="timed passes per network and setting")
    parser.add_argument("extra", nargs="*", help="after --: flags for every prune run")
    args = parser.parse_args(argv)
    models, seeds = args.models.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = set(models) - set(DATASETS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; known: {', '.join(DATASETS)}")

    jobs = [(model, seed) for model in models for seed in seeds]
    with ThreadPoolExecutor(args.workers) as pool:  # threads that wait on subprocesses
        list(pool.map(lambda job: prune_run(args.out, *job, args.extra), jobs))

    # models timed in an earlier call keep their entries: each entry says when and where it was timed
    summary_path = args.out / "summary.json"
    earlier = json.loads(summary_path.read_text())["models"] if summary_path.exists() else {}
    results = {"batch": args.batch, "repeats": args.repeats, "extra_flags": args.extra, "models": earlier}
    torch.manual_seed(0)
    for model in models:
        timed_on = {"machine": machine(available_cores()), **source_state(),
                    "load_before_timing": round(os.getloadavg()[0], 2)}
        rows = [seed_row(run_dir(args.out, model, seed), retimed(run_dir(args.out, model, seed), args.batch,
                                                                 args.repeats)) for seed in seeds]
        results["models"][model] = {"dataset": DATASETS[model][0], "timed_on": timed_on, "seeds": rows,
                                    "summary": summarise(rows)}
    write_json_atomically(summary_path, results)
    write_text_atomically(args.out / "summary.md", markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
