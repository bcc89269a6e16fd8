"""The MDP run behind ``pyaccel-nas prune``: search, prune, fine-tune, and the baseline to compare against.

0. Pre-training: the plain network trains ``pretrain_epochs`` (this run is the baseline's first epochs).
1. Searching: the over-parameterised network (K resolution branches and channel gates per block), its
   convolutions, BatchNorms and classifier starting from the pre-trained ones, trains ``search_epochs`` with
   L = L_ce + alpha * L_st + eta * L_gate + beta * L_cost (:mod:`pyaccel_nas.mdp.losses`), from the learning
   rate the baseline's schedule has reached, along a cosine schedule of its own.
2. Pruning: each block keeps its most important resolution; channels are removed down to
   ``1 / mac_reduction`` of the plain network's MACs (or below ``threshold``); the network is rebuilt
   smaller (:mod:`pyaccel_nas.mdp.prune`).
3. Fine-tuning: the pruned network trains ``finetune_epochs`` on a schedule of its own.

The baseline is the plain (unpruned) network trained ``pretrain_epochs + search_epochs + finetune_epochs``
along one cosine schedule: the comparison the issue asks for ("the unpruned network trained with the same
total epochs"); the pruned network has had exactly as many epochs. Nothing is selected on the test split;
it is evaluated once per network for the report.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from pyaccel_nas.config import RunConfig, non_negative_float, option, positive_float
from pyaccel_nas.data import DATASETS, Dataset, load_dataset
from pyaccel_nas.data.split import stratified_sample
from pyaccel_nas.exec.files import write_json_atomically
from pyaccel_nas.mdp.arch import ArchConfig
from pyaccel_nas.mdp.channel_only import channel_prune, require_torch_pruning
from pyaccel_nas.mdp.export import save_model
from pyaccel_nas.mdp.latency import branch_latency_costs, headline_latency_ms, latency_runs_ms
from pyaccel_nas.mdp.layers import MDPNet
from pyaccel_nas.mdp.losses import branch_costs, branch_entropy, expected_cost, gate_l1, mdp_regulariser
from pyaccel_nas.mdp.models import MODELS, load_plain_weights, model_config, over_parameterise
from pyaccel_nas.mdp.prune import GROUP_SCORES, MacBudgetError, channel_widths, config_macs, prune, smallest_macs
from pyaccel_nas.mdp.report import plot_report
from pyaccel_nas.nn import count_macs, count_parameters
from pyaccel_nas.provenance import machine, source_state
from pyaccel_nas.threads import available_cores
from pyaccel_nas.training import ModelTrainer, TrainRecipe, accuracy
from pyaccel_nas.validation import claim_output_dir, require_finite

REPORT_FORMAT = "pyaccel_nas.mdp.report/1"
COSTS = ("macs", "latency")


@dataclass(frozen=True)
class PruneConfig(RunConfig):
    model: str = option("the network to prune", "resnet20", choices=sorted(MODELS))
    dataset: str = option("dataset", "fashion-mnist", choices=sorted(DATASETS))
    data_root: str | None = option("directory holding the dataset (default: $PYACCEL_NAS_DATA, then the standard "
                                   "locations)", None)
    seed: int = option("seed", 0)
    image_size: int | None = option("resize the images to this many pixels a side (torchvision's networks "
                                    "downsample by 32: give them 32 or more); default: the dataset's size", None)
    train_divisor: int = option("train on a class-stratified 1/N of the training split", 1)
    eval_samples: int | None = None  # evaluate on this many val and test samples (None: all)
    pretrain_epochs: int = option("plain-network epochs before the search (shared with the baseline)", 100)
    search_epochs: int = option("epochs of the search", 60)
    finetune_epochs: int = option("epochs of the fine-tuning", 40)
    batch_size: int = 128
    learning_rate: float = option("initial SGD learning rate of pre-training and the baseline (the search goes on "
                                  "from the rate the baseline's cosine schedule has reached)", 0.1,
                                  parse=positive_float)
    finetune_learning_rate: float = option("initial learning rate of the fine-tuning's own cosine schedule", 0.01,
                                           parse=positive_float)
    weight_decay: float = 5e-4
    alpha: float = option("weight of the branch-entropy loss L_st", 0.1, parse=non_negative_float)
    # weight of L_gate (sum of |gate|): every step pulls each gate to 0 by lr * eta
    eta: float = option("weight of the gate L1 loss L_gate", 2.5e-4, parse=non_negative_float)
    beta: float = option("weight of the resolution cost L_cost (expected cost of the resolution branches; 0: "
                         "choose resolutions by accuracy alone)", 0.5, parse=non_negative_float)
    cost: str = option("what L_cost charges a resolution branch, as a fraction of the plain network's: its MACs, "
                       "or its CPU latency measured on this machine before the search (pool, convs, upsample, "
                       "at the latency batch, one thread)", "macs", choices=COSTS)
    # --mac-reduction and --threshold are flags of their own (pyaccel_nas.cli): giving a threshold unsets
    # mac_reduction
    mac_reduction: float | None = 2.0  # prune to plain MACs / mac_reduction ...
    threshold: float | None = None  # ... or remove channels whose gates are below this
    round_to: int = option("channel counts are multiples of this", 4)
    group_score: str = option("how channels that several layers add together (a residual stream) are scored "
                              "from those layers' gates: max (kept if any needs it) or mean", "max",
                              choices=tuple(GROUP_SCORES))
    channel_only: bool = option("also prune the network channels-only at MDP's MACs, from the same pre-trained "
                                "weights, with the same fine-tuning (Torch-Pruning, the `prune` extra), to compare",
                                True)
    latency_batch: int = 64
    latency_repeats: int = 20
    latency_threads: tuple[int, ...] = (1, 2)  # the last is the report's headline latency

    PRESETS = {
        # under a minute on 2 CPU cores: a sliver of the data, one epoch per stage
        "smoke": dict(train_divisor=200, eval_samples=200, pretrain_epochs=1, search_epochs=1, finetune_epochs=1,
                      batch_size=32, latency_batch=16, latency_repeats=2, latency_threads=(1,)),
        # about five minutes on one CPU core: a tenth of the data (fewer with --train-divisor), 10 epochs in all.
        # Few steps: a strong entropy weight, so that branch importances settle within one search epoch; most of
        # the epochs go to fine-tuning, where pruning's accuracy comes back (search 3 + fine-tune 3 at lr 0.01
        # lost 1.9-2.7 points, 1 + 5 at lr 0.03 lost -0.05-0.26: benchmarks/NOTES.md, "MDP: the cpu preset's
        # schedule"); eta and beta as measured best in "MDP: real runs"
        "cpu": dict(train_divisor=10, eval_samples=None, pretrain_epochs=4, search_epochs=1, finetune_epochs=5,
                    batch_size=32, learning_rate=0.05, finetune_learning_rate=0.03, alpha=3.0, eta=0.01),
        # the full training set and long schedules (GPU)
        "paper": dict(),
    }

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {', '.join(MODELS)}")
        if (self.mac_reduction is None) == (self.threshold is None):
            raise ValueError("PruneConfig: give exactly one of `mac_reduction` and `threshold`")
        require_finite(self, "mac_reduction", "threshold", "learning_rate", "finetune_learning_rate", "weight_decay",
                       "alpha", "eta", "beta")
        if self.mac_reduction is not None and self.mac_reduction <= 1:
            raise ValueError(f"PruneConfig: `mac_reduction` must be > 1, got {self.mac_reduction}")
        optional_counts = tuple(name for name in ("eval_samples", "image_size") if getattr(self, name) is not None)
        for name in ("search_epochs", "finetune_epochs", "train_divisor", "batch_size", "latency_batch",
                     "latency_repeats", "round_to", *optional_counts):
            if getattr(self, name) < 1:
                raise ValueError(f"PruneConfig: `{name}` must be >= 1, got {getattr(self, name)}")
        if self.cost not in COSTS:
            raise ValueError(f"PruneConfig: `cost` must be one of {', '.join(COSTS)}, got {self.cost!r}")
        if self.group_score not in GROUP_SCORES:
            raise ValueError(f"PruneConfig: `group_score` must be one of {', '.join(GROUP_SCORES)}, got "
                             f"{self.group_score!r}")
        if not self.latency_threads or min(self.latency_threads) < 1:
            raise ValueError(f"PruneConfig: `latency_threads` must be thread counts >= 1, got {self.latency_threads}")
        for name in ("learning_rate", "finetune_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PruneConfig: `{name}` must be > 0, got {getattr(self, name)}")
        optional = ("threshold",) if self.threshold is not None else ()
        for name in ("alpha", "eta", "beta", "pretrain_epochs", *optional):
            if getattr(self, name) < 0:
                raise ValueError(f"PruneConfig: `{name}` must be >= 0, got {getattr(self, name)}")


def _data(config: PruneConfig) -> Dataset:
    dataset = load_dataset(config.dataset, config.data_root, seed=config.seed)
    dims = MODELS[config.model][0]
    if (dataset.info.frames is not None) != (dims == 3):
        raise ValueError(f"model {config.model!r} is {dims}-D but dataset {config.dataset!r} holds "
                         f"{'clips' if dataset.info.frames else 'images'}")
    if config.image_size is not None:
        dataset = dataset.resized(config.image_size)
    dataset = dataset.subset_train(config.train_divisor, seed=config.seed)
    if config.eval_samples is None:
        return dataset
    generator = torch.Generator().manual_seed(config.seed)
    smaller = {name: getattr(dataset, name).take(stratified_sample(
        getattr(dataset, name).labels, min(config.eval_samples, len(getattr(dataset, name))), generator))
        for name in ("val", "test")}
    return dataclasses.replace(dataset, **smaller)


def _initialised(arch: ArchConfig, seed: int) -> MDPNet:
    with torch.random.fork_rng(devices=[]):  # initialise from the seed without touching the global RNG
        torch.manual_seed(seed)
        return MDPNet(arch)


def _train(trainer: ModelTrainer, epochs: int, what: str, progress: bool) -> list[dict]:
    with tqdm(total=epochs * trainer.steps_per_epoch(), desc=what, unit="batch", disable=not progress) as bar:
        return [dataclasses.asdict(s) for s in trainer.train(epochs, progress=bar.update)]


def _measure(model: MDPNet, dataset: Dataset) -> dict:
    x1 = torch.randn(1, model.config.in_channels, *model.config.input_size)
    return {"params": count_parameters(model), "macs": count_macs(model, x1),
            "val_accuracy": accuracy(model, dataset, "val"), "accuracy": accuracy(model, dataset, "test")}


def _compared(before: dict, after: dict) -> dict:
    """How a pruned network compares with the unpruned one."""
    return {"macs_reduction": before["macs"] / after["macs"],
            "speedup": before["cpu_latency_ms"] / after["cpu_latency_ms"],
            "speedup_nchw": before["cpu_latency_ms_nchw"] / after["cpu_latency_ms_nchw"],
            "accuracy_drop_points": 100 * (before["accuracy"] - after["accuracy"])}


def _check_reachable(config: PruneConfig, base: ArchConfig, base_macs: int) -> None:
    """Refuses, before any training, a ``mac_reduction`` that no outcome of the search could reach."""
    if config.mac_reduction is None:
        return
    largest = base_macs / smallest_macs(over_parameterise(base), config.round_to)
    if config.mac_reduction > largest:
        raise ValueError(f"PruneConfig: `mac_reduction` {config.mac_reduction:g} is out of reach for {config.model} "
                         f"on {config.dataset}: pruning every block to its lowest resolution and every channel "
                         f"group to {config.round_to} channels reduces its MACs by at most {largest:.3f}")


def run_prune(config: PruneConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Runs the three stages and the baseline, and (``config.channel_only``) the channel-only arm; writes
    OUT/report.json, OUT/report.png, OUT/pruned.pt, OUT/baseline.pt and OUT/channel_only.pt (each + .json);
    returns the report.

    The channel-only arm starts from the baseline's weights after ``pretrain_epochs + search_epochs`` (as
    many epochs as MDP's search has had), is pruned by :func:`~pyaccel_nas.mdp.channel_only.channel_prune`
    to at most the MACs of MDP's pruned network, and fine-tuned exactly as that one is.

    Refuses an OUT that holds a report unless ``overwrite``, a ``mac_reduction`` out of reach and a missing
    Torch-Pruning, before it trains anything. The baseline is saved as soon as it is trained: a budget that
    the searched resolutions cannot meet is only known after the search, and the error then does not lose it.
    """
    out = claim_output_dir(out, "report.json", overwrite=overwrite)
    started = time.perf_counter()
    if config.channel_only:
        require_torch_pruning()
    dataset = _data(config)
    info = dataset.info
    input_size = info.sample_shape[1:]
    base = model_config(config.model, in_channels=info.channels, num_classes=info.num_classes, input_size=input_size)
    base_macs = config_macs(base)
    _check_reachable(config, base, base_macs)
    recipe = TrainRecipe(learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                         batch_size=config.batch_size)
    total_epochs = config.pretrain_epochs + config.search_epochs + config.finetune_epochs

    baseline = ModelTrainer(_initialised(base, config.seed), dataset, total_epochs, recipe, config.seed)
    over = _initialised(over_parameterise(base), config.seed)
    if config.pretrain_epochs:
        _train(baseline, config.pretrain_epochs, "pre-train", progress)
        load_plain_weights(over, baseline.model.state_dict())  # copies: the baseline trains on apart
    search_recipe = dataclasses.replace(recipe, learning_rate=baseline.optimizer.param_groups[0]["lr"])
    _train(baseline, config.search_epochs, "baseline", progress)
    channel_only_start = copy.deepcopy(baseline.model).eval() if config.channel_only else None
    _train(baseline, config.finetune_epochs, "baseline", progress)
    save_model(baseline.model, out / "baseline.pt")

    example = torch.zeros(1, info.channels, *input_size)  # for counting MACs
    if config.cost == "macs":
        costs = branch_costs(over, example, base_macs)
    else:
        costs = branch_latency_costs(over, config.latency_batch, config.latency_repeats)
    searched = ModelTrainer(over, dataset, config.search_epochs, search_recipe, config.seed,
                            extra_loss=mdp_regulariser(config.alpha, config.eta, config.beta, costs))
    search_stats = _train(searched, config.search_epochs, "search", progress)
    over = searched.model.eval()
    try:
        result = prune(over, round_to=config.round_to, threshold=config.threshold, group_score=config.group_score,
                       mac_budget=None if config.mac_reduction is None else base_macs / config.mac_reduction)
    except MacBudgetError as exc:
        raise MacBudgetError(f"{exc}: the resolutions the search chose allow a `mac_reduction` of at most "
                             f"{base_macs / exc.smallest_macs:.3f} (a larger `beta` favours lower ones); the trained "
                             f"baseline is saved in {out / 'baseline.pt'}", exc.smallest_macs) from exc
    pruned_accuracy = accuracy(result.model, dataset, "val")

    finetune_recipe = dataclasses.replace(recipe, learning_rate=config.finetune_learning_rate)
    finetuner = ModelTrainer(result.model, dataset, config.finetune_epochs, finetune_recipe, config.seed + 1)
    finetune_stats = _train(finetuner, config.finetune_epochs, "fine-tune", progress)
    models = {"before": baseline.model, "after": result.model}
    measured = {name: _measure(model, dataset) for name, model in models.items()}

    if config.channel_only:
        channel_only, ratio = channel_prune(channel_only_start, measured["after"]["macs"], config.round_to)
        channel_only_pruned_accuracy = accuracy(channel_only, dataset, "val")
        channel_only_trainer = ModelTrainer(channel_only, dataset, config.finetune_epochs, finetune_recipe,
                                            config.seed + 1)
        channel_only_stats = _train(channel_only_trainer, config.finetune_epochs, "channel-only fine-tune", progress)
        models["channel_only"] = channel_only
        measured["channel_only"] = _measure(channel_only, dataset)
        save_model(channel_only, out / "channel_only.pt")

    latency_runs = latency_runs_ms(models, config.latency_batch, config.latency_repeats, config.latency_threads)
    headline = headline_latency_ms(latency_runs)
    for name in models:
        measured[name].update(headline[name])
    before, after = measured["before"], measured["after"]
    save_model(result.model, out / "pruned.pt")
    report = {
        "format": REPORT_FORMAT,
        "config": dataclasses.asdict(config),
        "dataset": {"name": info.name, "train": len(dataset.train), "val": len(dataset.val),
                    "test": len(dataset.test), "input": [info.channels, *input_size]},
        **{key: {"before": before[key], "after": after[key]} for key in before},
        **_compared(before, after),
        "latency": {"batch": config.latency_batch, "batchnorm_folded": True, "repeats": config.latency_repeats,
                    "headline": f"median, {config.latency_threads[-1]} thread(s); cpu_latency_ms and speedup "
                                f"channels-last, *_nchw NCHW",
                    "runs": latency_runs},
        "search": {"val_accuracy": accuracy(over, dataset, "val"), "macs": count_macs(over, example),
                   "branch_entropy": branch_entropy(over).item(), "gate_l1": gate_l1(over).item(),
                   "expected_cost": expected_cost(costs).item(), "cost": config.cost,
                   "branch_costs": {str(i): costs[block.mix].tolist() for i, block in over.prunable_blocks()
                                    if block.mix in costs},
                   "epochs": search_stats},
        "pruning": {"threshold": result.threshold, "val_accuracy_before_finetune": pruned_accuracy},
        "finetune": {"epochs": finetune_stats},
        "baseline_epochs": total_epochs,
        "epochs": {"pretrain": config.pretrain_epochs, "search": config.search_epochs,
                   "finetune": config.finetune_epochs},
        "blocks": result.blocks_report(over.config),
    }
    if config.channel_only:
        report["channel_only"] = {
            **measured["channel_only"], **_compared(before, measured["channel_only"]),
            "pruning": {"method": "Torch-Pruning MetaPruner, global, GroupMagnitudeImportance(p=2)",
                        "torch_pruning": require_torch_pruning().__version__, "pruning_ratio": ratio,
                        "mac_budget": measured["after"]["macs"],
                        "val_accuracy_before_finetune": channel_only_pruned_accuracy},
            "finetune": {"epochs": channel_only_stats},
            "blocks": channel_widths(base, channel_only),
        }
    report["provenance"] = {**source_state(), "machine": machine(available_cores())}
    report["seconds"] = time.perf_counter() - started
    write_json_atomically(out / "report.json", report)
    plot_report(report, out / "report.png")
    return report
