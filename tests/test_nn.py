"""pyaccel_nas.nn modules: fused against reference, against plain PyTorch, DARTS compatibility, set_fused."""

from __future__ import annotations

import copy
import math

import darts_original
import pytest
import torch
import torch.nn.functional as F
from darts_original import DARTS_CONVS, build
from torch import nn

import pyaccel_nas
import pyaccel_nas.nn as pnn
from pyaccel_nas.ops import reference

TOLERANCES = {torch.float64: {"rtol": 1e-10, "atol": 1e-10}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, **TOLERANCES[actual.dtype])


def run(module: nn.Module, inputs: list[torch.Tensor], call, grad_seed: int = 1):
    """Output, input gradients and parameter gradients (by name) of ``call(module, inputs)``."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    module.zero_grad(set_to_none=True)
    out = call(module, inputs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    out.backward(grad_out)
    return out, [x.grad for x in inputs], {n: p.grad for n, p in module.named_parameters()}


def assert_same_results(a, b) -> None:
    (out_a, in_a, par_a), (out_b, in_b, par_b) = a, b
    assert out_a.shape == out_b.shape
    assert_close(out_a, out_b)
    for ga, gb in zip(in_a, in_b, strict=True):
        assert_close(ga, gb)
    assert par_a.keys() == par_b.keys()
    for name in par_a:
        assert par_a[name] is not None, f"no gradient for {name}"
        assert_close(par_a[name], par_b[name])


def assert_fused_matches_reference(module: nn.Module, inputs: list[torch.Tensor], call=lambda m, xs: m(*xs)) -> None:
    """Same outputs and gradients with fused ops as with a deep copy running the reference compositions."""
    assert module.fused
    ref = pnn.set_fused(copy.deepcopy(module), False)
    assert_same_results(run(module, inputs, call), run(ref, inputs, call))


def randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------- SepConv2d

SEP_CONFIGS = [
    # in, out, kernel, stride, padding, dilation, bias, pre_relu
    (4, 4, 3, 1, 1, 1, False, True),
    (3, 7, 5, 2, 2, 1, True, True),
    (5, 2, 3, 1, 2, 2, True, False),
    (4, 6, (3, 1), (2, 1), (1, 0), (1, 2), False, False),
    (2, 3, 1, 1, 0, 1, True, True),
]


def make_sep_conv2d(config, dtype=torch.float64) -> pnn.SepConv2d:
    c_in, c_out, k, s, p, d, bias, pre_relu = config
    return pnn.SepConv2d(c_in, c_out, k, s, p, d, bias=bias, pre_relu=pre_relu, dtype=dtype)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("config", SEP_CONFIGS)
def test_sep_conv2d_is_relu_depthwise_pointwise(config, fused):
    torch.manual_seed(0)
    m = pnn.set_fused(make_sep_conv2d(config), fused)
    x = randn(2, config[0], 9, 8)
    h = F.relu(x) if m.pre_relu else x
    h = F.conv2d(h, m.dw_weight, None, m.stride, m.padding, m.dilation, groups=m.in_channels)
    assert_close(m(x), F.conv2d(h, m.pw_weight, m.bias))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("config", SEP_CONFIGS)
def test_sep_conv2d_fused_matches_reference(config, dtype):
    torch.manual_seed(0)
    assert_fused_matches_reference(make_sep_conv2d(config, dtype), [randn(3, config[0], 10, 7, dtype=dtype)])


def test_sep_conv2d_channels_last_input():
    torch.manual_seed(0)
    m = make_sep_conv2d(SEP_CONFIGS[1])
    x = randn(2, 3, 9, 9).contiguous(memory_format=torch.channels_last)
    y = m(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, pnn.set_fused(copy.deepcopy(m), False)(x))


def test_sep_conv2d_initialises_like_the_two_conv2d_it_replaces():
    torch.manual_seed(3)
    dw = nn.Conv2d(6, 6, (3, 5), groups=6, bias=False)
    pw = nn.Conv2d(6, 4, 1, bias=True)
    torch.manual_seed(3)
    m = pnn.SepConv2d(6, 4, (3, 5), bias=True)
    assert torch.equal(m.dw_weight, dw.weight)
    assert torch.equal(m.pw_weight, pw.weight)
    assert torch.equal(m.bias, pw.bias)


def test_sep_conv2d_parameters_and_repr():
    m = pnn.SepConv2d(3, 5, (3, 1), stride=2, padding=(1, 0), dilation=2, bias=False, pre_relu=False)
    assert {n: tuple(p.shape) for n, p in m.named_parameters()} == {"dw_weight": (3, 1, 3, 1), "pw_weight": (5, 3, 1, 1)}
    assert m.bias is None
    assert repr(m) == (
        "SepConv2d(3, 5, kernel_size=(3, 1), stride=(2, 2), padding=(1, 0), dilation=(2, 2), bias=False, "
        "pre_relu=False)"
    )
    pnn.set_fused(m, False)
    assert repr(m).endswith("pre_relu=False, fused=False)")
    assert set(pnn.SepConv2d(3, 5, 3, bias=True).state_dict()) == {"dw_weight", "pw_weight", "bias"}


# ------------------------------------------------------------------------------- DARTS SepConv / DilConv


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", DARTS_CONVS)
def test_darts_state_dict_keys_shapes_and_init_match_darts(name, affine):
    torch.manual_seed(0)
    original = build(darts_original, name, 4, 6, 2, affine)
    torch.manual_seed(0)
    ours = build(pnn, name, 4, 6, 2, affine)
    theirs, mine = original.state_dict(), ours.state_dict()
    assert list(mine) == list(theirs)
    for key in theirs:
        assert torch.equal(mine[key], theirs[key]), key
    # And both ways with strict=True, from differently initialised modules.
    torch.manual_seed(1)
    ours.load_state_dict(build(darts_original, name, 4, 6, 2, affine).state_dict(), strict=True)
    original.load_state_dict(build(pnn, name, 4, 6, 2, affine).state_dict(), strict=True)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", DARTS_CONVS)
def test_darts_ops_match_darts(name, stride, train, fused):
    torch.manual_seed(0)
    original = build(darts_original, name, 3, 5, stride).double()
    # Non-trivial BatchNorm state, so eval mode is not an identity normalisation.
    for m in original.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    ours = build(pnn, name, 3, 5, stride).double()
    ours.load_state_dict(original.state_dict(), strict=True)
    pnn.set_fused(ours, fused)
    original.train(train)
    ours.train(train)
    x = [randn(2, 3, 11, 10)]
    assert_same_results(run(ours, x, lambda m, xs: m(*xs)), run(original, x, lambda m, xs: m(*xs)))
    # Training-mode BatchNorm updated its running statistics the same way.
    for key, value in original.state_dict().items():
        assert_close(ours.state_dict()[key].double(), value.double())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", DARTS_CONVS)
def test_darts_ops_fused_match_reference(name, dtype):
    torch.manual_seed(0)
    assert_fused_matches_reference(build(pnn, name, 4, 4, 1).to(dtype), [randn(2, 4, 8, 8, dtype=dtype)])


def test_darts_ops_run_sep_conv2d_once_per_triple(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return reference.sep_conv2d(*args, **kwargs)

    monkeypatch.setattr(pyaccel_nas.ops, "sep_conv2d", spy)
    x = randn(1, 2, 8, 8, dtype=torch.float32)
    pnn.SepConv(2, 3, 3, 2, 1)(x)
    assert [c["stride"] for c in calls] == [(2, 2), (1, 1)]
    calls.clear()
    pnn.DilConv(2, 3, 5, 1, 4, 2)(x)
    assert [(c["padding"], c["dilation"]) for c in calls] == [((4, 4), (2, 2))]


# --------------------------------------------------------------------------------------------- ChannelGate


@pytest.mark.parametrize("threshold", [None, 0.3])
@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_channel_gate_scales_channels(rank, threshold):
    gate = pnn.ChannelGate(4, threshold=threshold, dtype=torch.float64)
    values = torch.tensor([0.5, -0.1, 2.0, 0.2], dtype=torch.float64)
    with torch.no_grad():
        gate.gate.copy_(values)
    x = randn(2, 4, *[3] * (rank - 2))
    effective = values if threshold is None else values * (values.abs() >= threshold)
    expected = x * effective.view(1, 4, *[1] * (rank - 2))
    assert_close(gate(x), expected)
    assert_close(pnn.set_fused(gate, False)(x), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_channel_gate_fused_matches_reference(threshold, dtype):
    gate = pnn.ChannelGate(5, threshold=threshold, dtype=dtype)
    with torch.no_grad():
        gate.gate.copy_(torch.tensor([0.5, -0.1, 2.0, 0.2, -1.0]))
    assert_fused_matches_reference(gate, [randn(3, 5, 4, 4, dtype=dtype)])


def test_channel_gate_init_threshold_and_repr():
    gate = pnn.ChannelGate(3, init=0.25)
    assert gate.gate.shape == (3,) and torch.equal(gate.gate, torch.full((3,), 0.25))
    assert repr(gate) == "ChannelGate(3)"
    gate.threshold = 0.5  # pruning-aware evaluation is switched on after training
    out = gate(torch.ones(1, 3))
    assert torch.equal(out, torch.zeros(1, 3))
    assert repr(gate) == "ChannelGate(3, threshold=0.5)"


# --------------------------------------------------------------------------------------------- MultiResSum


def make_branches(sizes, dtype=torch.float64):
    return [randn(2, 3, *size, dtype=dtype, seed=k) for k, size in enumerate(sizes)]


MULTIRES_CASES = [
    # mode, branch sizes, size
    ("nearest", [(8, 8), (4, 4), (2, 8)], None),
    ("bilinear", [(8, 6), (4, 3), (1, 1)], None),
    ("bilinear", [(4, 4), (2, 2)], (8, 12)),
    ("trilinear", [(4, 4, 4), (2, 4, 1)], None),
    ("nearest", [(2, 4, 4), (1, 2, 2)], (4, 4, 8)),
]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(("mode", "sizes", "size"), MULTIRES_CASES)
def test_multires_sum_is_softmax_weighted_sum_of_interpolations(mode, sizes, size, fused):
    m = pnn.set_fused(pnn.MultiResSum(len(sizes), mode=mode, size=size).double(), fused)
    with torch.no_grad():
        m.logits.copy_(torch.linspace(-1, 1, len(sizes)))
    branches = make_branches(sizes)
    out_size = size or [max(s[d] for s in sizes) for d in range(len(sizes[0]))]
    align = None if mode == "nearest" else False
    w = torch.softmax(m.logits, 0)
    expected = sum(w[k] * F.interpolate(b, size=out_size, mode=mode, align_corners=align) for k, b in enumerate(branches))
    assert_close(m(branches), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("mode", "sizes", "size"), MULTIRES_CASES)
def test_multires_sum_fused_matches_reference(mode, sizes, size, dtype):
    m = pnn.MultiResSum(len(sizes), mode=mode, size=size, dtype=dtype)
    with torch.no_grad():
        m.logits.copy_(torch.linspace(-1, 1, len(sizes)))
    assert_fused_matches_reference(m, make_branches(sizes, dtype), call=lambda m, xs: m(xs))


def test_multires_sum_starts_with_equal_weights():
    m = pnn.MultiResSum(4)
    assert torch.equal(m.logits, torch.zeros(4))
    assert torch.allclose(m.weights(), torch.full((4,), 0.25))
    assert repr(m) == "MultiResSum(4, mode='nearest')"


def test_multires_sum_rejects_wrong_number_of_branches():
    with pytest.raises(ValueError, match="expected 3 branches, got 2"):
        pnn.MultiResSum(3)(make_branches([(4, 4), (2, 2)]))


# ---------------------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pnn.SepConv2d(3, 3, 0), r"SepConv2d: `kernel_size` must be an int or a pair of ints, each >= 1, got 0"),
        (lambda: pnn.SepConv2d(0, 3, 3), r"SepConv2d: `in_channels` must be a positive int, got 0"),
        (lambda: pnn.SepConv2d(3, 2.0, 3), r"SepConv2d: `out_channels` must be a positive int, got 2.0"),
        (lambda: pnn.SepConv2d(3, 3, 3, stride=0), r"`stride` must be .* each >= 1, got 0"),
        (lambda: pnn.SepConv2d(3, 3, 3, padding=-1), r"`padding` must be .* each >= 0, got -1"),
        (lambda: pnn.SepConv2d(3, 3, 3, padding="same"), r"`padding` must be an int or a pair of ints"),
        (lambda: pnn.SepConv2d(3, 3, (3, 3, 3)), r"`kernel_size` must be an int or a pair of ints"),
        (lambda: pnn.SepConv2d(3, 3, 3, dilation=(1, 0)), r"`dilation` must be .* each >= 1, got \(1, 0\)"),
        (lambda: pnn.SepConv(4, 4, 0, 1, 1), r"SepConv: `kernel_size` must be"),
        (lambda: pnn.DilConv(0, 4, 3, 1, 2, 2), r"DilConv: `C_in` must be a positive int, got 0"),
        (lambda: pnn.DilConv(4, 4, 3, 1, 2, 0), r"DilConv: `dilation` must be"),
        (lambda: pnn.ChannelGate(0), r"ChannelGate: `num_channels` must be a positive int, got 0"),
        (lambda: pnn.ChannelGate(3, threshold=-0.1), r"ChannelGate: `threshold` must be None or a finite number >= 0"),
        (lambda: pnn.ChannelGate(3, threshold=math.nan), r"`threshold` must be None or a finite number >= 0"),
        (lambda: pnn.MultiResSum(0), r"MultiResSum: `num_branches` must be a positive int, got 0"),
        (lambda: pnn.MultiResSum(2, mode="bicubic"), r"MultiResSum: `mode` must be one of .*, got 'bicubic'"),
        (lambda: pnn.MultiResSum(2, size=(8, 0)), r"MultiResSum: `size` must be a non-empty sequence of positive ints"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ------------------------------------------------------------------------------------------------ set_fused


class Net(nn.Module):
    """A small network of every module kind, nested, with ordinary modules in between."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), pnn.SepConv2d(c, c, 3, padding=1, bias=True))
        self.cell = nn.ModuleList([pnn.SepConv(c, c, 3, 1, 1), pnn.DilConv(c, c, 3, 2, 2, 2)])
        self.gate = pnn.ChannelGate(c, init=0.5)
        self.mix = pnn.MultiResSum(2, mode="bilinear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        full, half = self.cell[0](x), self.cell[1](x)
        return self.gate(self.mix([full, half]))


def fusable_flags(model: nn.Module) -> list[bool]:
    return [m.fused for m in model.modules() if isinstance(m, pnn.FusableModule)]


def test_set_fused_flips_every_fusable_module_and_keeps_results():
    torch.manual_seed(0)
    net = Net().double()
    assert fusable_flags(net) == [True] * 8  # the SepConv's and DilConv's three BatchNorms too
    x = [randn(2, 3, 8, 8)]
    fused = run(net, x, lambda m, xs: m(*xs))
    assert pnn.set_fused(net, False) is net
    assert fusable_flags(net) == [False] * 8
    assert_same_results(fused, run(net, x, lambda m, xs: m(*xs)))
    pnn.set_fused(net, True)
    assert fusable_flags(net) == [True] * 8
    with pytest.raises(TypeError, match="`fused` must be a bool"):
        pnn.set_fused(net, 1)


@pytest.mark.parametrize("fused", [True, False])
def test_fused_flag_chooses_the_op_namespace(monkeypatch, fused):
    calls = []
    for namespace, label in ((pyaccel_nas.ops, "fused"), (reference, "reference")):
        for op in ("sep_conv2d", "channel_gate", "multires_sum", "batch_norm"):
            original = getattr(namespace, op)

            def spy(*args, _label=label, _op=op, _original=original, **kwargs):
                calls.append((_label, _op))
                return _original(*args, **kwargs)

            monkeypatch.setattr(namespace, op, spy)
    torch.manual_seed(0)
    net = pnn.set_fused(Net(), fused)
    net(randn(1, 3, 8, 8, dtype=torch.float32))
    ops_called = [op for label, op in calls if label == ("fused" if fused else "reference")]
    assert sorted(ops_called) == ["batch_norm"] * 3 + ["channel_gate", "multires_sum"] + ["sep_conv2d"] * 4
    if not fused:
        assert not [c for c in calls if c[0] == "fused"]


# ------------------------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    net = Net().double()
    x = [randn(2, 3, 8, 8)]
    eager = run(net, x, lambda m, xs: m(*xs))
    out, input_grads, param_grads = run(torch.compile(net, fullgraph=True), x, lambda m, xs: m(*xs))
    param_grads = {name.removeprefix("_orig_mod."): grad for name, grad in param_grads.items()}
    assert_same_results((out, input_grads, param_grads), eager)
