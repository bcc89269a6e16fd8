"""channel_gate: the shared op contract (tests/op_contract.py) and what only channel_gate has: random shapes of
rank 2-5, the CPU kernels' blocked sums, the threshold."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES, LAYOUTS, check_against_reference, in_layout, run_with_baseline_isa
from hypothesis import given
from hypothesis import strategies as st
from op_contract import Case, OpContract, requiring_grad

from pyaccel_nas.ops import channel_gate, reference


def make_inputs(shape, *, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype).to(device)
    gate = torch.randn(shape[1], generator=g, dtype=dtype).to(device)
    return x, gate


def check_channel_gate(x, gate, threshold):
    return check_against_reference(
        lambda x, g: channel_gate(x, g, threshold=threshold),
        lambda x, g: reference.channel_gate(x, g, threshold=threshold),
        [x, gate],
    )


@given(
    shape=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    empty_batch=st.booleans(),
    threshold=st.one_of(st.none(), st.floats(0.0, 1.5)),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_random_shapes(device, shape, empty_batch, threshold, layout, seed):
    if empty_batch:
        shape[0] = 0
    x, gate = make_inputs(shape, device=device, seed=seed)
    check_channel_gate(in_layout(x, layout), gate, threshold)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float64_rows_longer_than_the_vector_lanes(device, layout):
    """Rows of 437 elements (16-lane sums plus a tail; 533 channels-first rows, partial sums flushed every 9
    images, threads splitting an image) and 17917 channels-last rows (several 256-row partial sums, split
    unevenly across threads): the kernels' blocked sums against the reference."""
    x, gate = make_inputs((41, 13, 19, 23), device=device, seed=3)
    check_channel_gate(in_layout(x, layout), gate, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_baseline_isa_kernels_match_reference(dtype):
    """The kernels compiled for baseline x86-64 (PYACCEL_NAS_CPU_BASELINE=1) agree with the reference too."""
    run_with_baseline_isa(
        "import torch, test_channel_gate as t\n"
        "from conftest import in_layout\n"
        "for layout in ('contiguous', 'channels_last'):\n"
        f"    x, gate = t.make_inputs((41, 13, 19, 23), dtype={dtype}, seed=3)\n"
        "    t.check_channel_gate(in_layout(x, layout), gate, 0.5)\n"
    )


def test_threshold_zeroes_small_gates_and_their_gradient(device):
    x = torch.randn(3, 4, 5, 5, device=device)
    gate = torch.tensor([0.05, -0.5, -0.01, 2.0], device=device, requires_grad=True)
    y = channel_gate(x, gate, threshold=0.1)
    assert torch.equal(y[:, 0], torch.zeros_like(y[:, 0])) and torch.equal(y[:, 2], torch.zeros_like(y[:, 2]))
    torch.testing.assert_close(y[:, 1], -0.5 * x[:, 1])
    y.sum().backward()
    assert gate.grad[0] == 0 and gate.grad[2] == 0
    torch.testing.assert_close(gate.grad[3], x[:, 3].sum())


BAD_INPUTS = [
    ("rank 1 x", (torch.randn(4), torch.randn(4)), {}, "`x` must have rank"),
    ("rank 6 x", (torch.randn(1, 2, 1, 1, 1, 1), torch.randn(2)), {}, "`x` must have rank"),
    ("gate length", (torch.randn(2, 4, 3), torch.randn(3)), {}, "`gate` must have shape"),
    ("gate rank", (torch.randn(2, 4, 3), torch.randn(4, 1)), {}, "`gate` must have shape"),
    ("integer x", (torch.ones(2, 4, dtype=torch.int32), torch.randn(4)), {}, "floating-point"),
    ("mixed dtypes", (torch.randn(2, 4), torch.randn(4, dtype=torch.float64)), {}, "dtype"),
    ("negative threshold", (torch.randn(2, 4), torch.randn(4)), {"threshold": -1.0}, "`threshold` must be"),
    ("nan threshold", (torch.randn(2, 4), torch.randn(4)), {"threshold": float("nan")}, "`threshold` must be"),
]


def gate_case(case_id, shape, *, threshold=None, dtype=torch.float64, prepare=None) -> Case:
    """channel_gate(*make_inputs(shape, ...), threshold=threshold); ``prepare`` maps the input list (to lay
    out x, or to require grad)."""

    def inputs(device):
        tensors = list(make_inputs(shape, dtype=dtype, device=device))
        return prepare(tensors) if prepare else tensors

    return Case(case_id, inputs, lambda f, x, g: f(x, g, threshold=threshold))


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


class TestContract(OpContract):
    name = "channel_gate"
    layout_cases = [
        gate_case(shape_id(shape), shape, threshold=0.5, dtype=torch.float32)
        for shape in [(32, 36), (8, 16, 20), (8, 36, 16, 16), (4, 16, 4, 8, 8)]
    ]
    sample = gate_case("sample", (2, 5, 6, 7))
    gradcheck_cases = [
        gate_case(f"{shape_id(shape)}-threshold{threshold}", shape, threshold=threshold)
        for shape in [(3, 4), (2, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 4)]
        for threshold in (None, 0.3)
    ]
    compile_cases = [
        Case(
            "relu-gate-scale",
            lambda device: make_inputs((4, 8, 6, 6), dtype=torch.float32, device=device),
            lambda f, x, g: f(x.relu(), g, threshold=0.1) * 2,
        ),
    ]
    opcheck_cases = [
        case
        for threshold in (None, 0.2)
        for case in (
            gate_case(f"threshold{threshold}", (2, 6, 5, 4), threshold=threshold, dtype=torch.float32,
                      prepare=requiring_grad),
            gate_case(f"threshold{threshold}-channels_last", (2, 6, 5, 4), threshold=threshold, dtype=torch.float32,
                      prepare=lambda t: [in_layout(t[0], "channels_last").requires_grad_(), t[1]]),
        )
    ]
    bad_inputs = BAD_INPUTS

    def raw_args(self, x, gate, *, threshold=None):
        return x, gate, threshold

    def backward_args(self, grad_out, raw_args):
        return grad_out, *raw_args
