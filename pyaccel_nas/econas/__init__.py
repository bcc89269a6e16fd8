"""EcoNAS: evolutionary architecture search on reliable proxies (Zhou et al., CVPR 2020).

- :mod:`~pyaccel_nas.econas.genotype`: the search space (NASNet/DARTS cells) as immutable genotypes;
- :mod:`~pyaccel_nas.econas.network`: the network a genotype describes, built on :mod:`pyaccel_nas.nn`;
- :mod:`~pyaccel_nas.econas.proxy`: reduced settings in the paper's ``c{x}r{y}s{z}e{n}`` notation;
- :mod:`~pyaccel_nas.econas.supernet` and :mod:`~pyaccel_nas.econas.darts`: DARTS' supernet over the same
  space and the differentiable search under a proxy.
"""

from pyaccel_nas.econas.genotype import PRIMITIVES, Genotype, GenotypeError
from pyaccel_nas.econas.network import Network, NetworkConfig
from pyaccel_nas.econas.proxy import Proxy

__all__ = ["PRIMITIVES", "Genotype", "GenotypeError", "Network", "NetworkConfig", "Proxy"]
