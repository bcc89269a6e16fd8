"""pyaccel_nas: fused C++/CUDA ops for neural architecture search (EcoNAS) and multi-dimensional pruning (MDP).

    import pyaccel_nas
    y = pyaccel_nas.ops.sep_conv2d(x, dw_weight, pw_weight, padding=1)   # or torch.ops.pyaccel_nas.sep_conv2d
    pyaccel_nas.info()                                                    # which kernels this build has
"""

from pyaccel_nas import nn, ops
from pyaccel_nas._extension import KernelFallbackWarning
from pyaccel_nas._info import info

__version__ = "0.1.0"
__all__ = ["KernelFallbackWarning", "info", "nn", "ops", "__version__"]
