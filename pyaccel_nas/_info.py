"""What this installation can do: versions, compiled kernels per op and device, and fallbacks."""

from __future__ import annotations

import torch

from pyaccel_nas import _extension


def info() -> dict:
    """Versions, the compiled library, and for each op which devices have kernels and why others fall back.

    ``ops[name]["kernels"]`` maps "cpu"/"cuda" to whether a compiled kernel runs there;
    ``ops[name]["fallback"]`` gives, for each device without one, why the reference implementation runs.
    """
    from pyaccel_nas import __version__

    return {
        "pyaccel_nas": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "library": {"loaded": _extension.LOADED, "path": _extension.LIBRARY_PATH, "error": _extension.LOAD_ERROR},
        "ops": {
            op: {
                "kernels": dict(_extension.KERNELS[op]),
                "fallback": {
                    device: _extension.fallback_reason(op, device)
                    for device in _extension.DEVICE_KEYS
                    if not _extension.has_kernel(op, device)
                },
            }
            for op in _extension.OPS
        },
    }
