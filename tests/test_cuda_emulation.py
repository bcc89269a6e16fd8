"""The CUDA launchers and kernels, compiled for the CPU and run in an emulator, against the references.

Where no GPU is present (CI, most development machines) this is the only execution of the device code:
tests/cuda_emulation/ compiles csrc/*/*_cuda.cu as C++ with one std::thread per CUDA thread, barriers
for __syncthreads and the warp shuffles, grid-stride grids capped at 3 blocks and NaN-filled workspaces.
It checks indexing, bounds, tiling, vector paths, shared-memory reductions and the two-pass gradient sums
for every dtype the CUDA kernels take; it cannot see timing, memory-model or occupancy issues (the
GPU test suite and compute-sanitizer do: benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from pyaccel_nas.ops import reference

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent / "cuda_emulation"
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Index errors give O(1) errors; these bound rounding in the accumulation type and the final cast.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 6e-2}


@pytest.fixture(scope="module")
def emulated():
    from torch.utils import cpp_extension

    # built in torch's extension cache (~/.cache/torch_extensions), rebuilt when a source changes
    sources = [str(HERE / name) for name in ("harness.cpp", *(f"emulated_{op}.cpp" for op in
                                                               ("channel_gate", "multires_sum", "sep_conv2d")))]
    return cpp_extension.load(
        name="pyaccel_nas_cuda_emulation",
        sources=sources,
        extra_cflags=[
            "-O1",
            "-fno-strict-aliasing",  # the emulated 16-byte vector accesses alias the element arrays
            "-Wno-unknown-pragmas",  # #pragma unroll
            "-DPYACCEL_NAS_CUDA_EMULATION",
        ],
        extra_include_paths=[str(HERE)],
        verbose=bool(os.environ.get("PYACCEL_NAS_VERBOSE_BUILD")),
    )


def random(shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def misaligned(t: torch.Tensor) -> torch.Tensor:
    """The same values at an address one element past a 16-byte boundary (the kernels' scalar path)."""
    buffer = torch.empty(t.numel() + 1, dtype=t.dtype)
    out = buffer[1:].view(t.shape)
    out.copy_(t)
    return out


def preparer(layout: str, fmt: torch.memory_format | None):
    """How tensors are laid out for the kernels: channels-last (fmt), misaligned, or contiguous."""
    if fmt is not None:
        return lambda t: t.contiguous(memory_format=fmt)
    return misaligned if layout == "misaligned" else torch.Tensor.contiguous


def assert_close(actual, expected, dtype):
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol * max(1.0, expected.abs().max()))


def reference_grads(fn, tensors, grad_out_seed):
    """fn(*tensors) and its gradients, all in float64."""
    wide = [t.detach().double().requires_grad_() for t in tensors]
    y = fn(*wide)
    grad_out = random(y.shape, torch.float64, grad_out_seed)
    return y.detach(), grad_out, torch.autograd.grad(y, wide, grad_out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,layout",
    [
        ((3, 37), "contiguous"),  # rank 2: rows of C channels
        ((2, 6, 7), "contiguous"),  # S = 7: no whole vectors per row, the scalar path
        ((4, 3, 32, 32), "contiguous"),  # several parts per channel
        ((8, 8, 16, 16), "channels_last"),  # several parts of rows
        ((2, 12, 3, 3, 4), "channels_last"),
        ((2, 70, 2, 2), "channels_last"),  # more channel vectors than a warp's width
        ((2, 6, 5, 4), "misaligned"),
    ],
)
@pytest.mark.parametrize("threshold", [None, 0.5])
def test_channel_gate(emulated, shape, layout, threshold, dtype):
    x, gate = random(shape, dtype, 1), random(shape[1:2], dtype, 2)
    y_ref, grad_out, (gx_ref, gg_ref) = reference_grads(
        lambda x, g: reference.channel_gate(x, g, threshold=threshold), [x, gate], 3
    )
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim()) if layout == "channels_last" else None
    prepare = preparer(layout, fmt)
    x_k, grad_k = prepare(x), prepare(grad_out.to(dtype))
    y, grad_x, grad_gate = emulated.channel_gate(
        x_k, gate, grad_k, threshold, fmt is not None, prepare(torch.empty_like(x)), prepare(torch.empty_like(x))
    )
    assert_close(y, y_ref, dtype)
    assert_close(grad_x, gx_ref, dtype)
    assert_close(grad_gate, gg_ref, dtype)


LINEAR = {4: "bilinear", 5: "trilinear"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize(
    "n,c,out,sizes,layout",
    [
        (2, 3, (6, 8), [(6, 8), (3, 4), (2, 2), (1, 8)], "contiguous"),
        (2, 8, (6, 8), [(6, 8), (3, 4), (2, 1)], "channels_last"),
        (2, 4, (16, 16), [(16, 16), (8, 8)], "contiguous"),  # several blocks per branch
        (1, 3, (4, 6, 4), [(4, 6, 4), (2, 3, 2), (1, 2, 4)], "contiguous"),
        (2, 8, (2, 4, 4), [(2, 4, 4), (1, 2, 2)], "channels_last"),
        (1, 2, (4, 4), [(4, 4), (2, 2)] * 9, "contiguous"),  # 18 branches: two launches
        (2, 3, (6, 8), [(6, 8), (3, 4)], "misaligned"),
    ],
)
def test_multires_sum(emulated, n, c, out, sizes, layout, linear, dtype):
    branches = [random((n, c, *size), dtype, 10 + k) for k, size in enumerate(sizes)]
    weights = random((len(sizes),), dtype, 5)
    mode = LINEAR[len(out) + 2] if linear else "nearest"
    y_ref, grad_out, grads = reference_grads(
        lambda w, *b: reference.multires_sum(list(b), w, size=list(out), mode=mode), [weights, *branches], 6
    )
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}[len(out)] if layout == "channels_last" else None
    prepare = preparer(layout, fmt)
    kernel_branches = [prepare(b) for b in branches]
    y, grad_weights = emulated.multires_sum(
        kernel_branches,
        weights,
        prepare(torch.empty(n, c, *out, dtype=dtype)),
        prepare(grad_out.to(dtype)),
        grad_branches := [prepare(torch.empty_like(b)) for b in branches],
        linear,
    )
    assert_close(y, y_ref, dtype)
    assert_close(grad_weights, grads[0], dtype)
    for actual, expected in zip(grad_branches, grads[1:]):
        assert_close(actual, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "misaligned"])  # the vector and the scalar path
@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("zero_reader", [False, True])
def test_multires_sum_infinite_branch_element(emulated, zero_reader, linear, layout, dtype):
    """An inf read by a gradient 0 gives the weight gradient NaN (inf * 0) as in the reference, not +-inf;
    read by positive gradients only, +inf."""
    branches = [random((1, 2, 8, 8), dtype, 10), random((1, 2, 4, 4), dtype, 11)]
    branches[1][0, 1, 2, 2] = float("inf")  # not element 1, which the reference's bilinear also reads with weight 0
    weights = random((2,), dtype, 5)
    grad_out = random((1, 2, 8, 8), torch.float64, 6).abs() + 0.5
    grad_out[0, 1, 4, 4] = 0.0 if zero_reader else 1.0  # reads it
    wide = [t.double().requires_grad_() for t in (weights, *branches)]
    y_ref = reference.multires_sum(wide[1:], wide[0], mode="bilinear" if linear else "nearest")
    expected = torch.autograd.grad(y_ref, wide[0], grad_out)[0]
    prepare = preparer(layout, None)
    _, grad_weights = emulated.multires_sum(
        [prepare(b) for b in branches], weights, prepare(torch.empty(1, 2, 8, 8, dtype=dtype)),
        prepare(grad_out.to(dtype)), [prepare(torch.empty_like(b)) for b in branches], linear,
    )
    assert math.isnan(expected[1]) if zero_reader else expected[1] == float("inf")
    assert_close(grad_weights[:1], expected[:1], dtype)
    torch.testing.assert_close(grad_weights[1:].double(), expected[1:], equal_nan=True)


def strided(t: torch.Tensor) -> torch.Tensor:
    wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    wide[..., ::2] = t
    return wide[..., ::2]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n,c,c_out,h,w,k,conv,layout",
    [
        (2, 5, 7, 9, 9, (3, 3), dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), pre_relu=True), "contiguous"),
        # C > 16 (several reduction steps), C_out > 64 (two row tiles), stride and dilation 2, no ReLU
        (2, 20, 70, 9, 11, (3, 3), dict(stride=(2, 2), padding=(2, 2), dilation=(2, 2), pre_relu=False),
         "channels_last"),
        # non-square kernel, mixed strides, strided input
        (1, 3, 4, 12, 10, (5, 3), dict(stride=(2, 1), padding=(2, 0), dilation=(1, 2), pre_relu=True), "strided"),
        # P > 64 (two pixel tiles) and N * P > 256 (two parts of the pointwise weight gradient)
        (3, 4, 6, 10, 10, (3, 3), dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), pre_relu=True), "contiguous"),
        # C > 64 (two channel tiles of the pointwise weight gradient)
        (2, 70, 5, 6, 6, (3, 3), dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), pre_relu=True), "contiguous"),
        # N * P > 1024 (two parts of the depthwise weight gradient)
        (2, 3, 4, 24, 24, (3, 3), dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), pre_relu=True), "contiguous"),
        (2, 3, 2, 5, 5, (5, 5), dict(stride=(3, 3), padding=(4, 4), dilation=(2, 2), pre_relu=True), "channels_last"),
    ],
)
def test_sep_conv2d(emulated, n, c, c_out, h, w, k, conv, layout, dtype):
    if c > 64 and dtype != torch.float32:
        pytest.skip("the channel-tiling case once (float32): the dtype does not change the tiling, and it is slow")
    x = random((n, c, h, w), dtype, 1)
    dw, pw, bias = random((c, 1, *k), dtype, 2), random((c_out, c, 1, 1), dtype, 3), random((c_out,), dtype, 4)
    y_ref, grad_out, (gx_ref, gdw_ref, gpw_ref, gb_ref) = reference_grads(
        lambda *t: reference.sep_conv2d(*t, **conv), [x, dw, pw, bias], 5
    )
    if layout == "channels_last":
        prepare = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    elif layout == "strided":
        prepare = strided
    else:
        prepare = torch.Tensor.contiguous
    args = [list(conv[key]) for key in ("stride", "padding", "dilation")]
    y, grad_x, grad_dw, grad_pw, grad_bias = emulated.sep_conv2d(
        prepare(x), dw, pw, bias, *args, conv["pre_relu"],
        prepare(torch.empty(y_ref.shape, dtype=dtype)), prepare(grad_out.to(dtype)), prepare(torch.empty_like(x)),
    )  # fmt: skip
    assert_close(y, y_ref, dtype)
    assert_close(grad_x, gx_ref, dtype)
    assert_close(grad_dw, gdw_ref, dtype)
    assert_close(grad_pw, gpw_ref, dtype)
    assert_close(grad_bias, gb_ref, dtype)
