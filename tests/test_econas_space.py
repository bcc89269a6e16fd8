"""EcoNAS search space: genotype validity, serialisation, mutation; proxies; the macro network."""

from __future__ import annotations

import json
import random

import pytest
import torch

from pyaccel_nas.econas.genotype import PRIMITIVES, Genotype, GenotypeError
from pyaccel_nas.econas.network import Network, NetworkConfig
from pyaccel_nas.econas.operations import FactorizedReduce, ReLUConvBN
from pyaccel_nas.econas.plots import draw_genotype
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.nn import count_macs, set_fused


def test_random_genotypes_are_valid_and_cover_the_space():
    rng = random.Random(0)
    genotypes = [Genotype.random(rng) for _ in range(200)]
    ops = {op for g in genotypes for op, _ in g.normal + g.reduce}
    assert ops == set(PRIMITIVES)
    for g in genotypes:
        for index, (_, source) in enumerate(g.normal + g.reduce):
            assert 0 <= source < (index % 8) // 2 + 2
        assert g.normal_concat and 5 in g.normal_concat  # the last node is never an input


def test_genotype_is_a_hashable_value_with_json_round_trip(tmp_path):
    g = Genotype.random(random.Random(1))
    assert Genotype.from_json(g.to_json()) == g and hash(Genotype.from_json(g.to_json())) == hash(g)
    g.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == g
    assert len({g, Genotype.from_dict(g.to_dict())}) == 1
    with pytest.raises(AttributeError):
        g.normal = g.reduce  # frozen
    assert "node 2 =" in str(g) and "reduce cell" in str(g)


def test_unused_nodes_form_the_output():
    normal = [("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 2), ("none", 0),
              ("avg_pool_3x3", 1), ("max_pool_3x3", 1), ("dil_conv_3x3", 3), ("dil_conv_5x5", 0)]
    g = Genotype(normal=tuple(normal), reduce=tuple(normal))
    assert g.normal_concat == (4, 5)


@pytest.mark.parametrize(
    "mutation,message",
    [
        (lambda d: d["normal"].pop(), "must list 8"),
        (lambda d: d["normal"].__setitem__(0, ["conv_7x7", 0]), "unknown operation"),
        (lambda d: d["reduce"].__setitem__(1, ["skip_connect", 2]), r"input must be an int in \[0, 2\)"),
        (lambda d: d["reduce"].__setitem__(7, ["skip_connect", 6]), r"input must be an int in \[0, 5\)"),
        (lambda d: d["normal"].__setitem__(2, ["skip_connect", "1"]), "input must be an int"),
        (lambda d: d.__setitem__("normal_concat", [2, 3, 4, 5]), "does not match the unused nodes"),
        (lambda d: d.pop("reduce"), "`normal` and `reduce`"),
    ],
)
def test_bad_genotype_files_give_clear_errors(tmp_path, mutation, message):
    data = Genotype.random(random.Random(2)).to_dict()
    mutation(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GenotypeError, match=message):
        Genotype.load(path)


def test_not_json_is_a_genotype_error(tmp_path):
    (tmp_path / "g.json").write_text("import os; os.system('echo pwned')")
    with pytest.raises(GenotypeError, match="not a JSON genotype"):
        Genotype.load(tmp_path / "g.json")


def test_mutation_changes_exactly_one_edge_and_never_the_parent():
    rng = random.Random(3)
    rewires = swaps = 0
    for _ in range(300):
        parent = Genotype.random(rng)
        before = parent.to_json()
        child = parent.mutate(rng)
        assert parent.to_json() == before
        diffs = [(a, b) for a, b in zip(parent.normal + parent.reduce, child.normal + child.reduce) if a != b]
        assert len(diffs) == 1
        (old_op, old_in), (new_op, new_in) = diffs[0]
        rewires += old_op == new_op and old_in != new_in
        swaps += old_op != new_op and old_in == new_in
    assert rewires + swaps == 300 and 100 < rewires < 200


def test_draw_genotype_writes_png(tmp_path):
    path = draw_genotype(Genotype.random(random.Random(4)), tmp_path / "cell.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_proxy_notation_and_application():
    p = Proxy.parse("c4r4s0e60")
    assert (p.channels, p.resolution, p.samples, p.epochs) == (4, 4, 0, 60) and str(p) == "c4r4s0e60"
    assert p.channels_of(36) == 9 and p.resolution_of(32) == 8 and p.samples_of(50_000) == 50_000
    assert Proxy.parse("c0r2s4e10").samples_of(50_000) == 12_500
    assert p.cost(macs_per_image=1000, train_images=100) == 1000 * 100 * 60 * 3
    assert Proxy.parse("c0r0s2e5").cost(1000, 100, epochs=2) == 1000 * 50 * 2 * 3
    for bad in ["c4r4s0", "c4r4s0e0", "4r4s0e60", "c-1r4s0e60", "", None]:
        with pytest.raises(ValueError):
            Proxy.parse(bad)


@pytest.mark.parametrize("resolution", [8, 7, 28])
def test_network_fused_and_reference_agree(resolution):
    g = Genotype.random(random.Random(5))
    config = NetworkConfig(channels=9, layers=5, in_channels=1, num_classes=10)
    torch.manual_seed(0)
    fused = Network(g, config).double()
    reference = set_fused(Network(g, config).double(), False)
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(4, 1, resolution, resolution, dtype=torch.float64)
    y_fused, y_ref = fused(x), reference(x)
    assert y_fused.shape == (4, 10)
    torch.testing.assert_close(y_fused, y_ref, rtol=1e-9, atol=1e-9)
    y_fused.square().sum().backward()
    y_ref.square().sum().backward()
    for (name, a), (_, b) in zip(fused.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-9, msg=name)


def test_network_reductions_and_macs():
    config = NetworkConfig(channels=8, layers=6, in_channels=3)
    assert config.reduction_layers == (2, 4)
    net = Network(Genotype.random(random.Random(6)), config)
    macs_32 = count_macs(net, torch.randn(1, 3, 32, 32))
    macs_16 = count_macs(net, torch.randn(1, 3, 16, 16))
    assert 3.5 < macs_32 / macs_16 < 4.5  # MACs scale with the number of pixels
    with pytest.raises(ValueError, match="`channels` must be a positive int"):
        NetworkConfig(channels=0)


@pytest.mark.parametrize("make, channels, side, runs_fused", [
    (lambda: ReLUConvBN(6, 5, 1, 1, 0), 6, 7, True),
    (lambda: FactorizedReduce(6, 5), 6, 7, True),  # odd: the shifted conv reads a row and column of padding
    (lambda: FactorizedReduce(6, 5), 6, 8, True),  # even: it reads x's odd rows and columns alone
    (lambda: ReLUConvBN(6, 5, 1, 2, 0), 6, 7, True),
    (lambda: ReLUConvBN(256, 5, 1, 1, 0), 256, 8, True),
    (lambda: FactorizedReduce(256, 5), 256, 16, True),
    (lambda: ReLUConvBN(6, 5, 3, 1, 1), 6, 7, False),  # a 3x3 conv: the modules run as they are
])
def test_cell_preprocessing_runs_fused_with_the_unfused_state_outputs_gradients_and_macs(make, channels, side,
                                                                                         runs_fused):
    """ReLU -> 1x1 conv of ReLUConvBN and FactorizedReduce runs as one sep_conv2d when fused (where that is
    faster); its identity depthwise weights are a buffer outside the state_dict, so checkpoints and MAC
    counts are unchanged."""
    torch.manual_seed(0)
    fused = make().double()
    reference = set_fused(make().double(), False)
    reference.load_state_dict(fused.state_dict())
    assert "identity" not in "".join(fused.state_dict()) and fused.identity.dtype == torch.float64
    x = torch.randn(3, channels, side, side, dtype=torch.float64, requires_grad=True)
    with torch.profiler.profile() as prof:
        y = fused(x)
    assert any(e.key == "pyaccel_nas::sep_conv2d" for e in prof.key_averages()) == runs_fused
    torch.testing.assert_close(y, reference(x), rtol=1e-9, atol=1e-9)
    g = torch.randn_like(y)
    fused_grads = torch.autograd.grad(y, [x, *fused.parameters()], g)
    for a, b in zip(fused_grads, torch.autograd.grad(reference(x), [x, *reference.parameters()], g)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)
    assert count_macs(fused, x) == count_macs(reference, x) > 0
