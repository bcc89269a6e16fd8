"""pyaccel_nas.info() tells the truth about the build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyaccel_nas
from pyaccel_nas import _extension
from pyaccel_nas.ops import _routing

ROOT = Path(__file__).resolve().parents[1]


def test_info_reports_versions_and_cpu_kernels():
    report = pyaccel_nas.info()
    assert report["torch"] == torch.__version__
    assert report["library"]["loaded"] and report["library"]["error"] is None
    for op in ("sep_conv2d", "channel_gate", "multires_sum"):
        entry = report["ops"][op]
        assert entry["kernels"]["cpu"] is True
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(f"pyaccel_nas::{op}", "CUDA")
        assert entry["kernels"]["cuda"] is has_cuda
        assert ("cuda" in entry["fallback"]) is (not has_cuda)
        assert "cpu" not in entry["fallback"]


def test_fallback_reason_names_the_cause():
    assert _extension.fallback_reason("sep_conv2d", "cpu") is None
    assert "no compiled kernel" in _extension.fallback_reason("sep_conv2d", "xpu")


def test_package_without_library_falls_back_to_reference():
    """With the compiled library unavailable, the package imports, says why, and still computes."""
    code = """
import sys
sys.modules["pyaccel_nas._C"] = None  # makes `from pyaccel_nas import _C` raise ImportError
import torch, pyaccel_nas
from pyaccel_nas.ops import sep_conv2d, reference
report = pyaccel_nas.info()
assert not report["library"]["loaded"], report
assert "failed to load" in report["ops"]["sep_conv2d"]["fallback"]["cpu"]
x, dw, pw = torch.randn(2, 3, 8, 8), torch.randn(3, 1, 3, 3), torch.randn(4, 3, 1, 1)
torch.testing.assert_close(sep_conv2d(x, dw, pw, padding=1), reference.sep_conv2d(x, dw, pw, padding=1))
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    # never silently slow: the first fallback says so, once
    assert result.stderr.count("KernelFallbackWarning") == 1, result.stderr
    assert "sep_conv2d runs its pure-PyTorch reference (slower) on cpu float32 tensors" in result.stderr


def test_a_source_tree_hiding_the_install_is_named_with_the_fix(tmp_path):
    """Run from a checkout whose package has no compiled library, while an installed copy has one: the
    fallback warning, info() and the benchmarks say what happened and what to do."""
    source = tmp_path / "checkout"
    shutil.copytree(ROOT / "pyaccel_nas", source / "pyaccel_nas", ignore=shutil.ignore_patterns("_C.*", "__pycache__"))
    shutil.copytree(ROOT / "benchmarks", source / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))
    installed = tmp_path / "site-packages" / "pyaccel_nas"
    installed.mkdir(parents=True)
    (installed / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")  # only its presence matters
    code = """
import sys, warnings
# as after a regular install: no editable-install finder that would map the package to the checkout's build
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
import torch, pyaccel_nas
from pyaccel_nas.ops import channel_gate
from benchmarks.cases import require_kernels
print("error:", pyaccel_nas.info()["library"]["error"])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    channel_gate(torch.randn(2, 3, 4, 4), torch.rand(3))
    channel_gate(torch.randn(2, 3, 4, 4), torch.rand(3))
print("warned:", len(caught), caught[0].category.__name__, caught[0].message)
try:
    require_kernels(["channel_gate"])
except RuntimeError as exc:
    print("refused:", exc)
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site-packages")}
    result = subprocess.run([sys.executable, "-c", code], cwd=source, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    hidden = f"imported from {source / 'pyaccel_nas'}, a source tree without the compiled library, which hides " \
             f"the installed copy in {installed}"
    assert hidden in result.stdout.splitlines()[0] and "run from another directory" in result.stdout
    assert "warned: 1 KernelFallbackWarning pyaccel_nas.ops.channel_gate runs its pure-PyTorch reference" in result.stdout
    assert "refused: refusing to time the fused ops" in result.stdout and hidden in result.stdout.splitlines()[-1]


def test_fallback_warns_once_per_op_device_and_dtype(monkeypatch, recwarn):
    from pyaccel_nas import ops

    monkeypatch.setattr(_extension, "_WARNED", set())
    x16, gate16 = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16), torch.rand(3, dtype=torch.bfloat16)
    for _ in range(3):
        ops.channel_gate(x16, gate16)
    ops.channel_gate(x16.half(), gate16.half())
    ops.channel_gate(torch.randn(2, 3, 4, 4), torch.rand(3))  # a kernel: no warning
    ops.channel_gate(x16.to("meta"), gate16.to("meta"))  # no device a build has kernels for: no warning
    with pytest.raises(ValueError):  # refused, not "run on the reference": no warning either
        ops.channel_gate(torch.ones(2, 3, 4, 4, dtype=torch.int64), torch.ones(3, dtype=torch.int64))
    messages = [str(w.message) for w in recwarn.list if w.category is _extension.KernelFallbackWarning]
    assert len(messages) == 2 and "bfloat16 tensors" in messages[0] and "float16 tensors" in messages[1]
    assert "computes in float32, float64, not bfloat16" in messages[0]


def test_cli_info_prints_kernels_and_json():
    out = subprocess.run([sys.executable, "-m", "pyaccel_nas.cli", "info"], capture_output=True, text=True, check=True)
    assert "sep_conv2d" in out.stdout and "kernels: cpu" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "pyaccel_nas.cli", "info", "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["ops"]["multires_sum"]["kernels"]["cpu"] is True


def test_dtypes_without_kernel_fall_back_to_reference():
    from pyaccel_nas.ops import reference, sep_conv2d

    x, dw, pw = (torch.randn(*s, dtype=torch.bfloat16) for s in [(2, 3, 6, 6), (3, 1, 3, 3), (4, 3, 1, 1)])
    assert not _extension.has_kernel("sep_conv2d", "cpu", torch.bfloat16)
    assert "computes in float32, float64, not bfloat16" in _extension.fallback_reason("sep_conv2d", "cpu", torch.bfloat16)
    torch.testing.assert_close(sep_conv2d(x, dw, pw, padding=1), reference.sep_conv2d(x, dw, pw, padding=1))


def test_autocast_runs_reference_semantics():
    """Under autocast the ops behave as their reference does: mixed dtypes are cast, not rejected."""
    from pyaccel_nas.ops import channel_gate, multires_sum, reference, sep_conv2d

    x, dw, pw = torch.randn(2, 3, 6, 6), torch.randn(3, 1, 3, 3), torch.randn(4, 3, 1, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sep_conv2d(x, dw, pw, padding=1)
        torch.testing.assert_close(y, reference.sep_conv2d(x, dw, pw, padding=1))
        gated = channel_gate(y, torch.rand(4))  # bf16 activations, float32 gate
        mixed = multires_sum([y, y[:, :, ::2, ::2]], torch.rand(2))
    assert y.dtype == torch.bfloat16 and gated.dtype == reference.channel_gate(y, torch.rand(4)).dtype
    assert mixed.shape == y.shape


def test_meta_tensors_infer_shapes_through_the_reference():
    """Devices without a kernel and unknown to autocast (meta) take the reference path instead of raising."""
    from pyaccel_nas import ops

    x = torch.randn(2, 3, 8, 8, device="meta")
    assert all(_routing.route(op, x) == _routing.REFERENCE for op in _extension.OPS)
    assert ops.channel_gate(x, torch.randn(3, device="meta")).shape == (2, 3, 8, 8)
    dw, pw = torch.randn(3, 1, 3, 3, device="meta"), torch.randn(5, 3, 1, 1, device="meta")
    assert ops.sep_conv2d(x, dw, pw, stride=2, padding=1).shape == (2, 5, 4, 4)
    small = torch.randn(2, 3, 4, 4, device="meta")
    assert ops.multires_sum([x, small], torch.randn(2, device="meta")).shape == (2, 3, 8, 8)


def test_one_routing_rule_for_every_op():
    """The kernel for a dtype its device's kernels compute in with autocast off; the reference, after the
    argument checks, for other dtypes, other devices and what is not a tensor; unchecked under autocast."""
    x = torch.randn(2, 3, 4, 4)
    for op in _extension.OPS:
        assert _routing.route(op, x) == _routing.route(op, x.double()) == _routing.KERNEL
        assert _routing.route(op, x.bfloat16()) == _routing.route(op, x.half()) == _routing.REFERENCE
        assert _routing.route(op, x.to("meta")) == _routing.route(op, [x]) == _routing.REFERENCE
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert _routing.route(op, x) == _routing.route(op, x.bfloat16()) == _routing.AUTOCAST
            assert _routing.route(op, x.to("meta")) == _routing.REFERENCE
