"""The CMake build (libpyaccel_nas.so against libtorch) loads with torch.ops.load_library and computes what
the pip build computes. It runs in a subprocess: one process can hold only one library that defines the
pyaccel_nas namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyaccel_nas  # noqa: F401  (loads the pip build's kernels)

ROOT = Path(__file__).resolve().parents[1]

# Runs every forward and backward op of the loaded library on seeded inputs and saves the results.
# Only torch and the library are imported: this is how a non-pip user reaches the ops.
RUN_OPS = """
import sys, torch
if sys.argv[1] != "pip":
    torch.ops.load_library(sys.argv[1])
else:
    import pyaccel_nas
ops = torch.ops.pyaccel_nas
g = torch.Generator().manual_seed(0)
r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
x, dw, pw, b = r(3, 5, 9, 8), r(5, 1, 3, 3), r(4, 5, 1, 1), r(4)
conv = ([2, 1], [2, 2], [2, 1], True)
y = ops.sep_conv2d(x, dw, pw, b, *conv)
results = {"sep_conv2d": y, "sep_conv2d_backward": ops.sep_conv2d_backward(r(*y.shape), x, dw, pw, *conv)}
gate = r(5)
results["channel_gate"] = ops.channel_gate(x, gate, 0.3)
results["channel_gate_backward"] = ops.channel_gate_backward(r(*x.shape), x, gate, 0.3)
branches, weights = [r(2, 3, 8, 8), r(2, 3, 4, 2)], r(2)
results["multires_sum"] = ops.multires_sum(branches, weights, None, "bilinear")
results["multires_sum_backward"] = ops.multires_sum_backward(r(2, 3, 8, 8), branches, weights, "bilinear")
torch.save(results, sys.argv[2])
"""


@pytest.fixture(scope="module")
def cmake_library(tmp_path_factory) -> Path:
    if shutil.which("cmake") is None:
        pytest.fail("cmake is not installed; .ci/run installs it")
    build = tmp_path_factory.mktemp("cmake-build")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(build), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", *generator],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["cmake", "--build", str(build), "--parallel", str(os.cpu_count() or 1)], check=True, capture_output=True
    )
    return build / "libpyaccel_nas.so"


def run_ops(library: str, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", RUN_OPS, library, str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_cmake_library_matches_pip_build(cmake_library, tmp_path):
    assert cmake_library.exists()
    from_cmake = run_ops(str(cmake_library), tmp_path / "cmake.pt")
    from_pip = run_ops("pip", tmp_path / "pip.pt")
    assert from_cmake.keys() == from_pip.keys() == {
        "sep_conv2d", "sep_conv2d_backward", "channel_gate", "channel_gate_backward", "multires_sum", "multires_sum_backward"
    }
    torch.testing.assert_close(from_cmake, from_pip, rtol=1e-12, atol=1e-12)
