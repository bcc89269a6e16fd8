"""Times eager, torch.compile'd and fused ops over a grid of shapes; prints tables and writes JSON + CSV.

    python -m benchmarks.report [--grid quick|full] [--ops sep_conv2d,...] [--repeats N] [--out DIR]
                                [--device cpu|cuda] [--impls eager,compiled,fused]

On ``--device cuda`` times are CUDA-event times, the floors are the GPU's device-to-device copy bandwidth
(DRAM, and L2 for cases that fit it) and float32 matmul rate, and the result files are named after the GPU.

Ratios above 1 mean the fused op is faster. On 2 cores the quick grid takes ~30 s with a warm inductor
cache (~2 min cold, compiles included); the full grid (232 cases) about an hour. See benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks import measure
from benchmarks.cases import GRIDS, IMPLS, OPS, PASSES, Case, grid, make_step, set_threads
from pyaccel_nas.provenance import machine, source_state
from pyaccel_nas.threads import OtherLoad, busy_cores

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
BUSY_WARNING = 0.2  # cores used by other processes
COLUMNS = (
    "op", "case", "pass", "eager_ms", "compiled_ms", "fused_ms", "eager/fused", "compiled/fused",
    "floor_ms", "fused/floor", "mflop", "mbytes", "saved_eager_mib", "saved_fused_mib", "rel_err", "busy_others",
    "faults_eager", "faults_compiled", "faults_fused",
)  # fmt: skip


def progress(items: list, label):
    try:
        from tqdm import tqdm
    except ImportError:
        for i, item in enumerate(items, 1):
            print(f"[{i}/{len(items)}] {label(item)}", file=sys.stderr, flush=True)
            yield item
    else:
        yield from tqdm(items, file=sys.stderr)


def time_impls(
    case: Case, pass_: str, *, impls: Sequence[str], device: str, warmup: int, repeats: int, retries: int
) -> tuple[dict[str, measure.Samples], float | None]:
    """The samples of each impl for one pass, and the cores other processes used meanwhile.

    The three impls are sampled round robin so they share conditions; when other processes were busy,
    the pass waits for a quiet machine and is timed again, up to ``retries`` times.
    """
    steps = {impl: make_step(case, impl, pass_, device) for impl in impls}
    if "compiled" in steps:
        steps["compiled"]()  # compiles, outside the timing
    for attempt in range(retries + 1):
        load = OtherLoad()
        samples = measure.time_steps(steps, warmup=warmup, repeats=repeats, device=device)
        busy = load.cores()
        if busy is None or busy <= BUSY_WARNING or attempt == retries:
            return samples, busy
        print(f"  {case.id} {pass_}: others used {busy:.1f} cores; waiting to time it again", file=sys.stderr)
        measure.wait_until_quiet(BUSY_WARNING)


def bench_case(
    case: Case,
    floors: measure.Floors,
    *,
    warmup: int,
    repeats: int,
    retries: int,
    device: str = "cpu",
    impls: Sequence[str] = IMPLS,
) -> list[dict]:
    """One row per pass. The compiled callable is built here, once, for this case only. Impls left out of
    ``impls`` (eager and fused are always timed) get None."""
    impls = [impl for impl in IMPLS if impl in set(impls) | {"eager", "fused"}]
    err = measure.max_rel_error(case, device=device)
    saved = {impl: measure.saved_for_backward_bytes(case, impl, device) / measure.MIB for impl in ("eager", "fused")}
    rows = []
    for pass_ in PASSES:
        samples, busy = time_impls(
            case, pass_, impls=impls, device=device, warmup=warmup, repeats=repeats, retries=retries
        )
        ms = {impl: 1e3 * s.median for impl, s in samples.items()}
        compiled_ms = ms.get("compiled")
        floor_ms = 1e3 * floors.seconds(case, pass_)
        flops, nbytes = case.work(pass_)
        backward = pass_ == "fwd+bwd"
        rows.append({
            "op": case.op, "case": case.name, "pass": pass_,
            "eager_ms": ms["eager"], "compiled_ms": compiled_ms, "fused_ms": ms["fused"],
            "eager/fused": ms["eager"] / ms["fused"],
            "compiled/fused": None if compiled_ms is None else compiled_ms / ms["fused"],
            "floor_ms": floor_ms, "fused/floor": ms["fused"] / floor_ms, "mflop": flops / 1e6, "mbytes": nbytes / 1e6,
            "saved_eager_mib": saved["eager"] if backward else None,
            "saved_fused_mib": saved["fused"] if backward else None,
            "rel_err": err[pass_], "busy_others": busy,
            **{f"faults_{impl}": samples[impl].faults_per_call if impl in samples else None for impl in IMPLS},
        })  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> dict:
    """Median eager/fused and compiled/fused per op and pass."""
    summary: dict = {}
    for op in OPS:
        for pass_ in PASSES:
            sel = [r for r in rows if r["op"] == op and r["pass"] == pass_]
            if sel:
                summary.setdefault(op, {})[pass_] = {
                    k: statistics.median(values) if (values := [r[k] for r in sel if r[k] is not None]) else None
                    for k in ("eager/fused", "compiled/fused", "fused/floor")
                }
    return summary


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub-markdown table (readable in a terminal and pasteable into NOTES.md)."""
    cells = [columns] + [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def render(rows: list[dict], summary: dict, header: dict) -> str:
    m = header["machine"]
    where = f"{m['gpu']}, CUDA {m['cuda']}" if "gpu" in m else f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads"
    out = [
        f"# {where}, torch {m['torch']}, grid {header['grid']}, median of up to {header['repeats']} samples",
        "times in ms; ratios > 1: fused is faster; floor = max(bytes / bandwidth, FLOPs / peak); "
        "saved = bytes saved for backward + output (MiB); rel_err = max|fused - eager| / max|eager|",
    ]
    for op in summary:
        for pass_ in PASSES:
            cols = ["case", "eager_ms", "compiled_ms", "fused_ms", "eager/fused", "compiled/fused", "floor_ms",
                    "fused/floor"]  # fmt: skip
            cols += ["saved_eager_mib", "saved_fused_mib"] if pass_ == "fwd+bwd" else []
            cols += ["rel_err"]
            sel = [r for r in rows if r["op"] == op and r["pass"] == pass_]
            med = summary[op][pass_]
            out += [
                f"\n## {op}, {pass_}\n",
                table(sel, cols),
                f"\nmedian eager/fused {fmt(med['eager/fused'])}, compiled/fused {fmt(med['compiled/fused'])}, "
                f"fused/floor {fmt(med['fused/floor'])}",
            ]
    out.append("\n## median ratios\n")
    out.append(table(
        [{"op": op, "pass": p, **v} for op, by_pass in summary.items() for p, v in by_pass.items()],
        ["op", "pass", "eager/fused", "compiled/fused", "fused/floor"],
    ))  # fmt: skip
    return "\n".join(out)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def whole_run_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """``--repeats`` and ``--out``, the options every whole-run benchmark takes."""
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed samples per variant (default {repeats})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)


def quiet_cores() -> int:
    """Uses every core this process may run on, waits for other processes to go quiet, returns the cores."""
    cores = set_threads()
    measure.wait_until_quiet(0.2)
    return cores


def save_report(benchmark: str, fields: dict, cores: int, out_dir: Path, tag: str = "") -> tuple[dict, Path]:
    """A whole-run benchmark's report, ``{"benchmark", **fields, "machine", "source", "when"}``, written to
    OUT_DIR/{benchmark}[_{tag}]_{cpu}-{cores}c_{when}.json (and said on stderr); returns it and the path."""
    report = {"benchmark": benchmark, **fields, "machine": machine(cores), "source": source_state(),
              "when": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")}
    out_dir.mkdir(parents=True, exist_ok=True)
    where = f"{slug(report['machine']['cpu'])}-{cores}c"
    name = "_".join(part for part in (benchmark, tag, where, report["when"]) if part)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    return report, path


def write(rows: list[dict], summary: dict, header: dict, out_dir: Path) -> tuple[Path, Path]:
    m = header["machine"]
    where = slug(m["gpu"]) if "gpu" in m else f"{slug(m['cpu'])}-{m['cores']}c"
    threads = "" if "gpu" in m else f"_t{m['threads']}"
    stem = (
        f"{header['grid']}_{where}_torch-{slug(m['torch'])}{threads}_"
        f"{header['timestamp'].replace(':', '').replace('-', '')}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    json_path.write_text(json.dumps({"header": header, "summary": summary, "results": rows}, indent=1) + "\n")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="quick")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--repeats", type=int, default=15, help="timed samples per measurement (median taken)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before the samples")
    parser.add_argument("--retries", type=int, default=3, help="re-timings of a pass disturbed by other processes")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON and CSV results")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N): where the tensors live")
    parser.add_argument("--impls", default=",".join(IMPLS), help="impls to time; eager and fused always are")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    impls = [impl.strip() for impl in args.impls.split(",") if impl.strip()]
    if set(impls) - set(IMPLS):
        parser.error(f"--impls: unknown {sorted(set(impls) - set(IMPLS))}; choose from {','.join(IMPLS)}")

    cores = set_threads()
    busy_before = busy_cores()
    if busy_before is not None and busy_before > BUSY_WARNING:
        print(f"other processes keep {busy_before:.1f} of {cores} cores busy; waiting for them", file=sys.stderr)
        busy_before = measure.wait_until_quiet(BUSY_WARNING)
    cases = grid(args.grid, [op.strip() for op in args.ops.split(",") if op.strip()])
    floors = measure.measure_floors(args.device)
    header = {
        "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(cores, args.device),
        "device": args.device,
        "impls": impls,
        "source": source_state(),
        "grid": args.grid,
        "cases": len(cases),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "dtype": "float32",
        "compiled": "torch.compile(reference, dynamic=False), inductor",
        "floors": {
            "dram_GBps": floors.dram_bytes_per_s / 1e9,
            "cache_GBps": floors.cache_bytes_per_s / 1e9,
            "cache_resident_bytes": floors.cache_resident_bytes,
            "peak_GFLOPps": floors.flops_per_s / 1e9,
        },
    }
    rows = []
    for case in progress(cases, lambda c: c.id):
        rows += bench_case(
            case, floors, warmup=args.warmup, repeats=args.repeats, retries=args.retries, device=args.device,
            impls=impls,
        )  # fmt: skip
    header["busy_cores_by_others"] = {"before": busy_before, "max_during": max(
        (r["busy_others"] for r in rows if r["busy_others"] is not None), default=None)}
    summary = summarise(rows)
    print(render(rows, summary, header))
    json_path, csv_path = write(rows, summary, header, args.out)
    print(f"\nwrote {json_path} and {csv_path}", file=sys.stderr)
    noisy = [f"{r['op']}/{r['case']} {r['pass']}: {r['busy_others']:.1f} cores" for r in rows
             if r["busy_others"] is not None and r["busy_others"] > BUSY_WARNING]  # fmt: skip
    if noisy:
        print("WARNING: timed while other processes were busy (noisy):\n  " + "\n  ".join(noisy), file=sys.stderr)
    bad = [f"{r['op']}/{r['case']} {r['pass']}: {r['rel_err']:.1e}" for r in rows if r["rel_err"] > 1e-4]
    if bad:
        print("WARNING: fused differs from eager by more than 1e-4 (relative):\n  " + "\n  ".join(bad), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
