"""sep_conv2d: the shared op contract (tests/op_contract.py) and what only sep_conv2d has: random shapes, the
CPU kernels' vectorised paths, NaN through the ReLU, C = 0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES, LAYOUTS, check_against_reference, in_layout, run_with_baseline_isa
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode
from op_contract import Case, OpContract, requiring_grad

from pyaccel_nas.ops import reference, sep_conv2d

OP = torch.ops.pyaccel_nas.sep_conv2d


def make_inputs(n, c, c_out, h, w, kh, kw, *, bias=True, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype).to(device)
    dw = torch.randn(c, 1, kh, kw, generator=g, dtype=dtype).to(device)
    pw = torch.randn(c_out, c, 1, 1, generator=g, dtype=dtype).to(device)
    b = torch.randn(c_out, generator=g, dtype=dtype).to(device) if bias else None
    return x, dw, pw, b


def check_sep_conv2d(x, dw, pw, b, conv):
    tensors = [x, dw, pw] + ([b] if b is not None else [])
    fused = lambda x, dw, pw, b=None: sep_conv2d(x, dw, pw, b, **conv)  # noqa: E731
    ref = lambda x, dw, pw, b=None: reference.sep_conv2d(x, dw, pw, b, **conv)  # noqa: E731
    return check_against_reference(fused, ref, tensors)


@given(
    n=st.integers(0, 3),
    c=st.integers(1, 7),
    c_out=st.integers(1, 7),
    h=st.integers(1, 11),
    w=st.integers(1, 11),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pre_relu=st.booleans(),
    bias=st.booleans(),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_random_shapes(
    device, n, c, c_out, h, w, kh, kw, stride, padding, dilation, pre_relu, bias, layout, seed
):
    assume(h + 2 * padding[0] >= dilation[0] * (kh - 1) + 1 and w + 2 * padding[1] >= dilation[1] * (kw - 1) + 1)
    x, dw, pw, b = make_inputs(n, c, c_out, h, w, kh, kw, bias=bias, device=device, seed=seed)
    conv = dict(stride=stride, padding=padding, dilation=dilation, pre_relu=pre_relu)
    check_sep_conv2d(in_layout(x, layout), dw, pw, b, conv)


# Shapes for the vectorised CPU paths the small hypothesis shapes miss: rows of several whole vectors plus a
# tail (W_out = 37, 19, 13), strides 1-3 (phase-split planes), several output-row bands per image (N = 1),
# many output channels (pointwise tiles plus remainders), small planes that several images share one GEMM
# (2x2, 3x2, 4x4 outputs with a last, partial unit of images), float32 and float64. Output rows narrower
# than two vectors (float32: < 16, float64: < 8) take the channels-innermost path: the last three cases
# have whole transpose tiles (channels and widths that are multiples of 8 or 4) next to channel tails, and
# both loop orders of its depthwise backward (fewer or more than 4 channel vectors: C = 12, 16 and 33).
# From 32 input and output channels on, the pointwise products run on torch's BLAS.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "n,c,c_out,h,w,k,conv",
    [
        (1, 5, 13, 40, 37, 3, dict(stride=1, padding=1, dilation=1, pre_relu=True)),
        (2, 7, 20, 37, 37, 5, dict(stride=(2, 1), padding=4, dilation=2, pre_relu=True)),
        (3, 9, 9, 38, 38, 5, dict(stride=2, padding=2, dilation=1, pre_relu=False)),
        (1, 17, 31, 29, 40, 3, dict(stride=(1, 3), padding=(0, 2), dilation=(1, 3), pre_relu=True)),
        (37, 11, 13, 2, 2, 3, dict(stride=1, padding=1, dilation=1, pre_relu=True)),
        (21, 6, 10, 5, 3, 3, dict(stride=2, padding=1, dilation=1, pre_relu=False)),
        (19, 8, 8, 7, 7, 5, dict(stride=2, padding=4, dilation=2, pre_relu=True)),
        (5, 16, 24, 12, 8, 3, dict(stride=1, padding=1, dilation=1, pre_relu=True)),
        (6, 12, 7, 8, 14, 3, dict(stride=2, padding=1, dilation=1, pre_relu=True)),
        (3, 33, 9, 16, 16, 5, dict(stride=2, padding=4, dilation=2, pre_relu=False)),
        # both channel counts >= 32: the pointwise products go to torch's BLAS (phase-split, channels-
        # innermost, several images per GEMM)
        (2, 33, 48, 10, 21, 3, dict(stride=1, padding=1, dilation=1, pre_relu=True)),
        (3, 40, 36, 12, 12, 3, dict(stride=1, padding=1, dilation=1, pre_relu=True)),
        (17, 36, 40, 6, 6, 5, dict(stride=2, padding=4, dilation=2, pre_relu=False)),
        # more phase-split planes than the backward keeps from its recomputation (it builds them again)
        (2, 72, 24, 32, 40, 3, dict(stride=1, padding=1, dilation=1, pre_relu=True)),
        # 1x1 without padding, 64 output pixels and more: the pointwise path (one run of pixels with a tail;
        # stride 2 on odd and even widths; stride 3; on the BLAS). Fewer pixels: channels-innermost (the last)
        (2, 7, 13, 37, 35, 1, dict(stride=1, padding=0, dilation=1, pre_relu=True)),
        (3, 9, 20, 38, 37, 1, dict(stride=2, padding=0, dilation=2, pre_relu=True)),
        (2, 6, 5, 17, 30, 1, dict(stride=(1, 2), padding=0, dilation=1, pre_relu=False)),
        (2, 6, 5, 29, 29, 1, dict(stride=(3, 3), padding=0, dilation=1, pre_relu=True)),
        (3, 40, 36, 16, 9, 1, dict(stride=(2, 1), padding=0, dilation=1, pre_relu=True)),
        (21, 40, 36, 5, 6, 1, dict(stride=(2, 1), padding=0, dilation=1, pre_relu=True)),
    ],
)
def test_large_shapes_match_reference(device, n, c, c_out, h, w, k, conv, dtype):
    x, dw, pw, b = make_inputs(n, c, c_out, h, w, k, k, dtype=dtype, device=device, seed=h + w)
    check_sep_conv2d(x, dw, pw, b, conv)


@pytest.mark.parametrize("conv", [dict(), dict(stride=2), dict(stride=(2, 3), padding=(1, 2), dilation=3)])
def test_a_1x1_depthwise_kernel_is_a_per_channel_scale_and_counts_no_macs(conv):
    """ReLU -> 1x1 conv runs as sep_conv2d with an identity depthwise part (econas' cell preprocessing): the
    reference computes a 1x1 depthwise conv as a scale, and MAC counts leave it out, as the 1x1 conv would."""
    x, dw, pw, b = make_inputs(2, 5, 7, 9, 8, 1, 1, dtype=torch.float64)
    expected = F.conv2d(F.conv2d(F.relu(x), dw, groups=5, **conv), pw, b)
    torch.testing.assert_close(reference.sep_conv2d(x, dw, pw, b, **conv), expected)
    torch.testing.assert_close(sep_conv2d(x, dw, pw, b, **conv), expected)
    for fn in (sep_conv2d, reference.sep_conv2d):
        with FlopCounterMode(display=False) as counter:
            fn(x, dw, pw, b, **conv)
        assert counter.get_total_flops() == 2 * expected[:, :1].numel() * 5 * 7  # the pointwise MACs only


def test_baseline_isa_kernels_match_reference():
    """The kernels compiled for baseline x86-64 (PYACCEL_NAS_CPU_BASELINE=1) agree with the reference too."""
    # 21 wide: the phase-split path; 10 wide: channels-innermost for float32, both for float64
    run_with_baseline_isa(
        "import torch, test_sep_conv2d as t\n"
        "for dt in (torch.float32, torch.float64):\n"
        "    for conv in (dict(stride=1, padding=1), dict(stride=2, padding=4, dilation=2, pre_relu=False)):\n"
        "        for w, c in ((21, 9), (10, 9), (21, 36), (10, 36)):  # 36: gemm.inc where the BLAS would run\n"
        "            x, dw, pw, b = t.make_inputs(2, c, c + 2, 19, w, 3, 3, dtype=dt)\n"
        "            t.check_sep_conv2d(x, dw, pw, b, conv)\n"
        "    for stride in (1, 2):  # 1x1: the pointwise path\n"
        "        x, dw, pw, b = t.make_inputs(2, 9, 11, 19, 21, 1, 1, dtype=dt)\n"
        "        t.check_sep_conv2d(x, dw, pw, b, dict(stride=stride))\n"
    )


@pytest.mark.parametrize("w", [8, 20])  # float32 on the CPU, 3x3: the channels-innermost and the phase-split path
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 1])  # 1x1 without padding: the pointwise path (but 8 wide at stride 2)
def test_nan_input_propagates_like_relu(device, w, stride, k):
    """NaN in x: the output is NaN where the reference's is, and grad_x passes the gradient there, as torch's
    relu does (its derivative is zero only where x <= 0)."""
    # 1x1: 20 rows, so that stride 2 on the 20-wide input has the pointwise path's 64 output pixels
    x, dw, pw, b = make_inputs(3, 9, 5, 10 if k == 3 else 20, w, k, k, dtype=torch.float32, device=device, seed=w)
    nans = [(0, 2, 4, 3), (2, 8, 9, w - 1)] if k == 3 else [(0, 2, 4, 2), (2, 8, 8, w - 2)]  # pixels a 1x1 reads
    for at in nans:
        x[at] = float("nan")
    leaves = [t.clone().requires_grad_() for t in (x, dw, pw, b)]
    conv = dict(stride=stride, padding=k // 2)
    y = sep_conv2d(*leaves, **conv)
    y_ref = reference.sep_conv2d(x.double(), dw.double(), pw.double(), b.double(), **conv)
    torch.testing.assert_close(y, y_ref.float(), equal_nan=True, rtol=1e-4, atol=1e-4)
    grad_out = torch.randn_like(y)
    gx = torch.autograd.grad(y, leaves[0], grad_out)[0]
    x_ref = x.double().requires_grad_()
    y_ref = reference.sep_conv2d(x_ref, dw.double(), pw.double(), b.double(), **conv)
    gx_ref = torch.autograd.grad(y_ref, x_ref, grad_out.double())[0]
    assert all(gx[at] != 0 for at in nans)
    torch.testing.assert_close(gx, gx_ref.float(), rtol=1e-4, atol=1e-4)


BAD_INPUTS = [
    # (description, args, kwargs, message fragment)
    ("rank 3 x", (torch.randn(4, 8, 8), torch.randn(4, 1, 3, 3), torch.randn(5, 4, 1, 1)), {}, "`x` must have rank 4"),
    ("dw channels", (torch.randn(1, 4, 8, 8), torch.randn(3, 1, 3, 3), torch.randn(5, 4, 1, 1)), {}, "`dw_weight` must have shape"),
    ("dw not depthwise", (torch.randn(1, 4, 8, 8), torch.randn(4, 2, 3, 3), torch.randn(5, 4, 1, 1)), {}, "`dw_weight` must have shape"),
    ("pw kernel 3x3", (torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3), torch.randn(5, 4, 3, 3)), {}, "`pw_weight` must have shape"),
    ("pw channels", (torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3), torch.randn(5, 3, 1, 1)), {}, "`pw_weight` must have shape"),
    ("bias shape", (torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3), torch.randn(5, 4, 1, 1), torch.randn(4)), {}, "`pw_bias` must have shape"),
    ("integer x", (torch.ones(1, 4, 8, 8, dtype=torch.int64), torch.randn(4, 1, 3, 3), torch.randn(5, 4, 1, 1)), {}, "floating-point"),
    ("mixed dtypes", (torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3, dtype=torch.float64), torch.randn(5, 4, 1, 1)), {}, "dtype"),
    ("stride 0", (torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3), torch.randn(5, 4, 1, 1)), {"stride": 0}, "`stride` must be >= 1"),
    ("negative padding", (torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3), torch.randn(5, 4, 1, 1)), {"padding": -1}, "`padding` must be >= 0"),
    ("dilation 0", (torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3), torch.randn(5, 4, 1, 1)), {"dilation": (1, 0)}, "`dilation` must be >= 1"),
    ("huge padding", (torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3), torch.randn(5, 4, 1, 1)), {"padding": 2**40}, "`padding` must be >= 0"),
    ("kernel larger than input", (torch.randn(1, 4, 2, 2), torch.randn(4, 1, 5, 5), torch.randn(5, 4, 1, 1)), {}, "smaller than the dilated kernel"),
    ("stride of 3 ints", (torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3), torch.randn(5, 4, 1, 1)), {"stride": (1, 1, 1)}, "`stride` must be an int or a pair"),
    ("zero channels", (torch.randn(2, 0, 8, 8), torch.randn(0, 1, 3, 3), torch.randn(5, 0, 1, 1)), {}, "`x` must have C >= 1"),
]


def sep_case(case_id, shape, conv, *, bias=True, dtype=torch.float64, seed=0, prepare=None) -> Case:
    """sep_conv2d(*make_inputs(*shape, ...), **conv); ``prepare`` maps the input list (to lay out x, or to
    require grad)."""

    def inputs(device):
        tensors = [t for t in make_inputs(*shape, bias=bias, dtype=dtype, device=device, seed=seed) if t is not None]
        return prepare(tensors) if prepare else tensors

    return Case(case_id, inputs, lambda f, *t: f(*t, **conv))


def x_channels_last(tensors):
    return [in_layout(tensors[0], "channels_last"), *tensors[1:]]


def conv_id(conv) -> str:
    return "-".join(f"{k}{v}" for k, v in conv.items())


DARTS_CONVS = [
    dict(stride=1, padding=1, dilation=1),  # DARTS sep_conv_3x3
    dict(stride=2, padding=2, dilation=1),  # sep_conv_5x5 in a reduction cell
    dict(stride=1, padding=2, dilation=2),  # dil_conv_3x3
    dict(stride=2, padding=4, dilation=2),  # dil_conv_5x5 in a reduction cell
]
OPCHECK_CONV = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), pre_relu=True)


class TestContract(OpContract):
    name = "sep_conv2d"
    # k: the "same" padding of DARTS
    layout_cases = [
        sep_case(conv_id(conv), (8, 16, 24, 16, 16, k, k), conv, dtype=torch.float32, seed=k)
        for conv in DARTS_CONVS
        for k in [2 * conv["padding"] // conv["dilation"] + 1]
    ]
    sample = sep_case("sample", (2, 5, 6, 9, 9, 3, 3), dict(padding=1))
    # w = 6: on the CPU, output rows < 8 wide take the channels-innermost path
    gradcheck_cases = [
        sep_case(f"w{w}-{conv_id(conv)}", (2, 3, 4, 7, w, 3, 3), conv)
        for w in (6, 12)
        for conv in (dict(stride=1, padding=1), dict(stride=2, padding=2, dilation=2), dict(stride=(1, 2), pre_relu=False))
    ]
    compile_cases = [
        Case(
            "dilated-tanh",
            lambda device: make_inputs(4, 8, 6, 10, 10, 3, 3, dtype=torch.float32, device=device),
            lambda f, *t: f(*t, stride=1, padding=2, dilation=2).tanh(),
        ),
        Case(
            "channels_last-no_bias-sum",
            lambda device: x_channels_last(make_inputs(4, 8, 6, 10, 10, 3, 3, bias=False, dtype=torch.float32, device=device)[:3]),
            lambda f, *t: f(*t, stride=2, padding=1).sum(dim=1),
        ),
    ]
    opcheck_cases = [
        sep_case("bias", (2, 4, 3, 7, 7, 3, 3), OPCHECK_CONV, dtype=torch.float32, prepare=requiring_grad),
        sep_case("no_bias", (2, 4, 3, 7, 7, 3, 3), OPCHECK_CONV, bias=False, dtype=torch.float32, prepare=requiring_grad),
        sep_case("channels_last", (2, 4, 3, 7, 7, 3, 3), dict(pre_relu=False), bias=False, dtype=torch.float32,
                 prepare=lambda t: requiring_grad(x_channels_last(t))),
    ]
    bad_inputs = BAD_INPUTS

    def raw_args(self, x, dw_weight, pw_weight, pw_bias=None, *, stride=1, padding=0, dilation=1, pre_relu=True):
        pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
        return x, dw_weight, pw_weight, pw_bias, pair(stride), pair(padding), pair(dilation), pre_relu

    def backward_args(self, grad_out, raw_args):
        x, dw_weight, pw_weight, _, *conv = raw_args
        return grad_out, x, dw_weight, pw_weight, *conv

def test_zero_channels_are_refused_by_the_reference_and_the_fake_kernel_too():
    """C = 0 is refused everywhere: by the wrapper and the C++ op (BAD_INPUTS), by the fake kernel, and by the
    reference, as torch's conv2d refuses groups = 0."""
    x, dw, pw, b = make_inputs(2, 0, 5, 8, 8, 3, 3)
    with pytest.raises(RuntimeError, match="groups"):
        reference.sep_conv2d(x, dw, pw, b)
    meta = [t.to("meta") for t in (x, dw, pw, b)]
    with pytest.raises(ValueError, match="`x` must have C >= 1"):
        OP(*meta, [1, 1], [0, 0], [1, 1], True)
