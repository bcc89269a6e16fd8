"""Shared test helpers: devices, memory layouts, tolerances, hypothesis settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=int(os.environ.get("PYACCEL_NAS_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,  # first calls of an op (and compiles) are slow; time is not what these tests measure
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    print_blob=True,
)
settings.load_profile("default")

# Every op test runs on each device; without a GPU the CUDA runs are skipped, saying why (the GPU command,
# benchmarks/gpu_check.sh, runs them). Hypothesis tests take DEVICES through parametrize (a fixture would
# be reset between examples).
requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (run on a GPU machine: bash benchmarks/gpu_check.sh)"
)
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
LAYOUTS = ["contiguous", "channels_last", "strided"]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def dispatch_key(device: str) -> str:
    return {"cpu": "CPU", "cuda": "CUDA"}[device]


def in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in the given memory layout (a leaf tensor keeping ``t.requires_grad``)."""
    if layout == "contiguous":
        out = t.contiguous()
    elif layout == "channels_last":
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim(), torch.contiguous_format)
        out = t.contiguous(memory_format=fmt)
    elif layout == "strided":
        # a non-contiguous view: every other element of a buffer twice as wide
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t.detach()
        out = wide[..., ::2]
    else:
        raise ValueError(layout)
    return out.detach().requires_grad_(t.requires_grad)


def check_reads_a_sliced_gradient_in_place(fn, reference, tensors: list[torch.Tensor]) -> None:
    """``fn(*tensors)``'s backward, given its gradient as a channel slice of a concatenation's (images lying
    further apart than one image, as a ``torch.cat``'s backward hands them on): copies nothing (no contiguous,
    clone or copy_ during the backward) and gives ``reference``'s gradients."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    expected_leaves = [t.detach().clone().requires_grad_() for t in tensors]
    y = fn(*leaves)
    channels = y.shape[1]
    wide = torch.randn(y.shape[0], 3 * channels, *y.shape[2:], dtype=y.dtype, device=y.device)
    grad = wide[:, channels : 2 * channels]
    assert not grad.is_contiguous()
    with torch.profiler.profile() as prof:
        grads = torch.autograd.grad(y, leaves, grad)
    assert not {e.key for e in prof.key_averages()} & {"aten::contiguous", "aten::clone", "aten::copy_"}
    expected = torch.autograd.grad(reference(*expected_leaves), expected_leaves, grad)
    for actual, wanted in zip(grads, expected):
        torch.testing.assert_close(actual, wanted)


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """float64 must agree to rounding; lower precision is judged against a float64 reference."""
    if actual.dtype == torch.float64:
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)
    else:
        torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=1e-4, atol=1e-4)


def check_against_reference(fused, reference, tensors: list[torch.Tensor]) -> torch.Tensor:
    """``fused(*tensors)`` and its gradients w.r.t. every tensor equal ``reference`` computed in float64.

    The tensors are used as given (their memory layout included); the reference gets float64 copies.
    Returns the fused output.
    """
    leaves = [t.detach().requires_grad_() for t in tensors]
    wide = [t.detach().double().requires_grad_() for t in tensors]
    y = fused(*leaves)
    y_ref = reference(*wide)
    assert y.shape == y_ref.shape and y.dtype == tensors[0].dtype
    assert_close_to_reference(y, y_ref)
    if y.numel() > 0:
        grad_out = torch.randn_like(y_ref)
        actual = torch.autograd.grad(y, leaves, grad_out.to(y.dtype))
        expected = torch.autograd.grad(y_ref, wide, grad_out)
        for a, e in zip(actual, expected):
            assert a.shape == e.shape
            assert_close_to_reference(a, e)
    return y


def check_compiles_fullgraph(fn, tensors: list[torch.Tensor]) -> None:
    """``torch.compile(fn, fullgraph=True)`` (a graph break raises) gives eager's output and gradients."""
    leaves = [t.detach().requires_grad_() for t in tensors]
    compiled = torch.compile(fn, fullgraph=True)
    y = compiled(*leaves)
    y_eager = fn(*leaves)
    torch.testing.assert_close(y, y_eager)
    grad_out = torch.randn_like(y)
    actual = torch.autograd.grad(y, leaves, grad_out)
    expected = torch.autograd.grad(y_eager, leaves, grad_out)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


def run_with_baseline_isa(code: str) -> None:
    """Runs ``code`` (from the tests folder) in a fresh Python whose CPU kernels are the baseline x86-64
    builds (PYACCEL_NAS_CPU_BASELINE=1; the choice is made once per process), failing on any error."""
    env = dict(os.environ, PYACCEL_NAS_CPU_BASELINE="1")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=here, env=env, timeout=300)
