"""multires_sum: the shared op contract (tests/op_contract.py) and what only multires_sum has: random branch
sizes and modes, non-power-of-two ratios, infinite branch elements, the size argument."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DEVICES, LAYOUTS, check_against_reference, in_layout
from hypothesis import given
from hypothesis import strategies as st
from op_contract import Case, OpContract, requiring_grad

from pyaccel_nas.ops import multires_sum, reference

LINEAR = {4: "bilinear", 5: "trilinear"}


def make_branches(n, c, sizes, *, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    branches = [torch.randn(n, c, *size, generator=g, dtype=dtype).to(device) for size in sizes]
    weights = torch.randn(len(sizes), generator=g, dtype=dtype).to(device)
    return branches, weights


def check_multires_sum(branches, weights, size, mode):
    return check_against_reference(
        lambda w, *b: multires_sum(list(b), w, size=size, mode=mode),
        lambda w, *b: reference.multires_sum(list(b), w, size=size, mode=mode),
        [weights, *branches],
    )


def divisor(data, value):
    return data.draw(st.sampled_from([d for d in range(1, value + 1) if value % d == 0]))


@given(
    data=st.data(),
    rank=st.sampled_from([4, 5]),
    n=st.integers(0, 3),
    c=st.integers(1, 4),
    num_branches=st.integers(1, 4),
    linear=st.booleans(),
    explicit_size=st.booleans(),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_random_shapes(device, data, rank, n, c, num_branches, linear, explicit_size, layout, seed):
    out = [data.draw(st.integers(1, 12 if rank == 4 else 8)) for _ in range(rank - 2)]
    sizes = [[o // divisor(data, o) for o in out] for _ in range(num_branches)]
    if not explicit_size:
        sizes[0] = out  # the default size is the largest branch's: one branch must be at full size
    branches, weights = make_branches(n, c, sizes, device=device, seed=seed)
    branches = [in_layout(b, data.draw(st.sampled_from(LAYOUTS))) for b in branches]
    branches[0] = in_layout(branches[0], layout)
    check_multires_sum(branches, weights, out if explicit_size else None, LINEAR[rank] if linear else "nearest")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sizes", [[(12, 10), (6, 5), (4, 2)], [(4, 6, 6), (2, 3, 3), (4, 2, 6)]])
def test_channels_last_nearest_sums_whole_pixels(device, sizes, dtype):
    """Every tensor channels-last (the layout of a CPU deployment, a pixel's channels contiguous), nearest:
    the CPU forward sums pixel by pixel; the output stays channels-last, the backward as for any layout."""
    branches, weights = make_branches(3, 19, sizes, dtype=dtype, device=device, seed=4)
    branches = [in_layout(b, "channels_last") for b in branches]
    out = check_multires_sum(branches, weights, None, "nearest")
    fmt = torch.channels_last if len(sizes[0]) == 2 else torch.channels_last_3d
    assert out.is_contiguous(memory_format=fmt)
    # an output size larger than every branch, and a batch slice (a view: strides of the whole batch)
    check_multires_sum([b[1:] for b in branches], weights, [2 * d for d in sizes[0]], "nearest")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("resampled", [False, True], ids=["all-at-output-size", "one-resampled"])
def test_branches_at_output_size(device, layout, resampled):
    """The DARTS supernet's mix: seven branches at the output's size (on the CPU, flat element-wise loops in
    4096-element blocks over both threads, a partial last block included), with or without one resampled
    branch beside them (the backward then walks that one by rows)."""
    sizes = [(13, 11)] * 7 + ([(1, 11)] if resampled else [])
    branches, weights = make_branches(64, 5, sizes, dtype=torch.float32, device=device, seed=5)
    check_multires_sum([in_layout(b, layout) for b in branches], weights, None, "nearest")


def test_non_power_of_two_ratios(device):
    branches, weights = make_branches(2, 3, [(12, 15), (4, 5), (6, 3), (1, 1)], device=device)
    for mode in ("nearest", "bilinear"):
        check_multires_sum(branches, weights, None, mode)
        check_multires_sum(branches, weights, [24, 30], mode)


@pytest.mark.parametrize("readers", ["all positive", "one zero", "both signs"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_infinite_branch_element_gives_the_reference_weight_gradient(device, mode, layout, readers):
    """The weight gradient sums grad_out * upsample(branch): an inf read by a gradient 0 gives NaN (inf * 0),
    read by gradients of both signs NaN (inf - inf), and only by positive ones +inf."""
    branches, weights = make_branches(2, 3, [(8, 8), (4, 4)], device=device)
    branches[1][1, 2, 2, 2] = float("inf")  # not element 1, which the reference's bilinear also reads with weight 0
    grad_out = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    grad_out[1, 2, 4, 4] = {"all positive": 1.0, "one zero": 0.0, "both signs": -1.0}[readers]  # one reader

    def value_and_grads(op):
        leaves = [t.clone().requires_grad_() for t in (weights, *(in_layout(b, layout) for b in branches))]
        y = op(leaves[1:], leaves[0], mode=mode)
        return [y, *torch.autograd.grad(y, leaves, grad_out.to(device))]

    expected = value_and_grads(reference.multires_sum)
    weight_grad = expected[1][1].item()
    assert weight_grad == float("inf") if readers == "all positive" else math.isnan(weight_grad)
    for actual, wanted in zip(value_and_grads(multires_sum), expected):
        torch.testing.assert_close(actual, wanted, equal_nan=True)


def _b(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


BAD_INPUTS = [
    ("empty branch list", ([], torch.randn(0)), {}, "`branches` must not be empty"),
    ("weights length", ([_b(1, 2, 4, 4), _b(1, 2, 2, 2)], torch.randn(3)), {}, "`weights` must have shape"),
    ("rank 3 branch", ([_b(1, 2, 4)], torch.randn(1)), {}, "must have rank 4 or 5"),
    ("mixed ranks", ([_b(1, 2, 4, 4), _b(1, 2, 2, 2, 2)], torch.randn(2)), {}, "must have rank 4"),
    ("channel mismatch", ([_b(1, 2, 4, 4), _b(1, 3, 2, 2)], torch.randn(2)), {}, "must have \\(N, C\\)"),
    ("non-integer ratio", ([_b(1, 2, 6, 6), _b(1, 2, 4, 4)], torch.randn(2)), {}, "integer multiple"),
    ("size not a multiple", ([_b(1, 2, 4, 4)], torch.randn(1)), {"size": [6, 6]}, "integer multiple"),
    ("size length", ([_b(1, 2, 4, 4)], torch.randn(1)), {"size": [8, 8, 8]}, "`size` must have 2 elements"),
    ("integer branch", ([torch.ones(1, 2, 4, 4, dtype=torch.int64)], torch.randn(1)), {}, "floating-point"),
    ("mixed dtypes", ([_b(1, 2, 4, 4), _b(1, 2, 2, 2, dtype=torch.float64)], torch.randn(2)), {}, "dtype"),
    ("weights dtype", ([_b(1, 2, 4, 4)], torch.randn(1, dtype=torch.float64)), {}, "dtype"),
    ("trilinear on 4-D", ([_b(1, 2, 4, 4)], torch.randn(1)), {"mode": "trilinear"}, "`mode` must be"),
    ("unknown mode", ([_b(1, 2, 4, 4)], torch.randn(1)), {"mode": "bicubic"}, "`mode` must be"),
]


@pytest.mark.parametrize("size", [[8.7, 8.2], (8.0, 8), [True, 8], 8])
def test_size_of_non_integers_is_refused_not_truncated(size):
    with pytest.raises(ValueError, match="`size` must be a sequence of ints"):
        multires_sum([_b(1, 2, 4, 4)], torch.randn(1), size=size)



def weights_and_branches(n, c, sizes, **kwargs) -> list[torch.Tensor]:
    """make_branches as the inputs of a Case: [weights, *branches]."""
    branches, weights = make_branches(n, c, sizes, **kwargs)
    return [weights, *branches]


def sum_case(case_id, n, c, sizes, *, size=None, mode="nearest", dtype=torch.float64, prepare=None) -> Case:
    """multires_sum(branches, weights, size=size, mode=mode) of make_branches(n, c, sizes, ...); ``prepare``
    maps the input list [weights, *branches] (to lay out branches, or to require grad)."""

    def inputs(device):
        tensors = weights_and_branches(n, c, sizes, dtype=dtype, device=device)
        return prepare(tensors) if prepare else tensors

    return Case(case_id, inputs, lambda f, w, *b: f(list(b), w, size=size, mode=mode))


DARTS_AND_MDP_CASES = {
    # name: (N, C, branch spatial sizes); MDP 2-D blocks at scale 1, 1/2, 1/4 and 3-D (T,H,W) factors
    "2d-scales": (8, 16, [(32, 32), (16, 16), (8, 8)]),
    "3d-scales": (4, 16, [(8, 16, 16), (8, 8, 8), (4, 8, 8)]),
    "equal": (8, 36, [(16, 16), (16, 16), (16, 16)]),  # equal resolutions: a DARTS mixed-op weighted sum
}
GRADCHECK_3D = (2, 3, [(4, 6, 8), (2, 3, 4), (1, 3, 2)])
OPCHECK_2D = (2, 4, [(8, 6), (4, 3), (2, 1)])


class TestContract(OpContract):
    name = "multires_sum"
    activations = slice(1, None)  # the branches; weights come first
    layout_cases = [
        sum_case(f"{case}-{mode}", n, c, sizes, mode=mode, dtype=torch.float32)
        for case, (n, c, sizes) in DARTS_AND_MDP_CASES.items()
        for mode in ("nearest", LINEAR[len(sizes[0]) + 2])
    ]
    sample = sum_case("sample", 2, 3, [(8, 8), (4, 4)], mode="bilinear")
    gradcheck_cases = [
        *(sum_case(f"3d-{mode}-size{size}", *GRADCHECK_3D, size=size, mode=mode)
          for mode in ("nearest", "trilinear")
          for size in (None, (8, 12, 16))),
        sum_case("2d-bilinear", 2, 3, [(6, 6), (3, 2)], mode="bilinear"),
    ]
    compile_cases = [
        Case(
            "softmax-bilinear-relu",
            lambda device: weights_and_branches(4, 8, [(8, 8), (4, 4), (2, 2)], dtype=torch.float32, device=device),
            lambda f, logits, *b: f(list(b), logits.softmax(0), mode="bilinear").relu(),
        ),
    ]
    opcheck_cases = [
        *(case
          for mode in ("nearest", "bilinear")
          for case in (
              sum_case(f"{mode}", *OPCHECK_2D, mode=mode, dtype=torch.float32, prepare=requiring_grad),
              sum_case(f"{mode}-size", *OPCHECK_2D, size=[16, 12], mode=mode, dtype=torch.float32, prepare=requiring_grad),
              sum_case(f"{mode}-channels_last", *OPCHECK_2D, mode=mode, dtype=torch.float32,
                       prepare=lambda t: [t[0], *(in_layout(b, "channels_last").requires_grad_() for b in t[1:])]),
          )),
        sum_case("3d-trilinear", 2, 3, [(4, 4, 4), (2, 2, 4)], mode="trilinear", dtype=torch.float32, prepare=requiring_grad),
    ]
    bad_inputs = BAD_INPUTS

    def raw_args(self, branches, weights, *, size=None, mode="nearest"):
        return list(branches), weights, size, mode

    def backward_args(self, grad_out, raw_args):
        branches, weights, _, mode = raw_args
        return grad_out, branches, weights, mode
