"""EcoNAS: evolutionary architecture search on reliable proxies (Zhou et al., CVPR 2020).

- :mod:`~pyaccel_nas.econas.genotype`: the search space (NASNet/DARTS cells) as immutable genotypes;
- :mod:`~pyaccel_nas.econas.network`: the network a genotype describes, built on :mod:`pyaccel_nas.nn`;
- :mod:`~pyaccel_nas.econas.proxy`: reduced settings in the paper's ``c{x}r{y}s{z}e{n}`` notation;
- :mod:`~pyaccel_nas.econas.search` and :mod:`~pyaccel_nas.econas.result`: the evolutionary search and the
  result every search strategy writes (DARTS' too: :mod:`pyaccel_nas.darts` searches the same space under a
  proxy, differentiably).
"""

from pyaccel_nas.econas.genotype import PRIMITIVES, Genotype, GenotypeError
from pyaccel_nas.econas.network import Network, NetworkConfig
from pyaccel_nas.econas.proxy import Proxy

__all__ = ["PRIMITIVES", "Genotype", "GenotypeError", "Network", "NetworkConfig", "Proxy"]
