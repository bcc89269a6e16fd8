"""The result of a search, whatever its strategy (evolutionary or DARTS): ``OUT/result.json`` with the keys
every strategy writes, in one order, and the strategy's own keys; and ``OUT/best_genotype.json``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pyaccel_nas.econas.evaluation import EvaluationResult
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.exec.files import write_json_atomically


def search_result(config, *, strategy: str, stopped_by: str, best: dict | None, trained_networks: int, cost: dict,
                  history: list[dict], failed: list[dict], final: dict, **details) -> dict:
    """The result of the search ``config`` (a dataclass with ``proxy``, ``dataset`` and ``seed``) describes.

    ``best``: :func:`best_network` or None; ``cost``: at least ``epochs`` and ``macs`` of training;
    ``failed``: the evaluations that failed every retry; ``final``: the retraining at the final proxy
    (``proxy``, and ``networks``, each a :func:`retrained_network`); ``details``: the strategy's own keys.
    """
    return {
        "strategy": strategy,
        "proxy": config.proxy,
        "dataset": config.dataset,
        "seed": config.seed,
        "stopped_by": stopped_by,
        "best": best,
        "trained_networks": trained_networks,
        "cost": cost,
        "history": history,
        "failed": failed,
        **details,
        "final": final,
        "settings": dataclasses.asdict(config),
    }


def best_network(network_id: int, genotype: Genotype, val_accuracy: float) -> dict:
    """The entry of the network a search ranks first (by validation accuracy under its proxy)."""
    return {"network_id": network_id, "genotype": genotype.to_dict(), "val_accuracy": val_accuracy}


def retrained_network(network_id: int, genotype: Genotype, search_val_accuracy: float,
                      result: EvaluationResult) -> dict:
    """The entry of a network retrained at the final proxy: its accuracies there, or the error it failed with."""
    return {"network_id": network_id, "genotype": genotype.to_dict(), "search_val_accuracy": search_val_accuracy,
            "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy, "error": result.error}


def write_result(out: Path, result: dict, best: Genotype | None) -> None:
    """Writes ``out/result.json`` and, if the search found a best network, its genotype to
    ``out/best_genotype.json`` (what ``pyaccel-nas train --genotype`` takes)."""
    write_json_atomically(out / "result.json", result)
    if best is not None:
        best.save(out / "best_genotype.json")
