"""Loads the compiled op library (``pyaccel_nas._C``) and records which kernels it registered.

Importing ``_C`` runs its static ``TORCH_LIBRARY`` registrations, after which the ops live under
``torch.ops.pyaccel_nas``. If the library is missing or fails to load, the package still imports and every op
runs its pure-PyTorch reference; ``pyaccel_nas.info()`` says why, and the first call that falls back on a
CPU or CUDA tensor warns (:class:`KernelFallbackWarning`, once per op, device and dtype), so that a run is
never slow without a word.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

OPS = ("sep_conv2d", "channel_gate", "multires_sum", "batch_norm", "pool2d")
DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def _shadowed_install(package_dir: Path) -> Path | None:
    """Another copy of the package on ``sys.path`` that has the compiled library, if any: the installed one
    that a source tree without it hides (Python puts the current directory first on ``sys.path``)."""
    for entry in sys.path:
        candidate = Path(entry or ".").resolve() / "pyaccel_nas"
        if candidate != package_dir and any(candidate.glob("_C.*")):
            return candidate
    return None


def _load_error(exc: ImportError) -> str:
    error = f"{type(exc).__name__}: {exc}"
    package_dir = Path(__file__).resolve().parent
    installed = None if any(package_dir.glob("_C.*")) else _shadowed_install(package_dir)
    if installed is None:
        return error
    return (f"{error}. pyaccel_nas was imported from {package_dir}, a source tree without the compiled library, "
            f"which hides the installed copy in {installed} (Python puts the current directory first on "
            f"sys.path): run from another directory, or build the source tree in place with "
            f"`pip install --no-build-isolation -e .`")


try:
    from pyaccel_nas import _C

    LIBRARY_PATH: str | None = _C.__file__
    LOAD_ERROR: str | None = None
except ImportError as exc:  # not built, built against another torch, or a source tree hiding the install
    LIBRARY_PATH = None
    LOAD_ERROR = _load_error(exc)

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


class KernelFallbackWarning(UserWarning):
    """An op runs its pure-PyTorch reference (slower) on a CPU or CUDA tensor; the message says why and the
    fix. Warned once per op, device type and dtype; filter it with ``warnings.filterwarnings``."""


_WARNED: set[tuple[str, str, torch.dtype]] = set()


def warn_fallback(op: str, device_type: str, dtype: torch.dtype) -> None:
    """Warns, the first time for this op, device type and dtype, that ``op`` runs its reference on a device
    a proper build has kernels for. Not while torch.compile traces: the eager call warns, and a warning
    inside the traced function would break the graph."""
    key = (op, device_type, dtype)
    # not for a dtype the ops refuse anyway (integers): the argument checks' error says what is wrong
    if (key in _WARNED or device_type not in DEVICE_KEYS or not dtype.is_floating_point
            or torch.compiler.is_compiling()):
        return
    _WARNED.add(key)
    warnings.warn(f"pyaccel_nas.ops.{op} runs its pure-PyTorch reference (slower) on {device_type} "
                  f"{str(dtype).removeprefix('torch.')} tensors: {fallback_reason(op, device_type, dtype)}; "
                  f"`pyaccel-nas info` lists what the build has", KernelFallbackWarning, stacklevel=4)
