"""DARTS (Liu et al., ICLR 2019) as a search strategy under EcoNAS proxies, on the fused ops.

- :mod:`~pyaccel_nas.darts.supernet`: the supernet over the EcoNAS search space and the genotype its
  architecture parameters describe;
- :mod:`~pyaccel_nas.darts.search`: the search's settings (:class:`DartsConfig`, its presets) and the
  supernet training, alternating weight and alpha steps on the shared training engine;
- :mod:`~pyaccel_nas.darts.run`: the run (``pyaccel-nas search --strategy darts``): checkpoints and
  resume, the retraining of the derived genotype, and the outputs, ``result.json`` in the schema of every
  search strategy.
"""

from pyaccel_nas.darts.run import run_darts
from pyaccel_nas.darts.search import DartsConfig, DartsSearch

__all__ = ["DartsConfig", "DartsSearch", "run_darts"]
