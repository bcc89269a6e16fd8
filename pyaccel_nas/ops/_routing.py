"""Which implementation a call of an op runs: its compiled kernel or its pure-PyTorch reference.

One rule for every op, decided from one tensor argument of the call (the op says which):

- ``KERNEL`` when the compiled library registered the op's forward and backward kernels for the tensor's
  device and those kernels compute in its dtype (:func:`pyaccel_nas._extension.has_kernel`), and autocast
  is off for that device. The kernel's C++ wrapper checks the arguments (ValueError, as the Python checks).
- ``AUTOCAST`` when autocast is on for the tensor's device: the reference runs, unchecked, and autocast casts
  its PyTorch ops as it casts any model's (mixed dtypes included, which the argument checks would refuse).
- ``REFERENCE`` otherwise (a device or dtype without a kernel, meta tensors, a library that failed to load,
  an argument that is not a tensor): the reference runs after the op's Python argument checks, so bad
  input fails as on the kernel path. On a CPU or CUDA tensor the first such call per op, device and dtype
  warns why (:class:`~pyaccel_nas._extension.KernelFallbackWarning`); :func:`pyaccel_nas.info` says it too.

Under torch.compile the fake tensors carry the real device and dtype, so a compiled graph calls the kernel
wherever eager calls would.
"""

from __future__ import annotations

import torch

from pyaccel_nas import _extension

# The routes; plain strings, as cheap to compare as anything (channel_gate's whole call is a few microseconds).
KERNEL = "kernel"
REFERENCE = "reference"
AUTOCAST = "autocast"


def _device_type(t: torch.Tensor) -> str:
    # is_cpu / is_cuda first: no device object per call (0.5 instead of 1.3 us for the whole decision; the
    # fwd+bwd of channel_gate at NAS sizes is 50-100 us)
    if t.is_cpu:
        return "cpu"
    if t.is_cuda:
        return "cuda"
    return t.device.type


def route(op: str, t) -> str:
    """KERNEL, AUTOCAST or REFERENCE: which implementation ``op`` runs for a call whose routing tensor is ``t``
    (the module docstring says when each)."""
    if not isinstance(t, torch.Tensor):
        return REFERENCE
    device_type = _device_type(t)
    if _extension.has_kernel(op, device_type, t.dtype):  # cpu or cuda: autocast knows both
        return AUTOCAST if torch.is_autocast_enabled(device_type) else KERNEL
    # torch.is_autocast_enabled raises for device types autocast does not know (meta tensors, for one)
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return AUTOCAST
    _extension.warn_fallback(op, device_type, t.dtype)
    return REFERENCE
