"""Running a DARTS search: epochs until the proxy's or the budget's end, a checkpoint after each (which
``resume`` continues from, ending where an uninterrupted run ends), the derived genotype retrained at
``final_proxy``, and the outputs under ``--out``: ``result.json`` in the schema every search strategy
writes (:mod:`pyaccel_nas.econas.result`) plus DARTS' own keys, ``alphas.png``, ``best_genotype.json``
and ``best_genotype.png``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from pyaccel_nas.darts.search import DartsConfig, DartsSearch
from pyaccel_nas.darts.supernet import skip_count
from pyaccel_nas.econas.evaluation import DataSpec, EvaluationTask, proxied_dataset, run_evaluation
from pyaccel_nas.econas.genotype import PRIMITIVES, Genotype
from pyaccel_nas.econas.network import NetworkConfig
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.result import best_network, retrained_network, search_result, write_result
from pyaccel_nas.training import TrainRecipe

CHECKPOINT_NAME = "darts_checkpoint.pt"


def run_darts(config: DartsConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Runs (or resumes) a DARTS search, retrains the derived genotype at ``final_proxy``, writes
    ``out/result.json``, ``out/alphas.png``, ``out/best_genotype.json`` and ``out/best_genotype.png``, and
    returns the result."""
    out = Path(out)
    checkpoint = out / CHECKPOINT_NAME
    data = DataSpec(config.dataset, config.data_root, config.val_fraction, config.seed)
    proxy = Proxy.parse(config.proxy)
    dataset = proxied_dataset(data, proxy)
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"nothing to resume: {checkpoint} does not exist")
        search = DartsSearch.load(checkpoint, config, dataset)
    else:
        if checkpoint.exists():
            raise FileExistsError(f"{checkpoint} exists: resume that search with --resume, or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        search = DartsSearch(config, dataset)
    steps = search.steps_per_epoch()
    stopped_by = "epochs"
    with tqdm(total=proxy.epochs * steps, initial=search.epochs_done * steps, desc="darts search", unit="step",
              disable=not progress) as bar:
        while search.epochs_done < proxy.epochs:
            spent = search.history[-1]["cost_macs"] if search.history else 0
            if config.budget is not None and spent + search.epoch_cost() > config.budget:
                stopped_by = "budget"
                break
            entry = search.search_epoch(progress=bar.update)
            search.save(checkpoint)
            bar.set_postfix(epoch=entry["epoch"], val=f"{entry['val_accuracy']:.4f}",
                            skips=entry["skip_connections"], cost=f"{entry['cost_macs']:.3g}", refresh=False)
    genotype = search.model.genotype(config.max_skips)
    last = search.history[-1] if search.history else None
    final = {"proxy": str(Proxy.parse(config.final_proxy)), "networks": []}
    if config.final_top and last is not None:
        final["networks"].append(_retrain(config, data, genotype, last["val_accuracy"], out))
    result = search_result(
        config, strategy="darts", stopped_by=stopped_by,
        # the supernet's accuracy on the held-out validation split after the last epoch
        best=None if last is None else {**best_network(0, genotype, last["val_accuracy"]),
                                        "val_accuracy_of": "supernet"},
        trained_networks=1,
        cost={"epochs": search.epochs_done, "macs": last["cost_macs"] if last else 0,
              "supernet_macs_per_image": search.macs_per_image},
        history=search.history,
        failed=[],  # the search trains in this process: a failure ends it rather than skipping a network
        skip_connections={"normal": skip_count(genotype.normal), "reduce": skip_count(genotype.reduce)},
        primitives=list(PRIMITIVES),
        alphas=search.alphas,
        threads=torch.get_num_threads(),  # the supernet trained with these (results depend on the count)
        final=final,
    )
    write_result(out, result, None if last is None else genotype)
    from pyaccel_nas.econas.plots import draw_genotype, plot_alphas

    plot_alphas(result, out / "alphas.png")
    if last is not None:
        draw_genotype(genotype, out / "best_genotype.png")
    return result


def _retrain(config: DartsConfig, data: DataSpec, genotype: Genotype, search_val_accuracy: float, out: Path) -> dict:
    """The derived genotype trained from scratch at ``final_proxy`` in the evaluation network; val and test."""
    final_proxy = Proxy.parse(config.final_proxy)
    task = EvaluationTask(
        network_id=0, genotype=genotype, proxy=final_proxy, data=data,
        base_config=NetworkConfig(channels=config.final_channels, layers=config.final_layers),
        recipe=TrainRecipe(batch_size=config.batch_size, learning_rate=config.learning_rate),
        target_epochs=final_proxy.epochs, schedule_epochs=final_proxy.epochs, seed=config.seed,
        run_dir=str(Path(out).resolve()), report_test=True,
    )
    return retrained_network(0, genotype, search_val_accuracy, run_evaluation(task))
