"""A sep_conv2d training step keeps only its inputs alive for backward; the eager composition keeps
the ReLU and depthwise results too. Measured as the storages autograd saves, not as wall time."""

from __future__ import annotations

import torch

from pyaccel_nas.ops import channel_gate, multires_sum, reference, sep_conv2d


def saved_storages(fn, inputs: list[torch.Tensor]) -> dict[int, int]:
    """data_ptr -> nbytes of every storage autograd saves for backward while running fn(*inputs)."""
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return saved


def extra_bytes(saved: dict[int, int], inputs: list[torch.Tensor]) -> int:
    """Bytes saved beyond the inputs themselves (which the caller keeps alive anyway)."""
    own = {t.untyped_storage().data_ptr() for t in inputs}
    return sum(nbytes for ptr, nbytes in saved.items() if ptr not in own)


def test_sep_conv2d_saves_no_intermediate():
    x = torch.randn(32, 36, 16, 16, requires_grad=True)
    dw = torch.randn(36, 1, 5, 5, requires_grad=True)
    pw = torch.randn(36, 36, 1, 1, requires_grad=True)
    inputs = [x, dw, pw]
    conv = dict(padding=4, dilation=2)
    fused = saved_storages(lambda *a: sep_conv2d(*a, **conv), inputs)
    eager = saved_storages(lambda *a: reference.sep_conv2d(*a, **conv), inputs)
    assert extra_bytes(fused, inputs) == 0
    activation = x.numel() * x.element_size()
    # eager keeps relu(x) and the depthwise result: two more activations of x's size
    assert extra_bytes(eager, inputs) >= 2 * activation
    assert sum(fused.values()) <= 0.6 * sum(eager.values())


def test_channel_gate_and_multires_sum_save_only_inputs():
    x = torch.randn(8, 16, 8, 8, requires_grad=True)
    gate = torch.randn(16, requires_grad=True)
    assert extra_bytes(saved_storages(lambda *a: channel_gate(*a, threshold=0.1), [x, gate]), [x, gate]) == 0

    branches = [torch.randn(8, 16, s, s, requires_grad=True) for s in (16, 8, 4)]
    weights = torch.randn(3, requires_grad=True)
    inputs = [weights, *branches]
    fused = saved_storages(lambda w, *b: multires_sum(list(b), w, mode="bilinear"), inputs)
    eager = saved_storages(lambda w, *b: reference.multires_sum(list(b), w, mode="bilinear"), inputs)
    assert extra_bytes(fused, inputs) == 0
    assert extra_bytes(eager, inputs) > 0  # the upsampled branches
