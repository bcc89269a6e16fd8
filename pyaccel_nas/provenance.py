"""Where a result came from: the machine (CPU, cores, threads, GPU), the library versions and the commit.

Every committed result (benchmarks, benchmark tables, pruning reports) names these, so a number can be
compared only with numbers from the same kind of machine and code.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

import pyaccel_nas

REPO = Path(pyaccel_nas.__file__).resolve().parent.parent  # the checkout, when run from one


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(cores: int, device: str = "cpu") -> dict:
    gpu = {}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_sms": props.multi_processor_count,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return {
        **gpu,
        "cpu": cpu_model(),
        "cores": cores,
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyaccel_nas": pyaccel_nas.__version__,
    }


def source_state() -> dict:
    """The commit measured, and whether the sources differ from it (None outside a git checkout)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "modified": git("status", "--porcelain", "--", "csrc", "pyaccel_nas").splitlines(),
    }
