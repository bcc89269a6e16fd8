"""The C++ autograd of the ops (csrc/<op>/<op>_autograd.cpp): first derivatives through torch.autograd, and a clear
error, not a silently wrong answer, where a second derivative is asked for."""

from __future__ import annotations

import pytest
import torch

from pyaccel_nas.ops import channel_gate, multires_sum, reference, sep_conv2d


def _cases():
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    x, dw, pw = randn(2, 3, 6, 6), randn(3, 1, 3, 3), randn(4, 3, 1, 1)
    yield "sep_conv2d", (lambda: sep_conv2d(x, dw, pw, padding=1)), (x, dw, pw)
    xg, gate = randn(2, 3, 4, 4), randn(3)
    yield "channel_gate", (lambda: channel_gate(xg, gate)), (xg, gate)
    b0, b1, w = randn(2, 3, 4, 4), randn(2, 3, 2, 2), randn(2)
    yield "multires_sum", (lambda: multires_sum([b0, b1], w, mode="bilinear")), (b0, b1, w)


@pytest.mark.parametrize("name,forward,inputs", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_double_backward_raises_clear_error(name, forward, inputs):
    out = forward()
    grads = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
    # first derivatives are still right under create_graph
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with pytest.raises(RuntimeError, match=f"pyaccel_nas::{name} is differentiable once"):
        torch.autograd.grad(sum(g.sum() for g in grads), inputs)


def test_first_derivative_under_create_graph_matches_reference():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    dw = torch.randn(3, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    pw = torch.randn(2, 3, 1, 1, generator=g, dtype=torch.float64, requires_grad=True)
    fused = torch.autograd.grad(sep_conv2d(x, dw, pw, padding=1).sum(), (x, dw, pw), create_graph=True)
    ref = torch.autograd.grad(reference.sep_conv2d(x, dw, pw, padding=1).sum(), (x, dw, pw))
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b)


def _channel_gate_inputs(requires_grad=(True, True)):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=requires_grad[0])
    gate = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=requires_grad[1])
    return x, gate


@pytest.mark.parametrize("requires_grad", [(True, False), (False, True)], ids=["x only", "gate only"])
def test_channel_gate_gradient_of_one_input(requires_grad):
    """channel_gate's hand-written node (no torch.autograd.Function): an input that does not require grad."""
    x, gate = _channel_gate_inputs(requires_grad)
    wanted = x if requires_grad[0] else gate
    (fused,) = torch.autograd.grad(channel_gate(x, gate).square().sum(), wanted)
    (ref,) = torch.autograd.grad(reference.channel_gate(x, gate).square().sum(), wanted)
    torch.testing.assert_close(fused, ref)


def test_channel_gate_forward_mode_ad_raises_clear_error():
    x, gate = _channel_gate_inputs()
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x.detach(), torch.ones_like(x))
        with pytest.raises(RuntimeError, match="no forward-mode derivative"):
            channel_gate(dual, gate)


def test_channel_gate_under_compiled_autograd_matches_reference():
    from torch._dynamo import compiled_autograd

    x, gate = _channel_gate_inputs()
    with compiled_autograd._enable(torch.compile(backend="eager")):
        channel_gate(x, gate).square().sum().backward()
    fused = (x.grad, gate.grad)
    ref = torch.autograd.grad(reference.channel_gate(x, gate).square().sum(), (x, gate))
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b)
