"""pool2d: the shared op contract (tests/op_contract.py) and what only pool2d has: both modes against
F.max_pool2d / F.avg_pool2d over kernels, strides and paddings, the index F.max_pool2d's backward uses
(ties, NaN, windows of -inf), small and wide planes (the CPU kernel's vectors of outputs), the modules."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DEVICES,
    LAYOUTS,
    check_against_reference,
    check_reads_a_sliced_gradient_in_place,
    in_layout,
    run_with_baseline_isa,
)
from hypothesis import given
from hypothesis import strategies as st
from op_contract import Case, OpContract, requiring_grad
from torch import nn

import pyaccel_nas.nn as pnn
from pyaccel_nas.ops import pool2d, reference


def make_input(shape, *, dtype=torch.float64, device="cpu", seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


def check_pool2d(x, mode, kernel_size, stride, padding, count_include_pad=True):
    kwargs = {"count_include_pad": count_include_pad}
    return check_against_reference(
        lambda x: pool2d(x, mode, kernel_size, stride, padding, **kwargs),
        lambda x: reference.pool2d(x, mode, kernel_size, stride, padding, **kwargs),
        [x],
    )


@given(
    data=st.data(),
    n=st.integers(0, 3),
    c=st.integers(1, 4),
    mode=st.sampled_from(["max", "avg"]),
    count_include_pad=st.booleans(),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_random_shapes(device, data, n, c, mode, count_include_pad, layout, seed):
    kernel = [data.draw(st.integers(1, 4)) for _ in range(2)]
    padding = [data.draw(st.integers(0, k // 2)) for k in kernel]
    size = [data.draw(st.integers(max(1, k - 2 * p), 13)) for k, p in zip(kernel, padding)]
    stride = [data.draw(st.integers(1, 3)) for _ in range(2)]
    x = make_input((n, c, *size), device=device, seed=seed)
    check_pool2d(in_layout(x, layout), mode, kernel, stride, padding, count_include_pad)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize(
    "size, stride", [((32, 32), 2), ((16, 16), 1), ((8, 8), 2), ((4, 4), 1), ((2, 2), 2), ((5, 27), 3)],
    ids=str,
)
def test_darts_pools_float32(device, size, stride, mode, layout):
    """DARTS' 3x3 pools (padding 1, count_include_pad False) on the planes of proxies and evaluation
    networks: rows of outputs longer and shorter than a vector, strides 1, 2 and 3."""
    x = make_input((3, 5, *size), dtype=torch.float32, device=device, seed=1)
    check_pool2d(in_layout(x, layout), mode, 3, stride, 1, count_include_pad=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("width", [16, 35])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_stride_two_moves_whole_vectors_of_columns(mode, width, padding, dtype):
    """At stride 2 the CPU kernel splits each input row into even and odd columns (and merges the gradient
    back) a pair of vectors at a time: the padding decides which phase takes the even columns, an odd width
    leaves a tail."""
    x = make_input((2, 3, 5, width), dtype=dtype, seed=4)
    check_pool2d(x, mode, 5, 2, padding)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_baseline_isa_kernels_match_reference(dtype):
    """The kernels compiled for baseline x86-64 (PYACCEL_NAS_CPU_BASELINE=1) agree with the reference too."""
    run_with_baseline_isa(
        "import torch, test_pool2d as t\n"
        "from conftest import in_layout\n"
        "for size, stride in (((17, 19), 2), ((4, 4), 1)):\n"
        "    for mode in ('max', 'avg'):\n"
        "        for layout in ('contiguous', 'channels_last'):\n"
        f"            x = t.make_input((2, 3, *size), dtype={dtype}, seed=3)\n"
        "            t.check_pool2d(in_layout(x, layout), mode, 3, stride, 1, False)\n"
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_gradient_goes_where_torch_sends_it(device, layout):
    """Ties: the first maximum in row-major order. NaN: the last NaN of the window. A window of -inf (and
    padding): its first tap inside the input. As F.max_pool2d's indices say."""
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0], [3.0, 0.0, float("nan"), 2.0], [2.0, float("nan"), 1.0, 5.0],
                      [-float("inf")] * 4], dtype=torch.float64, device=device)
    x = in_layout(x.expand(2, 3, 4, 4).clone(), layout)
    for stride, padding in ((1, 0), (2, 1), (1, 1)):
        ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        y = pool2d(ours, "max", 3, stride, padding)
        y_ref = torch.nn.functional.max_pool2d(theirs, 3, stride, padding)
        torch.testing.assert_close(y, y_ref, equal_nan=True)
        g = torch.arange(1.0, 1.0 + y.numel(), dtype=torch.float64, device=device).view(y.shape)
        y.backward(g)
        y_ref.backward(g)
        torch.testing.assert_close(ours.grad, theirs.grad)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_a_gradient_sliced_from_a_concatenation_is_read_in_place(mode):
    x = make_input((3, 4, 9, 8), dtype=torch.float64)
    check_reads_a_sliced_gradient_in_place(lambda x: pool2d(x, mode, 3, 2, 1),
                                           lambda x: getattr(torch.nn.functional, f"{mode}_pool2d")(x, 3, 2, 1), [x])


BAD_INPUTS = [
    ("rank 3 x", (torch.randn(2, 4, 4), "max", 2), {}, "`x` must have rank"),
    ("integer x", (torch.ones(1, 2, 4, 4, dtype=torch.int32), "max", 2), {}, "floating-point"),
    ("unknown mode", (torch.randn(1, 2, 4, 4), "min", 2), {}, "`mode` must be"),
    ("zero kernel", (torch.randn(1, 2, 4, 4), "max", 0), {}, "`kernel_size` must be"),
    ("zero stride", (torch.randn(1, 2, 4, 4), "avg", 2, 0), {}, "`stride` must be"),
    ("negative padding", (torch.randn(1, 2, 4, 4), "avg", 3, 1, -1), {}, "`padding` must be"),
    ("padding over half the kernel", (torch.randn(1, 2, 4, 4), "max", 3, 1, 2), {}, "at most half"),
    ("window larger than the input", (torch.randn(1, 2, 2, 8), "max", 5, 1, 1), {}, "smaller than the window"),
    ("kernel pair of three", (torch.randn(1, 2, 4, 4), "max", (2, 2, 2)), {}, "`kernel_size` must be"),
]


def pool_case(case_id, shape, mode, kernel_size=3, stride=2, padding=1, *, count_include_pad=False,
              dtype=torch.float64, prepare=None) -> Case:
    def inputs(device):
        tensors = [make_input(shape, dtype=dtype, device=device)]
        return prepare(tensors) if prepare else tensors

    return Case(case_id, inputs,
                lambda f, x: f(x, mode, kernel_size, stride, padding, count_include_pad=count_include_pad))


class TestContract(OpContract):
    name = "pool2d"
    layout_cases = [
        pool_case(f"{mode}-{size}-s{stride}", (4, 6, size, size), mode, stride=stride, dtype=torch.float32)
        for mode in ("max", "avg") for size, stride in ((16, 1), (9, 2), (4, 2))
    ]
    sample = pool_case("sample", (2, 5, 6, 7), "max")
    gradcheck_cases = [
        pool_case(f"{mode}-k{k}-s{s}-p{p}-{cip}", (2, 3, 5, 6), mode, k, s, p, count_include_pad=cip)
        for mode in ("max", "avg") for k, s, p in ((3, 1, 1), (3, 2, 1), (2, 2, 0), ((3, 2), (1, 2), (1, 0)))
        for cip in ((False, True) if mode == "avg" else (False,))
    ]
    compile_cases = [
        Case("relu-pool-scale", lambda device: [make_input((4, 8, 6, 6), dtype=torch.float32, device=device)],
             lambda f, x: f(x.relu(), "max", 3, 1, 1) * 2),
        Case("avg-pool-sum", lambda device: [make_input((4, 8, 6, 6), dtype=torch.float32, device=device)],
             lambda f, x: f(x, "avg", 3, 2, 1, count_include_pad=False) + 1),
    ]
    opcheck_cases = [
        pool_case(f"{mode}-{layout}", (2, 6, 7, 5), mode, dtype=torch.float32,
                  prepare=lambda t, layout=layout: [in_layout(t[0], layout).requires_grad_()])
        for mode in ("max", "avg") for layout in ("contiguous", "channels_last")
    ]
    bad_inputs = BAD_INPUTS

    def raw_args(self, x, mode, kernel_size, stride=None, padding=0, *, count_include_pad=True):
        pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
        return x, mode, pair(kernel_size), pair(kernel_size if stride is None else stride), pair(padding), \
            count_include_pad

    def backward_args(self, grad_out, raw_args):
        return grad_out, *raw_args


# --- the modules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [lambda: nn.MaxPool2d(3, 2, 1), lambda: nn.MaxPool2d(2), lambda: nn.MaxPool2d(3, 1, 1, dilation=2),
     lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
     lambda: nn.AvgPool2d(2, divisor_override=3), lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True)],
    ids=["max-3-2-1", "max-2", "max-dilated", "max-ceil", "avg-3-1-1", "avg-divisor", "avg-ceil"],
)
def test_modules_compute_what_torchs_do(make):
    """Options the op does not cover (dilation, ceil_mode, divisor_override, unbatched input) run torch's."""
    theirs = make()
    ours = pnn.fuse_modules(nn.Sequential(make()))[0]
    assert type(ours).__name__ == type(theirs).__name__ and isinstance(ours, type(theirs))
    assert repr(ours) == repr(theirs)
    for shape in ((2, 3, 9, 8), (3, 9, 8)):
        x = make_input(shape)
        torch.testing.assert_close(ours(x.clone().requires_grad_()), theirs(x))


def test_module_calls_the_op_on_channels_first_input():
    from op_contract import _OpsCalled

    pool = pnn.MaxPool2d(3, 2, 1)
    x = make_input((2, 3, 8, 8))
    with _OpsCalled() as called:
        pool(x)
    assert "pyaccel_nas::pool2d" in called.names
    with _OpsCalled() as called:  # channels-last: torch's vectorised channels-last kernel
        y = pool(x.contiguous(memory_format=torch.channels_last))
    assert "pyaccel_nas::pool2d" not in called.names and y.is_contiguous(memory_format=torch.channels_last)
    with _OpsCalled() as called:
        pnn.set_fused(pool, False)(x)
    assert "pyaccel_nas::pool2d" not in called.names
    assert repr(pool).endswith("fused=False)")
