"""sep_conv2d against its reference: values, gradients, layouts, compile, bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DEVICES,
    LAYOUTS,
    check_against_reference,
    check_compiles_fullgraph,
    dispatch_key,
    in_layout,
    run_with_baseline_isa,
)
from hypothesis import assume, given
from hypothesis import strategies as st

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


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "conv",
    [
        dict(stride=1, padding=1, dilation=1),  # DARTS sep_conv_3x3
        dict(stride=2, padding=2, dilation=1),  # sep_conv_5x5 in a reduction cell
        dict(stride=1, padding=2, dilation=2),  # dil_conv_3x3
        dict(stride=2, padding=4, dilation=2),  # dil_conv_5x5 in a reduction cell
    ],
)
def test_float32_darts_shapes(device, layout, conv):
    k = 2 * conv["padding"] // conv["dilation"] + 1  # the "same" padding of DARTS
    x, dw, pw, b = make_inputs(8, 16, 24, 16, 16, k, k, dtype=torch.float32, device=device, seed=k)
    check_sep_conv2d(in_layout(x, layout), dw, pw, b, conv)


# Shapes for the vectorised CPU paths the small hypothesis shapes miss: rows of several whole vectors plus a
# tail (W_out = 37, 19, 13), strides 1-3 (phase-split planes), several output-row bands per image (N = 1),
# many output channels (pointwise tiles plus remainders), small planes that several images share one GEMM
# (2x2, 3x2, 4x4 outputs with a last, partial unit of images), float32 and float64. Output rows narrower
# than two vectors (float32: < 16, float64: < 8) take the channels-innermost path: the last three cases
# have whole transpose tiles (channels and widths that are multiples of 8 or 4) next to channel tails, and
# both loop orders of its depthwise backward (fewer or more than 4 channel vectors: C = 12, 16 and 33).
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
    ],
)
def test_large_shapes_match_reference(device, n, c, c_out, h, w, k, conv, dtype):
    x, dw, pw, b = make_inputs(n, c, c_out, h, w, k, k, dtype=dtype, device=device, seed=h + w)
    check_sep_conv2d(x, dw, pw, b, conv)


def test_baseline_isa_kernels_match_reference():
    """The kernels compiled for baseline x86-64 (PYACCEL_NAS_CPU_BASELINE=1) agree with the reference too."""
    # 21 wide: the phase-split path; 10 wide: channels-innermost for float32, both for float64
    run_with_baseline_isa(
        "import torch, test_sep_conv2d as t\n"
        "for dt in (torch.float32, torch.float64):\n"
        "    for conv in (dict(stride=1, padding=1), dict(stride=2, padding=4, dilation=2, pre_relu=False)):\n"
        "        for w in (21, 10):\n"
        "            x, dw, pw, b = t.make_inputs(2, 9, 11, 19, w, 3, 3, dtype=dt)\n"
        "            t.check_sep_conv2d(x, dw, pw, b, conv)\n"
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_output_keeps_memory_layout(device, layout):
    x, dw, pw, b = make_inputs(2, 5, 6, 9, 9, 3, 3, device=device)
    x = in_layout(x, layout)
    y = sep_conv2d(x, dw, pw, b, padding=1)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)


def test_empty_batch_gives_empty_output_and_zero_weight_grads(device):
    x, dw, pw, b = make_inputs(0, 4, 5, 8, 8, 3, 3, device=device)
    dw.requires_grad_()
    y = sep_conv2d(x, dw, pw, b, padding=1)
    assert y.shape == (0, 5, 8, 8)
    y.sum().backward()
    assert torch.equal(dw.grad, torch.zeros_like(dw))


@pytest.mark.parametrize("w", [6, 12])  # on the CPU: output rows < 8 wide take the channels-innermost path
def test_gradcheck_float64(device, w):
    x, dw, pw, b = make_inputs(2, 3, 4, 7, w, 3, 3, device=device)
    args = [t.requires_grad_() for t in (x, dw, pw, b)]
    for conv in (dict(stride=1, padding=1), dict(stride=2, padding=2, dilation=2), dict(stride=(1, 2), pre_relu=False)):
        assert torch.autograd.gradcheck(lambda *a: sep_conv2d(*a, **conv), args)


@pytest.mark.parametrize("w", [8, 20])  # float32 on the CPU: the channels-innermost and the phase-split path
@pytest.mark.parametrize("stride", [1, 2])
def test_nan_input_propagates_like_relu(device, w, stride):
    """NaN in x: the output is NaN where the reference's is, and grad_x passes the gradient there, as torch's
    relu does (its derivative is zero only where x <= 0)."""
    x, dw, pw, b = make_inputs(3, 9, 5, 10, w, 3, 3, dtype=torch.float32, device=device, seed=w)
    x[0, 2, 4, 3] = float("nan")
    x[2, 8, 9, w - 1] = float("nan")
    leaves = [t.clone().requires_grad_() for t in (x, dw, pw, b)]
    y = sep_conv2d(*leaves, stride=stride, padding=1)
    y_ref = reference.sep_conv2d(x.double(), dw.double(), pw.double(), b.double(), stride=stride, padding=1)
    torch.testing.assert_close(y, y_ref.float(), equal_nan=True, rtol=1e-4, atol=1e-4)
    grad_out = torch.randn_like(y)
    gx = torch.autograd.grad(y, leaves[0], grad_out)[0]
    x_ref = x.double().requires_grad_()
    y_ref = reference.sep_conv2d(x_ref, dw.double(), pw.double(), b.double(), stride=stride, padding=1)
    gx_ref = torch.autograd.grad(y_ref, x_ref, grad_out.double())[0]
    assert gx[0, 2, 4, 3] != 0 and gx[2, 8, 9, w - 1] != 0
    torch.testing.assert_close(gx, gx_ref.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(device, bias):
    x, dw, pw, b = make_inputs(2, 4, 3, 7, 7, 3, 3, bias=bias, dtype=torch.float32, device=device)
    args = (x.requires_grad_(), dw.requires_grad_(), pw.requires_grad_(), b.requires_grad_() if bias else None)
    torch.library.opcheck(OP, args + ([2, 1], [1, 2], [1, 2], True))
    grad_out = torch.randn(2, 3, 4, 7, device=device)
    torch.library.opcheck(
        torch.ops.pyaccel_nas.sep_conv2d_backward, (grad_out, x.detach(), dw.detach(), pw.detach(), [2, 1], [1, 2], [1, 2], True)
    )
    torch.library.opcheck(OP, (in_layout(x, "channels_last"), dw, pw, None, [1, 1], [0, 0], [1, 1], False))


def test_dispatches_to_cpp_kernel(device):
    for name in ("sep_conv2d", "sep_conv2d_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pyaccel_nas::{name}", dispatch_key(device))


@pytest.mark.slow
def test_torch_compile_fullgraph_forward_backward(device):
    x, dw, pw, b = make_inputs(4, 8, 6, 10, 10, 3, 3, dtype=torch.float32, device=device)
    check_compiles_fullgraph(lambda *a: sep_conv2d(*a, stride=1, padding=2, dilation=2).tanh(), [x, dw, pw, b])
    check_compiles_fullgraph(
        lambda *a: sep_conv2d(*a, stride=2, padding=1).sum(dim=1), [in_layout(x, "channels_last"), dw, pw]
    )


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


@pytest.mark.parametrize("desc,args,kwargs,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_clear_error(desc, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sep_conv2d(*args, **kwargs)


@pytest.mark.parametrize("desc,args,kwargs,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_to_raw_op_raises_value_error(desc, args, kwargs, message):
    """The C++ wrapper checks on its own: calling torch.ops directly never reaches a kernel with bad input."""
    x, dw, pw, *rest = args
    bias = rest[0] if rest else None
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    stride, padding, dilation = (pair(kwargs.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)))
    with pytest.raises(ValueError, match="pyaccel_nas::sep_conv2d"):
        OP(x, dw, pw, bias, stride, padding, dilation, True)


def test_zero_channels_are_refused_by_the_reference_and_the_fake_kernel_too():
    """C = 0 is refused everywhere: by the wrapper and the C++ op (BAD_INPUTS), by the fake kernel, and by the
    reference, as torch's conv2d refuses groups = 0."""
    x, dw, pw, b = make_inputs(2, 0, 5, 8, 8, 3, 3)
    with pytest.raises(RuntimeError, match="groups"):
        reference.sep_conv2d(x, dw, pw, b)
    meta = [t.to("meta") for t in (x, dw, pw, b)]
    with pytest.raises(ValueError, match="`x` must have C >= 1"):
        OP(*meta, [1, 1], [0, 0], [1, 1], True)
