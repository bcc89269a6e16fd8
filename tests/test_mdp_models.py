"""MDP networks: configs as validated JSON, the resolution branches and gates of each block, user models."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mdp_helpers import example, mixed_config, randomised
from pyaccel_nas.mdp import ArchConfig, MDPNet, config_from_module, model_config, over_parameterise, plain
from pyaccel_nas.mdp.models import load_plain_weights
from pyaccel_nas.mdp.layers import ConvBlock
from pyaccel_nas.nn import ChannelGate, count_macs


@pytest.mark.parametrize("name", ["resnet20", "vgg", "c3d", "i3d", "mixed"])
def test_config_json_round_trip_rebuilds_the_same_network(name):
    net = randomised(name)
    config = ArchConfig.from_json(net.config.to_json())
    assert config == net.config
    rebuilt = MDPNet(config)
    rebuilt.load_state_dict(net.state_dict())
    x = example(net)
    torch.testing.assert_close(rebuilt.eval()(x), net(x), rtol=0, atol=0)


def test_resnet_depths_and_sizes():
    for depth, blocks in ((20, 9), (56, 27)):
        config = model_config(f"resnet{depth}", in_channels=3, num_classes=10, input_size=(32, 32))
        assert sum(b.type == "residual" for b in config.blocks) == blocks
    x = torch.randn(1, 1, 28, 28)
    macs = count_macs(MDPNet(model_config("resnet20", in_channels=1, num_classes=10, input_size=(28, 28))), x)
    assert 25e6 < macs < 40e6  # ResNet-20 is ~41 MMACs at 32x32; 28x28 has 0.77 of the pixels


def test_over_parameterise_keeps_only_factors_that_fit():
    config = over_parameterise(model_config("resnet20", in_channels=1, num_classes=10, input_size=(28, 28)))
    factors = {i: b.factors for i, b in enumerate(config.blocks)}
    assert factors[0] == ((1, 1), (2, 2), (4, 4))  # 28 -> 7 and back
    assert factors[4] == ((1, 1), (2, 2))  # stride 2 on 28: 14 out; 28/4 = 7 gives 4, which does not upsample to 14
    assert factors[7] == ((1, 1),)  # 14 -> 7 out: 14/2 = 7 gives 4 (padding), not 7/2
    assert factors[9] == ((1, 1),)  # 7x7: nothing divides it
    assert all(b.gated for b in config.blocks) and plain(config) == model_config(
        "resnet20", in_channels=1, num_classes=10, input_size=(28, 28))
    c3d = over_parameterise(model_config("c3d", in_channels=1, num_classes=10, input_size=(8, 32, 32)))
    assert c3d.blocks[0].factors == ((1, 1, 1), (1, 2, 2), (2, 2, 2))


@pytest.mark.parametrize("bad, message", [
    (lambda d: d.update(format="other/1"), "format"),
    (lambda d: d["blocks"][0].update(out=0), "out"),
    (lambda d: d["blocks"][0].update(kernel=[2, 2]), "odd"),
    (lambda d: d["blocks"][0].update(extra=1), "keys"),
    (lambda d: d["blocks"][1].update(factors=[[1, 1], [3, 3]]), "factor"),
    (lambda d: d["blocks"][0].update(factors=[[2, 2], [1, 1]]), "first"),
    (lambda d: d.update(input_size=[28]), "input_size"),
])
def test_config_validation_names_the_problem(bad, message):
    data = over_parameterise(model_config("resnet20", in_channels=1, num_classes=10, input_size=(28, 28))).to_dict()
    bad(data)
    with pytest.raises(ValueError, match=message):
        ArchConfig.from_json(json.dumps(data))


@pytest.mark.parametrize("content, message", [
    (b"[" * 100_000, "not JSON: nested too deeply"),
    (b"\xff{}", "not JSON: 'utf-8' codec can't decode"),
    (json.dumps({"format": "x" * 5_000_000}).encode(), "expected an object with keys"),
    (json.dumps({**model_config("vgg", in_channels=1, num_classes=10, input_size=(28, 28)).to_dict(),
                 "input_size": list(range(1_000_000))}).encode(), r"got \[0, 1, 2, .*\.\.\.\]$"),
])
def test_a_malformed_config_file_is_a_short_error_naming_it(tmp_path, content, message):
    path = tmp_path / "pruned.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        ArchConfig.load(path)
    assert str(error.value).startswith(f"{path}: ") and len(str(error.value)) < 400


def test_identity_shortcut_with_channel_change_is_refused():
    config = model_config("resnet20", in_channels=1, num_classes=10, input_size=(16, 16))
    data = config.to_dict()
    data["blocks"][4]["projection"] = False
    with pytest.raises(ValueError, match="block 4 .*identity shortcut"):
        MDPNet(ArchConfig.from_dict(data))


@pytest.mark.parametrize("bad, message", [
    (lambda d: d["blocks"][0].update(activation="gelu"), "activation"),
    (lambda d: d.update(dropout=1.0), "dropout"),
    (lambda d: d["blocks"][1].update(stride=[0, 1]), "stride"),
    (lambda d: d["blocks"][1].update(padding=[2, 2]), "padding .* more than half"),
    (lambda d: d["blocks"][2].pop("mid2"), "keys"),
    (lambda d: d["blocks"][4].update(expand=1), "expand.* bool"),
    (lambda d: d["blocks"][6].update(shortcut=True), "block 6 .*identity shortcut needs"),
    (lambda d: d["blocks"][4].update(mid=8), "block 4 .*without `expand`.* `mid` must be its 16"),
])
def test_the_torchvision_block_types_are_validated(bad, message):
    data = mixed_config().to_dict()
    assert ArchConfig.from_dict(json.loads(json.dumps(data))) == mixed_config()  # pools, dropout round-trip
    bad(data)
    with pytest.raises(ValueError, match=message):
        MDPNet(ArchConfig.from_dict(data))


@pytest.mark.parametrize("bad, message", [
    (lambda b: b.update(out=100), "`out` is the sum of its columns b0, b1, b2, b3: 64"),
    (lambda b: b.update(columns=[16, 24, 32, 4, 8]), "columns"),
    (lambda b: b.update(stride=[1, 2, 2]), "stride 1"),
])
def test_inception_blocks_are_validated(bad, message):
    data = model_config("i3d", in_channels=1, num_classes=10, input_size=(8, 32, 32)).to_dict()
    assert data["blocks"][4] == {"type": "inception", "out": 64, "columns": [16, 24, 32, 4, 8, 8], "gated": False,
                                 "stride": [1, 1, 1], "factors": [[1, 1, 1]]}
    bad(data["blocks"][4])
    with pytest.raises(ValueError, match=message):
        ArchConfig.from_dict(data)


def test_configs_saved_before_the_new_fields_keep_their_digest():
    """Defaults stay out of the JSON: the config files of networks saved before ``dropout``, ``activation`` and
    the pools' stride and padding existed still match the digest stored with their weights."""
    data = model_config("vgg", in_channels=1, num_classes=10, input_size=(28, 28)).to_dict()
    assert "dropout" not in data and data["blocks"][2] == {"type": "maxpool", "kernel": [2, 2]}
    assert set(data["blocks"][0]) == {"type", "out", "kernel", "stride", "factors", "gated"}


def _reference_mix(x, factors, branch, logits, dims):
    """sum_k softmax(logits)_k * nearest-upsample(branch(avgpool(x, f_k), k)), in plain PyTorch."""
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    outputs = [branch(pool(x, f, f), k) for k, f in enumerate(factors)]
    size = outputs[0].shape[2:]
    weights = torch.softmax(logits, 0)
    return sum(w * F.interpolate(o, size=size, mode="nearest") for w, o in zip(weights, outputs))


@pytest.mark.parametrize("name", ["resnet20", "c3d"])
def test_blocks_mix_resolution_branches_with_shared_convs_and_gates(name):
    net = randomised(name, seed=1)
    checked = 0
    x = torch.randn(2, net.config.in_channels, *net.config.input_size)
    for i, block in net.prunable_blocks():
        dims = net.config.dims
        if isinstance(block, ConvBlock):
            def branch(y, k, b=block):
                return b.bns[k](b.conv(y)) * b.gate.gate.view(1, -1, *[1] * dims)
            expected = F.relu(_reference_mix(x, block.factors, branch, block.mix.logits, dims)) \
                if block.mix is not None else None
        else:
            def branch(y, k, b=block):
                shape = (1, -1, *[1] * dims)
                h = F.relu(b.bn1s[k](b.conv1(y)) * b.gate1.gate.view(shape))
                return b.bn2s[k](b.conv2(h)) * b.gate2.gate.view(shape)
            shortcut = block.shortcut(x) if isinstance(block.shortcut, nn.Sequential) else x
            expected = F.relu(_reference_mix(x, block.factors, branch, block.mix.logits, dims) + shortcut) \
                if block.mix is not None else None
        if expected is not None:
            torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
            checked += 1
        x = block(x)
    assert checked >= 2
    gates = [m for m in net.modules() if isinstance(m, ChannelGate)]
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert len(gates) == len(convs)  # a gate on every conv output


def test_gate_and_branch_weights_reach_the_output_and_get_gradients():
    net = randomised("resnet20").train()
    loss = net(example(net)).square().sum()
    loss.backward()
    for i, block in net.prunable_blocks():
        for gate in block.gates():
            assert gate.gate.grad is not None and gate.gate.grad.abs().sum() > 0, f"block {i}"
        if block.mix is not None:
            assert block.mix.logits.grad.abs().sum() > 0, f"block {i}"


def _user_model(dims=2):
    conv, bn, pool, gap = ((nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d) if dims == 2 else
                           (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d))
    torch.manual_seed(3)
    model = nn.Sequential(conv(2, 8, 3, padding=1, bias=True), bn(8), nn.ReLU(), pool(2),
                          conv(8, 12, 5, padding=2, bias=False), bn(12), nn.ReLU(),
                          gap(1), nn.Flatten(), nn.Linear(12, 5))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_(1, 0.2)
    return model.eval()


@pytest.mark.parametrize("dims", [2, 3])
def test_a_user_sequential_model_converts_with_its_weights(dims):
    model = _user_model(dims)
    size = (8, 8) if dims == 2 else (4, 8, 8)
    config, state = config_from_module(model, size)
    net = MDPNet(config)
    net.load_state_dict(state)
    x = torch.randn(3, 2, *size)
    torch.testing.assert_close(net.eval()(x), model(x), rtol=1e-5, atol=1e-5)
    over = load_plain_weights(MDPNet(over_parameterise(config)), state).eval()
    assert len(over.blocks[0].factors) == 3
    # with every branch but the full-resolution one switched off, the over-parameterised net is the user's
    with torch.no_grad():
        for _, block in over.prunable_blocks():
            block.mix.logits.copy_(torch.tensor([0.0] + [float("-inf")] * (len(block.factors) - 1)))
    torch.testing.assert_close(over(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change, layer", [
    (lambda m: m.__setitem__(4, nn.Conv2d(8, 12, 3, padding=1, groups=4)), "'4'"),
    (lambda m: m.__setitem__(5, nn.Identity()), "'4'"),
    (lambda m: m.__setitem__(2, nn.Sigmoid()), "'2'"),
    (lambda m: m.__setitem__(3, nn.AvgPool2d(2)), "'3'"),
    (lambda m: m.__setitem__(9, nn.Linear(10, 5)), "'9'"),
])
def test_a_user_model_mdp_cannot_handle_is_refused_naming_the_layer(change, layer):
    model = _user_model()
    change(model)
    with pytest.raises(ValueError, match=f"layer {layer}"):
        config_from_module(model, (8, 8))
