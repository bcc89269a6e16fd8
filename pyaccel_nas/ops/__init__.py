"""The fused ops as Python functions: validated, differentiable, torch.compile-able.

Each function calls ``torch.ops.pyaccel_nas.<op>`` when the compiled library has a kernel for the input's
device and dtype and autocast is off, and the pure-PyTorch reference in :mod:`pyaccel_nas.ops.reference`
otherwise; one rule for all ops (:mod:`pyaccel_nas.ops._routing`; :func:`pyaccel_nas.info` says which
devices have kernels and why others fall back).
"""

from pyaccel_nas.ops import reference
from pyaccel_nas.ops.batch_norm import batch_norm
from pyaccel_nas.ops.channel_gate import channel_gate
from pyaccel_nas.ops.multires_sum import multires_sum
from pyaccel_nas.ops.pool2d import pool2d
from pyaccel_nas.ops.sep_conv2d import sep_conv2d

__all__ = ["batch_norm", "channel_gate", "multires_sum", "pool2d", "reference", "sep_conv2d"]
