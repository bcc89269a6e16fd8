"""torchvision's ResNet-18, ResNet-50 and MobileNetV2 as MDP networks: traced with torch.fx into MDP's blocks
(the same outputs, exactly), refused with the first layer named where they do not fit, and run end to end
by ``prune --model`` (convert, search, prune physically, fine-tune, export)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyaccel_nas.mdp import ConversionError, MDPNet, config_from_module, export_model, load_model
from pyaccel_nas.mdp.convert import import_torchvision, torchvision_model

ROOT = Path(__file__).resolve().parents[1]

try:
    torchvision = import_torchvision()
except ImportError:
    pytest.skip("torchvision is not installed (pip install -e '.[test]' installs it)", allow_module_level=True)


def randomised_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with random BatchNorm statistics and affine parameters: a conversion that
    dropped or misplaced one would show."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("name, blocks, dropout", [
    ("resnet18", {"conv": 1, "maxpool": 1, "residual": 8}, 0.0),
    ("resnet50", {"conv": 1, "maxpool": 1, "bottleneck": 16}, 0.0),
    ("mobilenet_v2", {"conv": 2, "inverted_residual": 17}, 0.2),
])
def test_torchvision_networks_convert_to_the_same_function(name, blocks, dropout):
    model = randomised_batchnorms(torchvision_model(name, num_classes=7))
    config, state = config_from_module(model, (32, 32), name)
    kinds = [b.type for b in config.blocks]
    assert {kind: kinds.count(kind) for kind in set(kinds)} == blocks
    assert (config.in_channels, config.num_classes, config.dropout) == (3, 7, dropout)
    net = MDPNet(config)
    net.load_state_dict(state)  # strict: every weight has its place
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(net.eval()(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_mobilenet_v2_blocks_keep_their_shortcuts_and_expansion():
    config, _ = config_from_module(torchvision_model("mobilenet_v2", num_classes=10), (32, 32))
    inverted = [b for b in config.blocks if b.type == "inverted_residual"]
    assert not inverted[0].expand and all(b.expand for b in inverted[1:])  # expansion 1, then 6
    # a shortcut exactly where torchvision has one: stride 1 and as many input as output channels
    assert sum(b.shortcut for b in inverted) == 10
    assert [b.stride for b in inverted if not b.shortcut][:3] == [(1, 1), (2, 2), (2, 2)]


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x


def _dilated_resnet18() -> nn.Module:
    model = torchvision_model("resnet18", num_classes=10)
    model.layer2[0].conv1 = nn.Conv2d(64, 128, 3, stride=2, padding=2, dilation=2, bias=False)
    return model


def _gelu_resnet18() -> nn.Module:
    model = torchvision_model("resnet18", num_classes=10)
    model.layer3[1].relu = nn.GELU()
    return model


@pytest.mark.parametrize("build, message", [
    (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), r"layer 'features\.0\.2' \(Hardswish\)"),
    (lambda: torchvision.models.vgg11(num_classes=10), r"layer 'features\.0' \(Conv2d\): a conv must be followed "
                                                       r"by an affine BatchNorm"),
    (_dilated_resnet18, r"layer 'layer2\.0\.conv1' \(Conv2d\): only convs with odd kernels, padding k // 2, no "
                        r"dilation"),
    (_gelu_resnet18, r"layer 'layer3\.1\.relu' \(GELU\)"),
    (Branchy, "cannot trace the model with torch.fx"),
])
def test_what_mdp_cannot_express_is_refused_naming_the_first_layer(build, message):
    with pytest.raises(ConversionError, match=message):
        config_from_module(build(), (32, 32))


def test_an_input_too_small_for_the_network_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(4),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    assert config_from_module(model, (4, 4))[0].blocks[1].kernel == (4, 4)
    with pytest.raises(ConversionError, match=r"input size \(2, 2\): block 1 \(maxpool\): pool \(4, 4\) is larger"):
        config_from_module(model, (2, 2))


def test_a_functional_relu_and_flatten_method_convert():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1))

    model = randomised_batchnorms(Net())
    config, state = config_from_module(model, (8, 8))
    net = MDPNet(config)
    net.load_state_dict(state)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(net.eval()(x), model(x))


@pytest.mark.parametrize("model, flags", [("resnet18", []), ("mobilenet_v2", []), ("resnet50", ["--no-channel-only"])])
def test_prune_runs_torchvision_networks_end_to_end(model, flags, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # a sliver of the data (60 training samples): what is checked is what the run produced, not accuracy
    done = subprocess.run(
        [sys.executable, "-m", "pyaccel_nas.cli", "prune", "--preset", "smoke", "--model", model, "--dataset",
         "fashion-mnist", "--image-size", "32", "--train-divisor", "1000", *flags, "--out", str(out), "--quiet"],
        env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["input"] == [1, 32, 32]
    assert report["macs"]["after"] <= report["macs"]["before"] / 2
    # Lower resolutions alone may meet the MAC budget (then no channel goes, which differs by CPU after one
    # epoch); whatever channels the report says went are gone from the saved network, not masked
    pruned = load_model(out / "pruned.pt")
    narrowed = any(row[key] < row[key.replace("_after", "_before")]
                   for row in report["blocks"] for key in row if key.endswith("_after"))
    assert (report["params"]["after"] < report["params"]["before"]) == narrowed
    assert sum(p.numel() for p in pruned.parameters()) == report["params"]["after"]
    assert ("channel_only" in report) == (not flags)
    if not flags:  # channel-only pruning at the same MACs has only channels to remove
        assert report["channel_only"]["params"] < report["params"]["before"]
    assert pruned.config.name == model and all(len(b.factors) == 1 for b in pruned.config.blocks if b.prunable)
    exported = export_model(pruned, batch=2, fold=True)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(exported.module()(x), pruned(x), rtol=1e-4, atol=1e-4)
