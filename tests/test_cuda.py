"""What only a GPU can show: the CUDA kernels agree with the CPU kernels, are as accurate in float16 and
bfloat16 as PyTorch itself, are deterministic, follow the current stream and device, and work inside CUDA
graphs and under torch.compile(mode="reduce-overhead").

The device-parametrised op tests (tests/test_<op>.py) also run every value, gradient, layout, gradcheck
and opcheck test on CUDA. Without a GPU all of these are skipped; tests/test_cuda_emulation.py runs the
kernels' code on the CPU instead.
"""

from __future__ import annotations

import pytest
import torch
from conftest import in_layout, requires_cuda

from pyaccel_nas import _extension
from pyaccel_nas.ops import batch_norm, channel_gate, multires_sum, pool2d, reference, sep_conv2d

pytestmark = requires_cuda

OPS = ("sep_conv2d", "channel_gate", "multires_sum", "batch_norm", "pool2d")


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# Each case: the op, its reference, and CPU float64 inputs (the tensors are arguments, the rest bound).
CASES = {
    "sep_conv2d_3x3": (
        lambda x, dw, pw, b: sep_conv2d(x, dw, pw, b, padding=1),
        lambda x, dw, pw, b: reference.sep_conv2d(x, dw, pw, b, padding=1),
        [_randn(8, 36, 16, 16, seed=1), _randn(36, 1, 3, 3, seed=2), _randn(48, 36, 1, 1, seed=3), _randn(48, seed=4)],
    ),
    "sep_conv2d_dil5x5_s2": (
        lambda x, dw, pw: sep_conv2d(x, dw, pw, stride=2, padding=4, dilation=2),
        lambda x, dw, pw: reference.sep_conv2d(x, dw, pw, stride=2, padding=4, dilation=2),
        [_randn(4, 20, 17, 17, seed=5), _randn(20, 1, 5, 5, seed=6), _randn(70, 20, 1, 1, seed=7)],
    ),
    "channel_gate": (
        lambda x, g: channel_gate(x, g, threshold=0.3),
        lambda x, g: reference.channel_gate(x, g, threshold=0.3),
        [_randn(16, 36, 16, 16, seed=8), _randn(36, seed=9)],
    ),
    # ATen's CUDA batch norm behind the op (csrc/batch_norm/batch_norm.cpp says why)
    "batch_norm": (
        lambda x, w, b: batch_norm(x, None, None, w, b),
        lambda x, w, b: reference.batch_norm(x, None, None, w, b),
        [_randn(16, 36, 8, 8, seed=17) * 2 + 1, _randn(36, seed=18), _randn(36, seed=19)],
    ),
    # ATen's CUDA pooling behind the op (csrc/pool2d/pool2d.cpp says why)
    "max_pool": (
        lambda x: pool2d(x, "max", 3, 2, 1),
        lambda x: reference.pool2d(x, "max", 3, 2, 1),
        [_randn(16, 36, 17, 16, seed=20)],
    ),
    "avg_pool": (
        lambda x: pool2d(x, "avg", 3, 1, 1, count_include_pad=False),
        lambda x: reference.pool2d(x, "avg", 3, 1, 1, count_include_pad=False),
        [_randn(16, 36, 17, 16, seed=21)],
    ),
    "multires_sum_bilinear": (
        lambda w, *b: multires_sum(list(b), w, mode="bilinear"),
        lambda w, *b: reference.multires_sum(list(b), w, mode="bilinear"),
        [_randn(3, seed=10), *(_randn(8, 16, s, s, seed=11 + i) for i, s in enumerate((32, 16, 8)))],
    ),
    "multires_sum_trilinear": (
        lambda w, *b: multires_sum(list(b), w, mode="trilinear"),
        lambda w, *b: reference.multires_sum(list(b), w, mode="trilinear"),
        [_randn(2, seed=14), _randn(4, 8, 8, 16, 16, seed=15), _randn(4, 8, 4, 8, 8, seed=16)],
    ),
}


def _value_and_grads(fn, tensors, grad_seed=99):
    leaves = [t.detach().requires_grad_() for t in tensors]
    y = fn(*leaves)
    grad_out = _randn(*y.shape, seed=grad_seed).to(y.device, y.dtype)
    return [y.detach(), *torch.autograd.grad(y, leaves, grad_out)]


def test_cuda_kernels_registered():
    """A GPU run must exercise the kernels, not the reference fallback."""
    for op in OPS:
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            assert _extension.has_kernel(op, "cuda", dtype), _extension.fallback_reason(op, "cuda", dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_cuda_parity(case, dtype):
    """Values and every gradient of the CUDA kernels match the CPU kernels."""
    fused, _, tensors = CASES[case]
    cpu = _value_and_grads(fused, [t.to(dtype) for t in tensors])
    gpu = _value_and_grads(fused, [t.to("cuda", dtype) for t in tensors])
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    for c, g in zip(cpu, gpu):
        torch.testing.assert_close(g.cpu(), c, rtol=tol, atol=tol)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_layouts_match_contiguous(case, layout):
    fused, _, tensors = CASES[case]
    tensors = [t.to("cuda", torch.float32) for t in tensors]
    expected = _value_and_grads(fused, tensors)
    actual = _value_and_grads(fused, [in_layout(t, layout) if t.dim() >= 4 else t for t in tensors])
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_half_precision_error_within_pytorchs_own(case, dtype):
    """Against a float64 reference, the kernels' float16/bfloat16 error is at most twice PyTorch's own
    error at that precision (its eager ops, cuDNN included), plus one rounding step at the largest
    magnitude (the flash-attention criterion), for the output and every gradient."""
    fused, ref, tensors = CASES[case]
    low = [t.to("cuda", dtype) for t in tensors]
    exact = _value_and_grads(ref, [t.to("cuda", torch.float64) for t in low])  # the same rounded inputs
    ours = _value_and_grads(fused, low)
    torchs = _value_and_grads(ref, low)
    for name, o, p, e in zip(["output"] + [f"grad {i}" for i in range(len(low))], ours, torchs, exact):
        our_err = (o.double() - e).abs().max().item()
        torch_err = (p.double() - e).abs().max().item()
        slack = torch.finfo(dtype).eps * e.abs().max().item()  # both round their result once to `dtype`
        assert our_err <= 2 * torch_err + slack, (name, our_err, torch_err)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_are_deterministic(case):
    """Weight, gate and branch-weight gradients are reduced without atomics: bitwise equal run to run."""
    fused, _, tensors = CASES[case]
    tensors = [t.to("cuda", torch.float32) for t in tensors]
    first, second = _value_and_grads(fused, tensors), _value_and_grads(fused, tensors)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", sorted(CASES))
def test_runs_on_the_current_stream(case):
    """Launched on a side stream, the kernels order after that stream's work (not the default stream's)."""
    fused, _, tensors = CASES[case]
    tensors = [t.to("cuda", torch.float32) for t in tensors]
    expected = _value_and_grads(fused, tensors)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # keeps the side stream busy: work on another stream would overtake
        inputs = [t * 1 for t in tensors]  # written on the side stream, after the sleep
        actual = _value_and_grads(fused, inputs)
    torch.cuda.current_stream().wait_stream(side)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("case", sorted(CASES))
def test_runs_on_the_tensors_device(case):
    """With cuda:0 current, tensors on cuda:1 are computed on cuda:1 (the device guard)."""
    fused, _, tensors = CASES[case]
    expected = _value_and_grads(fused, [t.to("cuda:0", torch.float32) for t in tensors])
    with torch.cuda.device(0):
        actual = _value_and_grads(fused, [t.to("cuda:1", torch.float32) for t in tensors])
    for a, e in zip(actual, expected):
        assert a.device == torch.device("cuda:1")
        torch.testing.assert_close(a.to("cuda:0"), e)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cuda_graph_capture_and_replay(case):
    """Forward and backward captured in a CUDA graph replay correctly on new inputs."""
    fused, _, tensors = CASES[case]
    static = [t.to("cuda", torch.float32).requires_grad_() for t in tensors]
    grad_out = None
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as torch.cuda.graphs requires
        for _ in range(2):
            y = fused(*static)
            grad_out = torch.randn_like(y)
            torch.autograd.grad(y, static, grad_out)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = fused(*static)
        grads = torch.autograd.grad(y, static, grad_out)
    fresh = [torch.randn_like(t) for t in static]
    with torch.no_grad():
        for s, f in zip(static, fresh):
            s.copy_(f)
    graph.replay()
    leaves = [f.detach().requires_grad_() for f in fresh]
    y_eager = fused(*leaves)
    torch.testing.assert_close(y, y_eager.detach())
    for g, e in zip(grads, torch.autograd.grad(y_eager, leaves, grad_out)):
        torch.testing.assert_close(g, e)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_compile_reduce_overhead(case):
    """torch.compile(mode="reduce-overhead") (CUDA graphs under inductor) gives eager's values and gradients."""
    fused, _, tensors = CASES[case]
    compiled = torch.compile(lambda *t: fused(*t).relu(), mode="reduce-overhead", fullgraph=True)
    for step in range(3):  # the first calls record, later ones replay the graph
        inputs = [(t + step).to("cuda", torch.float32) for t in tensors]
        actual = _value_and_grads(compiled, inputs)
        expected = _value_and_grads(lambda *t: fused(*t).relu(), inputs)
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
