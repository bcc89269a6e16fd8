"""Modules built on the fused ops; each can run the pure-PyTorch reference instead (``fused=False``).

    from pyaccel_nas import nn as pnn
    block = pnn.SepConv2d(16, 32, 3, padding=1)            # ReLU -> depthwise 3x3 -> pointwise, one op
    model = pnn.fuse_modules(model)                        # rewrite plain ReLU/depthwise/1x1 runs in place
    pnn.set_fused(model, False)                            # the same network on reference ops
"""

from pyaccel_nas.nn.batch_norm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from pyaccel_nas.nn.counting import count_macs, count_parameters
from pyaccel_nas.nn.darts import DilConv, SepConv
from pyaccel_nas.nn.fuse import FusedPointwise, FusedSepConv2d, find_fusable, fuse_modules
from pyaccel_nas.nn.fusable import FusableModule, set_fused
from pyaccel_nas.nn.gate import ChannelGate
from pyaccel_nas.nn.multires import MultiResSum
from pyaccel_nas.nn.pool import AvgPool2d, MaxPool2d
from pyaccel_nas.nn.sep_conv import SepConv2d

__all__ = [
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "ChannelGate",
    "DilConv",
    "FusableModule",
    "FusedPointwise",
    "FusedSepConv2d",
    "MaxPool2d",
    "MultiResSum",
    "SepConv",
    "SepConv2d",
    "count_macs",
    "count_parameters",
    "find_fusable",
    "fuse_modules",
    "set_fused",
]
