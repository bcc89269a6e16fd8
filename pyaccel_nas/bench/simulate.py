"""Benchmark mode: searches whose "training" is a look-up in a benchmark table (``search --benchmark TABLE``).

The strategies run unchanged; :class:`TableEvaluator` stands in for training. A network trained to epoch k
of a setting gets the validation accuracy the table recorded for its architecture at epoch k of that
setting (the staged schedule: E, 2E, 3E) and is charged the table's cost (its MACs per image x the
setting's images x epochs x 3); the final retraining gets the reference setting's validation and test
accuracy. The search's proxy must be one of the table's settings.

Architectures are the table's: a random architecture is one of them, drawn uniformly; a mutation mutates
the parent as the real search does, then moves to the table architecture nearest the mutated one (fewest
differing edges; ties drawn at random; never the parent itself), so children stay near their parents as
far as the table's sample of the space allows.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from pyaccel_nas.bench.table import Architecture, BenchTable, Measurement
from pyaccel_nas.econas.evaluation import EvaluationResult, EvaluationTask
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.econas.network import NetworkConfig
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.econas.search import SearchConfig


class TableEvaluator:
    """Scores a search's networks from ``table`` (the search's evaluator in benchmark mode)."""

    def __init__(self, table: BenchTable) -> None:
        self.table = table
        self.train_images = table.train_images
        # only architectures measured under every setting and the reference take part: a search must not
        # find a hole where the real search would have had a number
        self.architectures = [a for a in table.architectures
                              if a.reference is not None and all(m is not None for m in a.settings.values())]
        if not self.architectures:
            raise ValueError("the table has no architecture measured under every setting and the reference")
        self._by_genotype: dict[Genotype, Architecture] = {a.genotype: a for a in self.architectures}
        # every architecture's edges as integer codes, one row each: a mutation's nearest architectures are
        # then one vectorised comparison (a search mutates thousands of times)
        self._edge_codes: dict[tuple, int] = {}
        self._codes = np.array([self._encode(a.genotype) for a in self.architectures])
        self._index = {a.genotype: i for i, a in enumerate(self.architectures)}

    def search_config(self, config: SearchConfig) -> SearchConfig:
        """``config`` for a search of this table: its proxy must be one of the table's settings; the data,
        the network size and the final setting (the reference) are the table's."""
        if config.proxy not in self.table.settings:
            raise ValueError(f"proxy {config.proxy} is not in the table; its settings are "
                             f"{', '.join(self.table.settings)}")
        built = self.table.header["config"]
        return dataclasses.replace(config, dataset=built["dataset"], channels=built["channels"],
                                   layers=built["layers"], final_proxy=self.table.reference)

    def measurement(self, genotype: Genotype, proxy: Proxy) -> Measurement:
        architecture = self._by_genotype[genotype]
        return architecture.reference if str(proxy) == self.table.reference else architecture.settings[str(proxy)]

    # --- the Evaluator protocol of pyaccel_nas.econas.search --------------------------------------------

    def macs_per_image(self, genotype: Genotype, base: NetworkConfig, proxy: Proxy) -> int:
        return self.measurement(genotype, proxy).macs_per_image

    def evaluate(self, tasks: list[EvaluationTask]) -> list[EvaluationResult]:
        return [self._result(task) for task in tasks]

    def random_genotype(self, rng: random.Random) -> Genotype:
        return rng.choice(self.architectures).genotype

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        mutated = genotype.mutate(rng)
        if len(self.architectures) < 2:
            return genotype
        # edges apart from the mutated genotype; never the parent itself
        distances = (self._codes != np.array(self._encode(mutated, grow=False))).sum(axis=1)
        if genotype in self._index:
            distances[self._index[genotype]] = np.iinfo(distances.dtype).max
        nearest = [self.architectures[i].genotype for i in np.flatnonzero(distances == distances.min())]
        return rng.choice(nearest)

    def _encode(self, genotype: Genotype, grow: bool = True) -> list[int]:
        """The genotype's edges (normal, then reduce cell) as codes; an edge no table architecture has is -1."""
        edges = [tuple(edge) for edge in genotype.normal + genotype.reduce]
        if grow:
            for edge in edges:
                self._edge_codes.setdefault(edge, len(self._edge_codes))
        return [self._edge_codes.get(edge, -1) for edge in edges]

    def _result(self, task: EvaluationTask) -> EvaluationResult:
        if task.report_test:  # the final retraining: the table's reference
            measured = self._by_genotype[task.genotype].reference
            epochs = max(measured.val)
            val, test = measured.val[epochs], measured.test
        else:
            measured = self.measurement(task.genotype, task.proxy)
            if task.target_epochs not in measured.val:
                raise ValueError(f"the table has no accuracy after {task.target_epochs} epochs of {task.proxy} "
                                 f"(it has {sorted(measured.val)})")
            epochs, val, test = task.target_epochs, measured.val[task.target_epochs], None
        return EvaluationResult(task.key, task.network_id, task.genotype.to_dict(), val, test, epochs, None, 0.0)
