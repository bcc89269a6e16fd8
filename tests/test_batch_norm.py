"""batch_norm: the shared op contract (tests/op_contract.py) and what only batch_norm has: the running
statistics updated in place, both loop shapes of the CPU kernel (planes, columns), the module classes and
their bookkeeping (momentum None, no running statistics, evaluation mode), torch.compile of a module."""

from __future__ import annotations

import copy

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
from pyaccel_nas.ops import batch_norm, reference


def make_inputs(shape, *, dtype=torch.float64, device="cpu", seed=0):
    """x with a mean and scale per channel (not centred: the kernel must subtract the mean), weight, bias."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    offset = torch.randn(c, generator=g, dtype=dtype).view(1, c, *[1] * (len(shape) - 2)) * 3
    x = torch.randn(*shape, generator=g, dtype=dtype) * 2 + offset
    weight = torch.rand(c, generator=g, dtype=dtype) + 0.5
    bias = torch.randn(c, generator=g, dtype=dtype)
    return x.to(device), weight.to(device), bias.to(device)


def running_stats(c, *, dtype=torch.float64, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, generator=g, dtype=dtype).to(device), (torch.rand(c, generator=g, dtype=dtype) + 0.5).to(device)


def check_batch_norm(x, weight, bias, *, momentum=0.1, eps=1e-5):
    """Output and gradients against the reference in float64, and the running statistics updated alike."""
    mean, var = running_stats(x.shape[1], dtype=x.dtype, device=x.device)
    mean_ref, var_ref = mean.double(), var.double()
    check_against_reference(
        lambda x, w, b: batch_norm(x, mean, var, w, b, momentum=momentum, eps=eps),
        lambda x, w, b: reference.batch_norm(x, mean_ref, var_ref, w, b, momentum=momentum, eps=eps),
        [x, weight, bias],
    )
    tol = 1e-10 if x.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(mean, mean_ref.to(x.dtype), rtol=tol, atol=tol)
    torch.testing.assert_close(var, var_ref.to(x.dtype), rtol=tol, atol=tol)


@given(
    shape=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    layout=st.sampled_from(LAYOUTS),
    momentum=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_random_shapes(device, shape, layout, momentum, seed):
    if shape[0] * (torch.Size(shape).numel() // (shape[0] * shape[1])) < 2:
        shape[0] = 2  # one value per channel has no variance: refused (test_bad_input)
    x, weight, bias = make_inputs(shape, device=device, seed=seed)
    check_batch_norm(in_layout(x, layout), weight, bias, momentum=momentum)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "shape",
    [
        (41, 13, 19, 23),  # planes of 437 elements: 16-lane sums and a tail
        (700, 3, 5, 5),  # planes of 25: lanes flushed to the double totals every 163 images, chunks across threads
        (300, 7, 3, 3),  # planes below 16 elements: whole images summed column-wise, then folded into channels
        (5000, 9),  # rows of 9 columns, several 256-row partial sums per chunk
    ],
    ids=["long-planes", "many-planes", "small-planes", "rows"],
)
def test_float32_sums_over_many_terms(device, shape, layout):
    x, weight, bias = make_inputs(shape, dtype=torch.float32, device=device, seed=3)
    check_batch_norm(in_layout(x, layout), weight, bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_baseline_isa_kernels_match_reference(dtype):
    """The kernels compiled for baseline x86-64 (PYACCEL_NAS_CPU_BASELINE=1) agree with the reference too."""
    run_with_baseline_isa(
        "import torch, test_batch_norm as t\n"
        "from conftest import in_layout\n"
        "for shape in ((41, 13, 19, 23), (300, 7, 3, 3), (500, 9)):\n"
        "    for layout in ('contiguous', 'channels_last'):\n"
        f"        x, w, b = t.make_inputs(shape, dtype={dtype}, seed=3)\n"
        "        t.check_batch_norm(in_layout(x, layout), w, b)\n"
    )


@pytest.mark.parametrize("shape", [(5, 3, 6, 7), (9, 4, 2, 3), (11, 6)])  # planes, small planes, (N, C)
def test_a_gradient_sliced_from_a_concatenation_is_read_in_place(shape):
    x, weight, bias = make_inputs(shape, seed=5)
    check_reads_a_sliced_gradient_in_place(lambda x, w, b: batch_norm(x, None, None, w, b),
                                           lambda x, w, b: reference.batch_norm(x, None, None, w, b), [x, weight, bias])


def test_large_mean_does_not_cancel():
    """A mean 1e4 times the spread: the two-pass variance keeps float32's precision where E[x^2] - E[x]^2
    would lose all of it."""
    x = torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(0)) + 1e4
    y = batch_norm(x)
    expected = reference.batch_norm(x.double())
    torch.testing.assert_close(y, expected.float(), rtol=1e-3, atol=1e-3)


def test_empty_batch_leaves_running_statistics_alone():
    mean, var = running_stats(3)
    before = mean.clone(), var.clone()
    y = batch_norm(torch.randn(0, 3, 4, 4, dtype=torch.float64), mean, var)
    assert y.shape == (0, 3, 4, 4)
    assert torch.equal(mean, before[0]) and torch.equal(var, before[1])


def test_running_statistics_mutation_is_visible_to_autograd_version_checks():
    mean, var = running_stats(3)
    version = mean._version, var._version
    batch_norm(torch.randn(4, 3, 2, 2, dtype=torch.float64), mean, var)
    assert mean._version > version[0] and var._version > version[1]


BAD_INPUTS = [
    ("rank 1 x", (torch.randn(4),), {}, "`x` must have rank"),
    ("rank 6 x", (torch.randn(2, 2, 1, 1, 1, 2),), {}, "`x` must have rank"),
    ("weight length", (torch.randn(2, 4, 3), None, None, torch.randn(3)), {}, "`weight` must have shape"),
    ("bias rank", (torch.randn(2, 4, 3), None, None, None, torch.randn(4, 1)), {}, "`bias` must have shape"),
    ("running_mean length", (torch.randn(2, 4, 3), torch.zeros(5), torch.ones(4)), {}, "`running_mean` must have"),
    ("integer x", (torch.ones(2, 4, dtype=torch.int32),), {}, "floating-point"),
    ("mixed dtypes", (torch.randn(2, 4), None, None, torch.randn(4, dtype=torch.float64)), {}, "dtype"),
    ("one value per channel", (torch.randn(1, 4),), {}, "more than 1 value per channel"),
    ("one pixel of one image", (torch.randn(1, 4, 1, 1),), {}, "more than 1 value per channel"),
    ("negative eps", (torch.randn(2, 4),), {"eps": -1e-5}, "`eps` must be"),
    ("nan eps", (torch.randn(2, 4),), {"eps": float("nan")}, "`eps` must be"),
]


def norm_case(case_id, shape, *, dtype=torch.float64, prepare=None, affine=True) -> Case:
    """batch_norm(x, None, None, weight, bias) on make_inputs(shape, ...); ``prepare`` maps the input list."""

    def inputs(device):
        tensors = list(make_inputs(shape, dtype=dtype, device=device))
        tensors = tensors if affine else tensors[:1]
        return prepare(tensors) if prepare else tensors

    return Case(case_id, inputs, lambda f, x, *affine_params: f(x, None, None, *affine_params))


def tracking_case(case_id, shape, *, prepare=None) -> Case:
    """batch_norm with running statistics (inputs 4 and 5, never requiring grad), float32."""

    def inputs(device):
        x, weight, bias = make_inputs(shape, dtype=torch.float32, device=device)
        tensors = [x, weight, bias]
        return [*(prepare(tensors) if prepare else tensors), *running_stats(shape[1], dtype=torch.float32, device=device)]

    return Case(case_id, inputs, lambda f, x, w, b, mean, var: f(x, mean, var, w, b, momentum=0.3, eps=1e-3))


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


class TestContract(OpContract):
    name = "batch_norm"
    layout_cases = [
        norm_case(shape_id(shape), shape, dtype=torch.float32)
        for shape in [(32, 36), (8, 16, 20), (8, 36, 16, 16), (16, 9, 3, 3), (4, 16, 4, 8, 8)]
    ]
    sample = norm_case("sample", (2, 5, 6, 7))
    gradcheck_cases = [
        norm_case(f"{shape_id(shape)}{'' if affine else '-no-affine'}", shape, affine=affine)
        for shape in [(3, 4), (2, 3, 5), (2, 3, 4, 5), (3, 2, 4, 4), (2, 3, 2, 3, 4)]
        for affine in (True, False)
    ]
    compile_cases = [
        Case(
            "relu-norm-scale",
            lambda device: make_inputs((4, 8, 6, 6), dtype=torch.float32, device=device),
            lambda f, x, w, b: f(x.relu(), None, None, w, b) * 2,
        ),
    ]
    opcheck_cases = [
        norm_case("affine", (2, 6, 5, 4), dtype=torch.float32, prepare=requiring_grad),
        norm_case("no-affine", (2, 6, 5, 4), dtype=torch.float32, prepare=requiring_grad, affine=False),
        tracking_case("running-statistics", (3, 6, 5, 4), prepare=requiring_grad),
        tracking_case("running-statistics-channels_last", (3, 6, 5, 4),
                      prepare=lambda t: [in_layout(t[0], "channels_last").requires_grad_(), t[1], t[2]]),
    ]
    bad_inputs = BAD_INPUTS

    def raw_args(self, x, running_mean=None, running_var=None, weight=None, bias=None, *, momentum=0.1, eps=1e-5):
        return x, weight, bias, running_mean, running_var, momentum, eps

    def backward_args(self, grad_out, raw_args):
        x, weight = raw_args[:2]
        _, mean, invstd = torch.ops.pyaccel_nas.batch_norm(x, weight, *raw_args[2:])
        return grad_out, x, weight, mean, invstd


# --- the modules -----------------------------------------------------------------------------------------


MODULES = [(pnn.BatchNorm1d, nn.BatchNorm1d, (6, 5, 7)), (pnn.BatchNorm1d, nn.BatchNorm1d, (6, 5)),
           (pnn.BatchNorm2d, nn.BatchNorm2d, (6, 5, 4, 3)), (pnn.BatchNorm3d, nn.BatchNorm3d, (3, 5, 2, 4, 3))]


@pytest.mark.parametrize("fused_cls, torch_cls, shape", MODULES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize(
    "kwargs", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}], ids=str
)
def test_module_trains_and_evaluates_as_torch_does(fused_cls, torch_cls, shape, kwargs):
    torch.manual_seed(0)
    ours, theirs = fused_cls(shape[1], **kwargs).double(), torch_cls(shape[1], **kwargs).double()
    assert isinstance(ours, torch_cls)
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for step in range(3):
        x = make_inputs(shape, seed=step)[0]
        for train in (True, True, False):
            ours.train(train), theirs.train(train)
            x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
            y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
            torch.testing.assert_close(y_ours, y_theirs, rtol=1e-10, atol=1e-10)
            y_ours.square().sum().backward()
            y_theirs.square().sum().backward()
            torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-9, atol=1e-9)
    for (key, value), expected in zip(ours.state_dict().items(), theirs.state_dict().values()):
        torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10, msg=key)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9)


def test_module_calls_the_op_in_training_only():
    bn = pnn.BatchNorm2d(3).double()
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    from op_contract import _OpsCalled

    with _OpsCalled() as called:
        bn(x)
    assert "pyaccel_nas::batch_norm" in called.names
    with _OpsCalled() as called:
        bn.eval()(x)
        pnn.set_fused(bn.train(), False)(x)
    assert "pyaccel_nas::batch_norm" not in called.names
    assert repr(bn).endswith("fused=False)")


@pytest.mark.slow
def test_module_compiles_fullgraph_with_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), pnn.BatchNorm2d(8), nn.ReLU())
    twin = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    for seed in range(2):
        x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(compiled(x), twin(x))
    torch.testing.assert_close(model[1].running_mean, twin[1].running_mean)
    torch.testing.assert_close(model[1].running_var, twin[1].running_var)
    assert model[1].num_batches_tracked == twin[1].num_batches_tracked == 2
