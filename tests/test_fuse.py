"""fuse_modules: which sequences it rewrites, and that the rewritten model computes what the original did."""

from __future__ import annotations

import copy
import io
import logging
from collections import OrderedDict

import darts_original
import pytest
import torch
from darts_original import DARTS_CONVS, build
from torch import nn

import pyaccel_nas.nn as pnn

TOLERANCES = {torch.float64: {"rtol": 1e-10, "atol": 1e-10}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, **TOLERANCES[actual.dtype])


def randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def dw(c: int, k=3, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(c, c, k, groups=c, bias=kwargs.pop("bias", False), **kwargs)


def pw(c_in: int, c_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, bias=kwargs.pop("bias", False), **kwargs)


def forward_backward(model: nn.Module, x: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    out = model(x)
    out.backward(randn(*out.shape, dtype=out.dtype, seed=1))
    return out, x.grad


def fuse_and_check(model: nn.Module, x: torch.Tensor, expected: list[str]) -> nn.Module:
    """Fuses ``model`` in place and checks it against an unfused copy: the fused sites, the state_dict (the
    same keys and values), Parameter objects, and outputs and gradients in eval and train mode. Returns the
    unfused copy."""
    original = copy.deepcopy(model)
    params = list(model.parameters())  # the copy's parameters, in the same order, are their twins
    params_before = {id(p) for p in params}
    assert pnn.find_fusable(model) == expected
    assert pnn.fuse_modules(model) is model
    fused_names = [name for name, m in model.named_modules() if isinstance(m, pnn.FusedSepConv2d)]
    assert fused_names == expected
    for name in expected:
        sep = model.get_submodule(name)
        # The convolutions' own Parameters, not copies; the pointwise one's in the module after the fused one.
        assert id(sep.weight) in params_before and id(sep.pointwise.weight) in params_before
        parent = model.get_submodule(name.rpartition(".")[0])
        entries = list(parent._modules.values())
        following = entries[entries.index(sep) + 1]
        assert following is sep.pointwise and isinstance(following, pnn.FusedPointwise)
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]  # every Parameter, in order
    # The state_dict is the unfused model's, key for key and value for value.
    before, after = original.state_dict(), model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], value) for key, value in before.items())

    for train in (False, True):
        original.train(train)
        model.train(train)
        model.zero_grad(set_to_none=True)
        original.zero_grad(set_to_none=True)
        (out, x_grad), (out_ref, x_grad_ref) = forward_backward(model, x), forward_backward(original, x)
        assert_close(out, out_ref)
        assert out.is_contiguous(memory_format=torch.channels_last) == out_ref.is_contiguous(
            memory_format=torch.channels_last
        )
        assert_close(x_grad, x_grad_ref)
        for p, p_ref in zip(params, original.parameters(), strict=True):
            assert_close(p.grad, p_ref.grad)
    # BatchNorm running statistics after training mode
    after = model.state_dict()
    for key, value in original.state_dict().items():
        if value.is_floating_point():
            assert_close(after[key], value)
        else:
            assert torch.equal(after[key], value), key
    return original


def mobilenet_like(c: int = 4) -> nn.Sequential:
    """Separable blocks as in Xception / DARTS (no norm between depthwise and pointwise), in one Sequential."""
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(inplace=True),
        dw(c, padding=1),  # 3: fused with the ReLU before it
        pw(c, 2 * c),
        nn.BatchNorm2d(2 * c),
        nn.ReLU(inplace=True),
        dw(2 * c, stride=2, padding=1),  # 7: strided
        pw(2 * c, 2 * c, bias=True),
        nn.BatchNorm2d(2 * c),
        dw(2 * c, 5, padding=4, dilation=2),  # 10: dilated, no ReLU before it
        pw(2 * c, 3 * c),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3 * c, 5),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mobilenet_like_sequential(dtype):
    torch.manual_seed(0)
    model = mobilenet_like().to(dtype)
    fuse_and_check(model, randn(2, 3, 12, 12, dtype=dtype), ["3", "7", "10"])
    assert [type(m).__name__ for m in model] == [
        "Conv2d", "BatchNorm2d", "Identity", "FusedSepConv2d", "FusedPointwise", "BatchNorm2d", "Identity",
        "FusedSepConv2d", "FusedPointwise", "BatchNorm2d", "FusedSepConv2d", "FusedPointwise", "ReLU",
        "AdaptiveAvgPool2d", "Flatten", "Linear",
    ]  # fmt: skip
    assert [(m.stride, m.padding, m.dilation, m.pre_relu, m.pointwise.bias is not None) for m in (model[3], model[7])] == [
        ((1, 1), (1, 1), (1, 1), True, False),
        ((2, 2), (1, 1), (1, 1), True, True),
    ]
    assert (model[10].kernel_size, model[10].dilation, model[10].pre_relu) == ((5, 5), (2, 2), False)
    assert all(type(model[i]) is pnn.BatchNorm2d for i in (1, 5, 9))


def test_batchnorms_and_pools_become_fused_ones_keeping_tensors_sharing_and_hooks():
    """Every plain BatchNorm1d/2d/3d, MaxPool2d and AvgPool2d, wherever it sits, runs the fused op (a
    BatchNorm with the same tensors); a shared one stays shared; one with hooks, or a subclass, is left
    alone."""

    class CustomNorm(nn.BatchNorm2d):
        pass

    torch.manual_seed(0)
    shared = nn.BatchNorm2d(3)
    hooked = nn.BatchNorm2d(3)
    hooked.register_forward_hook(lambda module, args, out: None)
    model = nn.ModuleDict({"a": shared, "b": nn.Sequential(shared, hooked, CustomNorm(3)),
                           "c": nn.BatchNorm1d(5, momentum=None), "d": nn.BatchNorm3d(2, affine=False),
                           "e": nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(3, 1, 1, count_include_pad=False))})
    tensors = {name: t for name, t in [*model.named_parameters(), *model.named_buffers()]}
    before = copy.deepcopy(model.state_dict())
    pnn.fuse_modules(model)
    assert type(model["a"]) is pnn.BatchNorm2d and model["b"][0] is model["a"]
    assert type(model["b"][1]) is nn.BatchNorm2d and type(model["b"][2]) is CustomNorm
    assert type(model["c"]) is pnn.BatchNorm1d and model["c"].momentum is None
    assert type(model["d"]) is pnn.BatchNorm3d and not model["d"].affine
    assert type(model["e"][0]) is pnn.MaxPool2d and (model["e"][0].stride, model["e"][0].padding) == (2, 1)
    assert type(model["e"][1]) is pnn.AvgPool2d and not model["e"][1].count_include_pad
    assert {name: t for name, t in [*model.named_parameters(), *model.named_buffers()]} == tensors
    assert list(model.state_dict()) == list(before)
    x = torch.randn(4, 5)
    model["c"](x)  # counts the batch; momentum None: the cumulative average, after one batch its statistics
    assert model["c"].num_batches_tracked == 1
    torch.testing.assert_close(model["c"].running_mean, x.mean(0))
    torch.testing.assert_close(model["c"].running_var, x.var(0))


class Nested(nn.Module):
    def __init__(self, c: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Sequential(nn.ReLU(), dw(c, padding=1), pw(c, c)),
            nn.Sequential(nn.Sequential(dw(c, padding=1), pw(c, 2 * c)), nn.BatchNorm2d(2 * c)),
        )
        self.head = nn.Sequential(OrderedDict(act=nn.ReLU(), depthwise=dw(2 * c, 3, padding=(1, 2), dilation=(1, 2)),
                                              pointwise=pw(2 * c, c, bias=True)))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) + x


def test_nested_sequentials_and_named_entries():
    torch.manual_seed(0)
    model = Nested()
    fuse_and_check(model.double(), randn(2, 3, 9, 9), ["body.0.1", "body.1.0.0", "head.depthwise"])
    assert isinstance(model.head.act, nn.Identity) and isinstance(model.head.pointwise, pnn.FusedPointwise)
    assert model.get_submodule("body.1.0.0").pre_relu is False


class DartsCell(nn.Module):
    """A sum of DARTS ops built from ``namespace``, as in a DARTS MixedOp / cell edge."""

    def __init__(self, namespace, stride: int, c: int = 4) -> None:
        super().__init__()
        self.edges = nn.ModuleList(build(namespace, name, c, c, stride) for name in DARTS_CONVS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(edge(x) for edge in self.edges)


@pytest.mark.parametrize("stride", [1, 2])
def test_original_darts_ops_fuse(stride):
    torch.manual_seed(0)
    model = DartsCell(darts_original, stride).double()
    expected = ["edges.0.op.1", "edges.0.op.5", "edges.1.op.1", "edges.1.op.5", "edges.2.op.1", "edges.3.op.1"]
    fuse_and_check(model, randn(2, 4, 10, 10), expected)
    # Same as the package's own DARTS ops with the original's weights.
    ours = DartsCell(pnn, stride).double()
    torch.manual_seed(1)
    original = DartsCell(darts_original, stride).double()
    ours.load_state_dict(original.state_dict(), strict=True)
    x = randn(2, 4, 10, 10)
    assert_close(pnn.fuse_modules(original)(x), ours(x))


def test_package_darts_ops_are_left_alone():
    torch.manual_seed(0)
    model = DartsCell(pnn, 1)
    before = repr(model), copy.deepcopy(model.state_dict())
    assert pnn.find_fusable(model) == []
    pnn.fuse_modules(model)
    assert repr(model) == before[0]
    assert model.state_dict().keys() == before[1].keys()


@pytest.mark.parametrize("pw_bias", [False, True])
def test_depthwise_bias_keeps_its_parameter_and_trains(pw_bias):
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), dw(3, padding=1, bias=True), pw(3, 5, bias=pw_bias)).double()
    dw_bias, pw_bias_param = model[1].bias, model[2].bias
    fuse_and_check(model, randn(2, 3, 6, 6), ["1"])  # gradients of both biases included
    assert model[1].bias is dw_bias and model[2].bias is pw_bias_param


def test_pointwise_bias_is_the_same_parameter():
    model = nn.Sequential(dw(3, padding=1), pw(3, 5, bias=True))
    bias = model[1].bias
    pnn.fuse_modules(model)
    assert model[1].bias is bias and model[0].bias is None


def test_checkpoints_load_strictly_both_ways_with_the_original_darts_ops():
    """A checkpoint of the unmodified DARTS code loads into the fused model and the other way round, so
    fusing before or after loading makes no difference."""
    x = randn(2, 4, 10, 10)
    torch.manual_seed(1)
    trained = DartsCell(darts_original, 1).double()  # stands for a checkpoint of the user's DARTS code
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(randn(*p.shape, seed=p.numel()))
    expected = trained.eval()(x)

    torch.manual_seed(2)
    fused = pnn.fuse_modules(DartsCell(darts_original, 1).double())
    fused.load_state_dict(trained.state_dict(), strict=True)
    assert_close(fused.eval()(x), expected)

    torch.manual_seed(3)
    unfused = DartsCell(darts_original, 1).double()
    unfused.load_state_dict(fused.state_dict(), strict=True)
    assert_close(unfused.eval()(x), expected)
    # a file, as a training script writes it
    buffer = io.BytesIO()
    torch.save(fused.state_dict(), buffer)
    buffer.seek(0)
    unfused.load_state_dict(torch.load(buffer, weights_only=True), strict=True)


def test_fused_model_copies_moves_compiles_and_exports():
    torch.manual_seed(0)
    model = pnn.fuse_modules(mobilenet_like()).eval()
    x = randn(2, 3, 12, 12, dtype=torch.float32)
    expected = model(x)
    twin = copy.deepcopy(model)
    assert twin[3].pointwise is twin[4] and twin[4] is not model[4]  # the copy reads its own pointwise conv
    with torch.no_grad():
        twin[4].weight.mul_(2)
    assert not torch.allclose(twin(x), expected)
    double = copy.deepcopy(model).double()
    assert double[3].pointwise.weight.dtype == torch.float64
    assert_close(double(x.double()).float(), expected)
    assert_close(torch.compile(model, fullgraph=True, backend="eager")(x), expected)
    program = torch.export.export(model, (x,))
    assert_close(program.module()(x), expected)


@pytest.mark.parametrize(
    "conv",
    [
        {"kernel_size": 3, "stride": 2, "padding": 0},
        {"kernel_size": (3, 5), "stride": (2, 1), "padding": (1, 2)},
        {"kernel_size": 3, "padding": 2, "dilation": 2},
        {"kernel_size": (5, 3), "stride": (1, 3), "padding": (0, 3), "dilation": (2, 3)},
        {"kernel_size": 1, "stride": 2},
        {"kernel_size": 3, "padding": "valid"},
    ],
)
def test_stride_padding_dilation_variants(conv):
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, groups=4, bias=False, **conv), pw(4, 6)).double()
    fuse_and_check(model, randn(2, 4, 13, 11), ["1"])


def test_channels_last_input():
    torch.manual_seed(0)
    model = mobilenet_like().double().to(memory_format=torch.channels_last)
    x = randn(2, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    fuse_and_check(model, x, ["3", "7", "10"])
    # The checks compare output layouts too; this one is channels_last up to the pooling.
    features = model[:13](x)
    assert features.is_contiguous(memory_format=torch.channels_last)


class CustomConv(nn.Conv2d):
    """A Conv2d subclass may compute something else: never fused."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class Residual(nn.Sequential):
    """A Sequential subclass with its own forward: its entries are not a plain chain, never fused."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def with_hook(m: nn.Module) -> nn.Module:
    m.register_forward_hook(lambda module, args, out: out * 2)
    return m


NOT_FUSABLE = {
    "reflect padding": lambda: nn.Sequential(nn.ReLU(), dw(3, padding=1, padding_mode="reflect"), pw(3, 3)),
    "same padding": lambda: nn.Sequential(nn.ReLU(), dw(3, padding="same"), pw(3, 3)),
    "strided pointwise": lambda: nn.Sequential(dw(3, padding=1), pw(3, 3, stride=2)),
    "padded pointwise": lambda: nn.Sequential(dw(3, padding=1), pw(3, 3, padding=1)),
    "3x3 after depthwise": lambda: nn.Sequential(dw(3, padding=1), nn.Conv2d(3, 3, 3, padding=1)),
    "grouped pointwise": lambda: nn.Sequential(dw(4, padding=1), pw(4, 4, groups=2)),
    "grouped, not depthwise": lambda: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), pw(4, 4)),
    "depth multiplier 2": lambda: nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, groups=3), pw(6, 3)),
    "norm in between": lambda: nn.Sequential(dw(3, padding=1), nn.BatchNorm2d(3), pw(3, 3)),
    "pointwise first": lambda: nn.Sequential(nn.ReLU(), pw(3, 3), dw(3, padding=1)),
    "Conv2d subclass": lambda: nn.Sequential(nn.ReLU(), CustomConv(3, 3, 3, padding=1, groups=3), pw(3, 3)),
    "Sequential subclass": lambda: Residual(nn.ReLU(), dw(3, padding=1), pw(3, 3)),
    "hooked depthwise": lambda: nn.Sequential(nn.ReLU(), with_hook(dw(3, padding=1)), pw(3, 3)),
    "hooked pointwise": lambda: nn.Sequential(nn.ReLU(), dw(3, padding=1), with_hook(pw(3, 3))),
    "mixed dtypes": lambda: nn.Sequential(dw(3, padding=1), pw(3, 3).double(), nn.Flatten()),
}


@pytest.mark.parametrize("make", NOT_FUSABLE.values(), ids=NOT_FUSABLE.keys())
def test_models_without_a_match_are_unchanged(make):
    torch.manual_seed(0)
    model = make()
    before, state = repr(model), copy.deepcopy(model.state_dict())
    assert pnn.find_fusable(model) == []
    assert pnn.fuse_modules(model) is model
    assert repr(model) == before
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_hooked_relu_stays_and_is_not_absorbed():
    torch.manual_seed(0)
    calls = []
    relu = nn.ReLU()
    relu.register_forward_hook(lambda module, args, out: calls.append(1))
    model = nn.Sequential(relu, dw(3, padding=1), pw(3, 3)).double()
    fuse_and_check(model, randn(1, 3, 5, 5), ["1"])
    assert model[0] is relu and model[1].pre_relu is False
    assert calls  # the hook still runs


def test_pointwise_padding_mode_is_irrelevant():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), dw(3, padding=1), pw(3, 4, padding_mode="reflect")).double()
    fuse_and_check(model, randn(1, 3, 5, 5), ["1"])


def test_shared_sequential_is_fused_once():
    torch.manual_seed(0)
    block = nn.Sequential(nn.ReLU(), dw(3, padding=1), pw(3, 3))
    model = nn.Sequential(block, nn.BatchNorm2d(3), block).double()
    assert pnn.find_fusable(model) == ["0.1"]
    x = randn(2, 3, 6, 6)
    expected = copy.deepcopy(model).eval()(x)
    pnn.fuse_modules(model)
    assert model[0] is model[2] and isinstance(model[2][1], pnn.FusedSepConv2d)
    assert_close(model.eval()(x), expected)


def test_second_call_fuses_nothing_and_counts_are_logged(caplog):
    torch.manual_seed(0)
    model = mobilenet_like()
    with caplog.at_level(logging.INFO, logger="pyaccel_nas.nn.fuse"):
        pnn.fuse_modules(model)
        fused_repr = repr(model)
        pnn.fuse_modules(model)
    assert repr(model) == fused_repr
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "fuse_modules: fused 3 sequence(s): ['3', '7', '10']; swapped 3 BatchNorm and pooling module(s)",
        "fuse_modules: fused 0 sequence(s): []; swapped 0 BatchNorm and pooling module(s)",
    ]


def test_fused_model_runs_reference_ops_too():
    torch.manual_seed(0)
    model = pnn.fuse_modules(mobilenet_like().double()).eval()
    x = randn(2, 3, 12, 12)
    fused = model(x)
    assert_close(pnn.set_fused(model, False)(x), fused)
    assert all(not m.fused for m in model.modules() if isinstance(m, pnn.FusedSepConv2d))


def test_training_mode_is_kept():
    model = mobilenet_like().eval()
    pnn.fuse_modules(model)
    assert not any(m.training for m in model.modules())
