"""pyaccel-nas: EcoNAS architecture search and multi-dimensional pruning on fused PyTorch ops.

    pyaccel-nas search       EcoNAS search (hierarchical / evolution / random) or DARTS on a proxy
    pyaccel-nas proxy-study  rank consistency of proxies: Spearman/Kendall against a ground-truth setting
    pyaccel-nas train        train one genotype at a setting and report validation and test accuracy
    pyaccel-nas prune        MDP: prune a CNN's channels and resolution (search, prune, fine-tune)
    pyaccel-nas bench        proxy benchmark table: build it, study its proxies, compare strategies on it
    pyaccel-nas info         versions, compiled kernels per op and device, and why an op would fall back

A wrong setting or input (a bad genotype, journal or checkpoint, an output directory that holds a finished
run) ends with one line, "pyaccel-nas: error: ...", and exit status 2; --debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyaccel_nas.config import non_negative_float, positive_float
from pyaccel_nas.validation import shorten

# an error message quoting a huge input (anything's repr) must not flood the terminal
MESSAGE_LIMIT = 2000


def _info(args: argparse.Namespace) -> int:
    from pyaccel_nas import info

    report = info()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lib = report["library"]
    print(f"pyaccel_nas {report['pyaccel_nas']}  torch {report['torch']}  CUDA {report['torch_cuda'] or '-'}  "
          f"GPU available: {report['cuda_available']}  threads: {report['threads']}")
    print(f"compiled library: {lib['path'] if lib['loaded'] else 'NOT LOADED: ' + lib['error']}")
    for op, entry in report["ops"].items():
        kernels = ", ".join(device for device, present in entry["kernels"].items() if present) or "none"
        print(f"  {op:<14} kernels: {kernels}")
        for device, reason in entry["fallback"].items():
            print(f"  {'':<14} {device}: reference implementation, because {reason}")
    return 0


def _given(**values) -> dict:
    """The settings a command's own flags give: those not None."""
    return {name: value for name, value in values.items() if value is not None}


def _darts_only_options() -> list[str]:
    """The fields of DartsConfig whose flags `search` has from it: those SearchConfig has no flag for."""
    from pyaccel_nas.darts import DartsConfig
    from pyaccel_nas.econas.search import SearchConfig

    return [name for name in DartsConfig.option_names() if name not in SearchConfig.option_names()]


def run_config(args: argparse.Namespace):
    """The configuration of the run that parsed flags of ``search``, ``proxy-study`` or ``prune`` describe:
    their preset with the flags given on top (ValueError for a flag the run has no use for or a bad value)."""
    from pyaccel_nas.darts import DartsConfig
    from pyaccel_nas.econas.search import SearchConfig
    from pyaccel_nas.econas.study import StudyConfig
    from pyaccel_nas.mdp.pipeline import PruneConfig

    if args.command == "proxy-study":
        return StudyConfig.from_arguments(args, **_given(threads=args.threads))
    if args.command == "prune":
        # a threshold replaces the preset's MAC target
        target = (dict(threshold=args.threshold, mac_reduction=None) if args.threshold is not None
                  else _given(mac_reduction=args.mac_reduction))
        return PruneConfig.from_arguments(args, **target)
    if args.command != "search":
        raise ValueError(f"{args.command} has no run configuration")
    if args.strategy == "darts":
        for name in SearchConfig.option_names():
            if name not in DartsConfig.option_names() and getattr(args, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} does not apply to --strategy darts" +
                                 (" (the proxy's epochs do)" if name == "cycles" else ""))
        # --threads is not a setting of DARTS: its supernet trains in this process, with _use_threads' count
        return DartsConfig.from_arguments(args, **({"fused": False} if args.reference_ops else {}))
    for name in _darts_only_options():
        if getattr(args, name) is not None:
            raise ValueError(f"--{name.replace('_', '-')} applies to --strategy darts only")
    if args.reference_ops:
        raise ValueError("--reference-ops applies to --strategy darts only")
    return SearchConfig.from_arguments(args, **_given(strategy=args.strategy, threads=args.threads))


def _search(args: argparse.Namespace) -> int:
    config = run_config(args)
    if args.strategy == "darts":
        from pyaccel_nas.darts import run_darts
        from pyaccel_nas.darts.run import CHECKPOINT_NAME
        from pyaccel_nas.darts.search import DartsSearch

        # the supernet trains in this process: --executor and --benchmark do not apply. A resume takes the
        # thread count the search started with, so it ends where an uninterrupted run ends.
        resumed = DartsSearch.saved_threads(args.out / CHECKPOINT_NAME) if args.resume else None
        _use_threads(args.threads if args.threads is not None else resumed)
        result = run_darts(config, args.out, resume=args.resume, progress=not args.quiet)
    elif args.benchmark is not None:
        from pyaccel_nas.bench import load_table
        from pyaccel_nas.bench.simulate import TableEvaluator
        from pyaccel_nas.econas.search import plan_search, run_search

        evaluator = TableEvaluator(load_table(args.benchmark))
        config = evaluator.search_config(config)
        print(plan_search(config, evaluator).describe(), flush=True)
        result = run_search(config, args.out, evaluator=evaluator, progress=not args.quiet)
    else:
        from pyaccel_nas.econas.search import plan_search, run_search

        print(plan_search(config).describe(), flush=True)
        with _executor(args, config.threads) as executor:
            result = run_search(config, args.out, resume=args.resume, executor=executor, progress=not args.quiet)
    _print_search(result, args)
    return 0


def _print_search(result: dict, args: argparse.Namespace) -> None:
    """What a search found, from its result (the schema every strategy writes), and the files it wrote."""
    darts = result["strategy"] == "darts"
    cost = f"cost {result['cost']['macs']:.3g} MACs"
    best = result["best"]
    if darts:
        print(f"darts search on {result['dataset']} with proxy {result['proxy']}: {result['cost']['epochs']} epochs, "
              f"{cost}, stopped by {result['stopped_by']}")
        if best is not None:
            print(f"supernet validation accuracy {best['val_accuracy']:.4f}; derived normal cell has "
                  f"{result['skip_connections']['normal']} skip connections")
    else:
        print(f"{result['strategy']} search on {result['dataset']} with proxy {result['proxy']}: "
              f"{result['trained_networks']} networks, {cost} ({result['cost']['epochs']} network-epochs), "
              f"stopped by {result['stopped_by']}")
        if best is not None:
            print(f"best validation accuracy {best['val_accuracy']:.4f} (network {best['network_id']})")
        else:
            print("no network finished training: every evaluation failed (each listed in result.json)")
    if result["failed"]:
        print(f"{len(result['failed'])} evaluations failed after {args.retries} retries (listed in result.json)")
    for entry in result["final"]["networks"]:
        scores = (f"failed: {entry['error']}" if entry["error"] else
                  f"val {entry['val_accuracy']:.4f} test {entry['test_accuracy']:.4f}")
        # DARTS retrains the one genotype it derived: no network to name
        network = "" if darts else f"network {entry['network_id']} "
        print(f"  retrained at {result['final']['proxy']}: {network}{scores}")
    plot = "alphas.png" if darts else "search.png"
    print(f"wrote {Path(args.out) / 'result.json'}, {Path(args.out) / plot}")


def _proxy_study(args: argparse.Namespace) -> int:
    from pyaccel_nas.econas.study import run_study

    config = run_config(args)
    with _executor(args, config.threads) as executor:
        result = run_study(config, args.out, resume=args.resume, executor=executor, progress=not args.quiet)
    truth = result["ground_truth"]
    print(f"{config.architectures} architectures on {config.dataset}; ground truth {truth['setting']} "
          f"({truth['cost_macs']:.3g} MACs)")
    print(f"{'proxy':<14} {'spearman':>9} {'kendall':>8} {'cost MACs':>11} {'x truth':>8}")
    for name, entry in result["proxies"].items():
        rho, tau = (("n/a" if v is None else f"{v:.3f}") for v in (entry["spearman"], entry["kendall"]))
        print(f"{name:<14} {rho:>9} {tau:>8} {entry['cost_macs']:>11.3g} {entry['cost_vs_ground_truth']:>8.3f}")
    print(f"wrote {Path(args.out) / 'study.json'}, {Path(args.out) / 'study.png'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from pyaccel_nas.econas.evaluation import DataSpec, EvaluationTask, run_evaluation
    from pyaccel_nas.econas.genotype import Genotype
    from pyaccel_nas.econas.network import NetworkConfig
    from pyaccel_nas.econas.proxy import Proxy
    from pyaccel_nas.econas.trainer import TrainRecipe
    from pyaccel_nas.exec.files import write_json_atomically
    from pyaccel_nas.validation import claim_output_dir

    setting = Proxy.parse(args.setting)
    genotype = Genotype.load(args.genotype)
    recipe = TrainRecipe(batch_size=args.batch_size, learning_rate=args.learning_rate)
    threads = _use_threads(args.threads)
    out = claim_output_dir(args.out, "train.json", overwrite=args.overwrite)
    task = EvaluationTask(
        network_id=0, genotype=genotype, proxy=setting,
        data=DataSpec(args.dataset, args.data_root, split_seed=args.seed),
        base_config=NetworkConfig(channels=args.channels, layers=args.layers),
        recipe=recipe, target_epochs=setting.epochs, schedule_epochs=setting.epochs, seed=args.seed,
        run_dir=str(out.resolve()), report_test=True, threads=threads,
    )
    result = run_evaluation(task)
    summary = {"genotype": task.genotype.to_dict(), "setting": str(setting), "dataset": args.dataset,
               "threads": threads, "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
               "checkpoint": result.checkpoint, "seconds": result.seconds}
    write_json_atomically(out / "train.json", summary)
    print(f"{setting} on {args.dataset}: val {result.val_accuracy:.4f} test {result.test_accuracy:.4f} "
          f"({result.seconds:.1f} s); wrote {out / 'train.json'}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from pyaccel_nas.mdp.pipeline import run_prune

    config = run_config(args)
    _use_threads(args.threads)  # training; latency is measured at config.latency_threads
    report = run_prune(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"{config.model} on {config.dataset}: MACs {report['macs']['before']:.4g} -> {report['macs']['after']:.4g} "
          f"(/{report['macs_reduction']:.2f}), params {report['params']['before']} -> {report['params']['after']}, "
          f"CPU latency (median, {config.latency_threads[-1]} thread(s)) at batch {config.latency_batch}, "
          f"channels-last {report['cpu_latency_ms']['before']:.1f} -> "
          f"{report['cpu_latency_ms']['after']:.1f} ms (x{report['speedup']:.2f}), NCHW "
          f"{report['cpu_latency_ms_nchw']['before']:.1f} -> {report['cpu_latency_ms_nchw']['after']:.1f} ms "
          f"(x{report['speedup_nchw']:.2f})")
    change = 100 * (report["accuracy"]["after"] - report["accuracy"]["before"])
    print(f"test accuracy: unpruned baseline {report['accuracy']['before']:.4f}, pruned {report['accuracy']['after']:.4f} "
          f"({change:+.2f} points)")
    written = ["report.json", "report.png", "pruned.pt (+ .json)", "baseline.pt (+ .json)"]
    if "channel_only" in report:
        arm = report["channel_only"]
        print(f"channel-only arm (Torch-Pruning, same start and fine-tuning): MACs {arm['macs']:.4g} "
              f"(/{arm['macs_reduction']:.2f}), channels-last {arm['cpu_latency_ms']:.1f} ms (x{arm['speedup']:.2f}), "
              f"NCHW {arm['cpu_latency_ms_nchw']:.1f} ms (x{arm['speedup_nchw']:.2f}), test accuracy "
              f"{arm['accuracy']:.4f} ({-arm['accuracy_drop_points']:+.2f} points)")
        written.append("channel_only.pt (+ .json)")
    print(f"wrote {', '.join(written)} in {args.out}")
    return 0


def _bench_build(args: argparse.Namespace) -> int:
    from pyaccel_nas.bench.build import BenchConfig, build_table
    from pyaccel_nas.bench.table import load_table

    config = BenchConfig.from_arguments(args, **_given(threads=args.threads))
    with _executor(args, config.threads) as executor:
        path = build_table(config, args.out, resume=args.resume, executor=executor, progress=not args.quiet)
    table = load_table(path)
    print(f"{len(table.architectures)} architectures x {len(table.settings)} settings + reference "
          f"{table.reference} on {config.dataset}; wrote {path}")
    return 0


def _bench_study(args: argparse.Namespace) -> int:
    from pyaccel_nas.bench.study import study_markdown, study_table, write_study
    from pyaccel_nas.bench.table import load_table
    from pyaccel_nas.validation import claim_output_dir

    table = load_table(args.table)
    out = claim_output_dir(args.out, "study.json", overwrite=args.overwrite)
    result = study_table(table, resamples=args.resamples, seed=args.seed)
    print(study_markdown(result))
    print(f"wrote {', '.join(map(str, write_study(result, out)))}")
    return 0


def _bench_compare(args: argparse.Namespace) -> int:
    from pyaccel_nas.bench import load_table
    from pyaccel_nas.bench.compare import CompareConfig, compare, markdown
    from pyaccel_nas.econas.plots import plot_comparison
    from pyaccel_nas.exec.files import write_json_atomically, write_text_atomically
    from pyaccel_nas.validation import claim_output_dir

    config = CompareConfig.from_arguments(args)
    table = load_table(args.table)
    out = claim_output_dir(args.out, "compare.json", overwrite=args.overwrite)
    result = compare(table, config, progress=not args.quiet)
    write_json_atomically(out / "compare.json", result)
    write_text_atomically(out / "compare.md", markdown(result))
    plot_comparison(result, out / "compare.png")
    print(markdown(result), end="")
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    return 0


def _use_threads(requested: int | None) -> int:
    """Sets this process's torch threads by the rule of :mod:`pyaccel_nas.threads` (the run records the
    count it used: result.json, train.json, report.json's provenance)."""
    from pyaccel_nas.threads import use_threads

    return use_threads(requested).threads


def _add_threads_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--threads", type=int, help=f"torch threads {what} (default: OMP_NUM_THREADS when set, else "
                                                    "the cores not kept busy by other processes at start; CPU results "
                                                    "depend on the count, so pin it to repeat a run exactly)")


def _add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str | None) -> None:
    from pyaccel_nas.data import DATASETS

    parser.add_argument("--dataset", choices=sorted(DATASETS), default=default_dataset,
                        help="dataset (default: fashion-mnist)")
    parser.add_argument("--data-root", help="directory holding the dataset (default: $PYACCEL_NAS_DATA, then the "
                                            "standard locations)")


def _add_run_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    from pyaccel_nas.exec import EXECUTORS

    parser.add_argument("--out", required=True, type=Path,
                        help="output directory (with --executor ray on several machines: a shared filesystem)")
    parser.add_argument("--resume", action="store_true", help=f"continue the {what} in OUT (same settings)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--executor", choices=EXECUTORS, default="inline",
                        help="where evaluations run: this process (default), a local process pool, or Ray tasks")
    parser.add_argument("--workers", type=int, help="process executor: worker processes (default: cores / threads)")
    parser.add_argument("--address", help="ray executor: cluster to join, auto or HOST:PORT (default: start a local "
                                          "Ray instance)")
    parser.add_argument("--threads", type=int,
                        help="torch threads per evaluation (default: the preset's, 1; 2 in smoke); results depend on "
                             "it, so a resumed run must keep it. --strategy darts: the supernet's threads (default: "
                             "OMP_NUM_THREADS when set, else the cores not kept busy by other processes at start)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a failed evaluation is run again before it is recorded as failed and "
                             f"the {what} goes on without it (default 2)")


def _executor(args: argparse.Namespace, threads: int):
    from pyaccel_nas.exec import make_executor

    return make_executor(args.executor, workers=args.workers, address=args.address, threads=threads,
                         retries=args.retries)


def build_parser() -> argparse.ArgumentParser:
    from pyaccel_nas.darts import DartsConfig
    from pyaccel_nas.econas.search import SearchConfig
    from pyaccel_nas.econas.strategies import STRATEGIES
    from pyaccel_nas.econas.study import StudyConfig

    parser = argparse.ArgumentParser(prog="pyaccel-nas", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser(
        "search", help="EcoNAS architecture search",
        description="EcoNAS search on a proxy (hierarchical, evolution or random; or DARTS with --strategy darts); "
                    "writes OUT/result.json, OUT/search.png, OUT/best_genotype.json, the journal of finished "
                    "evaluations and checkpoints. Flags override the preset.")
    search.add_argument("--strategy", choices=sorted([*STRATEGIES, "darts"]),
                        help="default: hierarchical; darts: differentiable search of a supernet (its own presets)")
    SearchConfig.add_arguments(search, default_preset="cpu")
    DartsConfig.add_arguments(search, default_preset=None, only=_darts_only_options())
    search.add_argument("--reference-ops", action="store_true", help="darts: run the supernet on the reference "
                                                                      "ops instead of the fused ones")
    search.add_argument("--benchmark", type=Path, metavar="TABLE",
                        help="benchmark mode: look accuracies up in this table (pyaccel-nas bench build) instead of "
                             "training; --proxy must be one of its settings; seconds, no journal")
    _add_run_arguments(search, "search")
    search.set_defaults(run=_search)

    study = commands.add_parser(
        "proxy-study", help="rank consistency of proxies against a ground-truth setting",
        description="Trains M random architectures under the ground truth and under each proxy; reports Spearman and "
                    "Kendall rank correlation and cost per proxy; writes OUT/study.json and OUT/study.png.")
    StudyConfig.add_arguments(study, default_preset="cpu")
    _add_run_arguments(study, "study")
    study.set_defaults(run=_proxy_study)

    train = commands.add_parser("train", help="train one genotype and report accuracy",
                                description="Trains a genotype (JSON, e.g. OUT/best_genotype.json of a search) from "
                                            "scratch; writes OUT/train.json and the checkpoint.")
    train.add_argument("--genotype", required=True, type=Path, help="genotype JSON file")
    _add_data_arguments(train, "fashion-mnist")
    train.add_argument("--setting", default="c0r0s0e600", help="training setting, c{x}r{y}s{z}e{n} (default: the "
                                                               "ground truth c0r0s0e600)")
    train.add_argument("--layers", type=int, default=20)
    train.add_argument("--channels", type=int, default=36)
    train.add_argument("--batch-size", type=int, default=96)
    train.add_argument("--learning-rate", type=positive_float, default=0.025)
    train.add_argument("--seed", type=int, default=0)
    _add_threads_argument(train, "of the training")
    train.add_argument("--out", required=True, type=Path, help="output directory (checked writable before training)")
    train.add_argument("--overwrite", action="store_true", help="replace the run in OUT if it has a train.json "
                                                                "(refused otherwise)")
    train.set_defaults(run=_train)

    from pyaccel_nas.mdp.pipeline import PruneConfig

    prune = commands.add_parser(
        "prune", help="MDP: multi-dimensional pruning of channels and resolution",
        description="Trains the over-parameterised network (resolution branches, channel gates), prunes it "
                    "physically, fine-tunes it, and trains the unpruned baseline for the same total epochs; "
                    "prunes the same pre-trained network channels-only to the same MACs (Torch-Pruning) to compare; "
                    "writes OUT/report.json, OUT/report.png, OUT/pruned.pt, OUT/baseline.pt and "
                    "OUT/channel_only.pt (each + .json). Flags override the preset.")
    PruneConfig.add_arguments(prune, default_preset="cpu")
    target = prune.add_mutually_exclusive_group()
    target.add_argument("--mac-reduction", type=positive_float,
                        help="prune to the unpruned MACs divided by this (default 2); one that no pruning of the "
                             "model could reach is refused before training")
    target.add_argument("--threshold", type=non_negative_float,
                        help="instead: remove channels whose gates are below this")
    _add_threads_argument(prune, "of the training (latency is measured at the preset's latency_threads)")
    prune.add_argument("--out", required=True, type=Path, help="output directory")
    prune.add_argument("--overwrite", action="store_true", help="replace the run in OUT if it has a report.json "
                                                                "(refused otherwise)")
    prune.add_argument("--quiet", action="store_true", help="no progress bar")
    prune.set_defaults(run=_prune)

    bench = commands.add_parser("bench", help="proxy benchmark table: build it, study it, compare strategies on it")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    from pyaccel_nas.bench.build import BenchConfig

    build = bench_commands.add_parser(
        "build", help="train sampled architectures under a grid of proxies and a reference",
        description="Samples architectures, trains each under every proxy setting (validation accuracy after E, 2E "
                    "and 3E epochs) and under the reference setting (validation and test accuracy); writes "
                    "OUT/table.jsonl (rewritten after every few architectures) and the journal OUT/journal.jsonl "
                    "that --resume continues from.")
    BenchConfig.add_arguments(build, default_preset="cpu")
    _add_run_arguments(build, "build")
    build.set_defaults(run=_bench_build)

    bench_study = bench_commands.add_parser(
        "study", help="rank consistency of the proxies of a table, with bootstrap intervals",
        description="For every setting of a table and every epoch it was scored at (E, 2E, 3E): Spearman and "
                    "Kendall rank correlation of its validation accuracy with the reference's test accuracy, "
                    "95% bootstrap intervals over architectures, and its cost relative to the reference; the "
                    "efficient frontier and the samples-vs-epochs and channels-vs-resolution groups. Prints the "
                    "table; writes OUT/study.json, OUT/study.md and OUT/study.png.")
    bench_study.add_argument("--table", required=True, type=Path, help="the table, e.g. OUT/table.jsonl of a build")
    bench_study.add_argument("--out", required=True, type=Path, help="output directory")
    bench_study.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per interval "
                                                                          "(default 2000)")
    bench_study.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    bench_study.add_argument("--overwrite", action="store_true", help="replace the study in OUT if it has a "
                                                                      "study.json (refused otherwise)")
    bench_study.set_defaults(run=_bench_study)

    from pyaccel_nas.bench.compare import CompareConfig

    comparison = bench_commands.add_parser(
        "compare", help="search strategies over many seeds at equal budgets, in benchmark mode",
        description="Runs every strategy under every proxy of a table, for each seed and budget, with accuracies "
                    "looked up in the table; writes OUT/compare.json, OUT/compare.md and OUT/compare.png.")
    comparison.add_argument("--table", required=True, type=Path, help="the table (OUT/table.jsonl of bench build)")
    CompareConfig.add_arguments(comparison, default_preset="default")
    comparison.add_argument("--out", required=True, type=Path, help="output directory")
    comparison.add_argument("--overwrite", action="store_true", help="replace a comparison in OUT")
    comparison.add_argument("--quiet", action="store_true", help="no progress bar")
    comparison.set_defaults(run=_bench_compare)

    info = commands.add_parser("info", help="versions, compiled kernels and fallbacks")
    info.add_argument("--json", action="store_true", help="print the full report as JSON")
    info.set_defaults(run=_info)

    debug = "on an error, show the traceback instead of one line"
    parser.add_argument("--debug", action="store_true", help=debug)
    # also after the command (bench's included); SUPPRESS keeps a --debug given before it
    for command in [*commands.choices.values(), *bench_commands.choices.values()]:
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pyaccel_nas.econas.journal import JournalError
    from pyaccel_nas.exec.base import EnvironmentFailure

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    # what the user asked for or handed in: settings, input files, the output directory, the dataset, the
    # machine (ValueError, OSError), a journal of another search. Any other exception is a bug: its
    # traceback stays.
    except (ValueError, OSError, JournalError, EnvironmentFailure) as exc:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {shorten(str(exc), MESSAGE_LIMIT)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
