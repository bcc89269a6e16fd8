"""Loads the compiled op library (``pyaccel_nas._C``) and records which kernels it registered.

Importing ``_C`` runs its static ``TORCH_LIBRARY`` registrations, after which the ops live under
``torch.ops.pyaccel_nas``. If the library is missing or fails to load, the package still imports and every op
runs its pure-PyTorch reference; ``pyaccel_nas.info()`` says why.
"""

from __future__ import annotations

import torch

OPS = ("sep_conv2d", "channel_gate", "multires_sum")
DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}

try:
    from pyaccel_nas import _C

    LIBRARY_PATH: str | None = _C.__file__
    LOAD_ERROR: str | None = None
except ImportError as exc:  # not built, or built against another torch
    LIBRARY_PATH = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"

LOADED = LOAD_ERROR is None


def _registered(op: str, dispatch_key: str) -> bool:
    # Forward and backward must both have a kernel: autograd calls the backward op.
    return all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"pyaccel_nas::{name}", dispatch_key)
        for name in (op, f"{op}_backward")
    )


# Computed once: a plain dict lookup is what torch.compile can trace without a graph break.
KERNELS: dict[str, dict[str, bool]] = {
    op: {device: LOADED and _registered(op, key) for device, key in DEVICE_KEYS.items()} for op in OPS
}


# The dtypes the compiled kernels of each device compute in (csrc/common/tensor_checks.h); others run the
# reference. The CUDA kernels accumulate float16 and bfloat16 in float32.
KERNEL_DTYPES: dict[str, tuple[torch.dtype, ...]] = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}


def has_kernel(op: str, device_type: str, dtype: torch.dtype | None = None) -> bool:
    """Whether ``op`` has compiled forward and backward kernels for ``device_type`` ("cpu", "cuda", ...) and,
    if given, for ``dtype``."""
    if not KERNELS[op].get(device_type, False):
        return False
    return dtype is None or dtype in KERNEL_DTYPES.get(device_type, ())


def fallback_reason(op: str, device_type: str, dtype: torch.dtype | None = None) -> str | None:
    """Why ``op`` runs its reference implementation on ``device_type`` (and ``dtype``), or None if it runs a
    compiled kernel."""
    if has_kernel(op, device_type, dtype):
        return None
    if KERNELS[op].get(device_type, False):
        supported = ", ".join(str(d).removeprefix("torch.") for d in KERNEL_DTYPES.get(device_type, ()))
        return f"the {device_type} kernel computes in {supported}, not {str(dtype).removeprefix('torch.')}"
    if not LOADED:
        return f"the compiled library failed to load: {LOAD_ERROR}; reinstall with `pip install --no-build-isolation .`"
    if device_type == "cuda":
        return "this build has no CUDA kernels: it was built without CUDA; rebuild on a CUDA machine or with FORCE_CUDA=1"
    return f"no compiled kernel for device type '{device_type}'"

