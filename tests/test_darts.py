"""DARTS under EcoNAS proxies: alpha gradients, genotype derivation, fused = reference, memory, resume, CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.func import functional_call
from test_training_memory import saved_storages

import pyaccel_nas.darts
from pyaccel_nas import cli
from pyaccel_nas.darts.run import CHECKPOINT_NAME, run_darts
from pyaccel_nas.darts.search import DartsConfig, DartsSearch, split_halves
from pyaccel_nas.darts.supernet import EDGES, MixedOp, Supernet, derive_genotype, edge_index
from pyaccel_nas.econas.evaluation import DataSpec, proxied_dataset
from pyaccel_nas.econas.genotype import PRIMITIVES, Genotype
from pyaccel_nas.econas.network import NetworkConfig
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.nn import count_macs, set_fused

TINY = dict(dataset="digits", proxy="c2r0s4e2", channels=8, layers=3, batch_size=128, final_top=0)
OP = {name: k for k, name in enumerate(PRIMITIVES)}


def tiny_supernet(dtype=torch.float64, seed=0) -> Supernet:
    torch.manual_seed(seed)
    model = Supernet(NetworkConfig(channels=3, layers=3, in_channels=2, num_classes=4)).to(dtype)
    with torch.no_grad():  # alphas far from uniform, so every softmax weight matters
        for alpha in model.arch_parameters():
            alpha.normal_()
    return model


def batch(dtype=torch.float64, n=6, size=8, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, size, size, generator=generator, dtype=dtype)
    return x, torch.randint(0, 4, (n,), generator=generator)


# --- alpha gradients ----------------------------------------------------------------------------------------


def test_mixed_op_gradcheck_inputs_and_weights():
    torch.manual_seed(0)
    op = MixedOp(2, stride=1).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(PRIMITIVES), dtype=torch.float64).softmax(0).requires_grad_()
    assert torch.autograd.gradcheck(op, (x, weights))
    # 'none' is not computed yet keeps its place in the softmax: its weight has no effect and no gradient
    (grad,) = torch.autograd.grad(op(x, weights).square().sum(), weights)
    assert grad[OP["none"]] == 0 and (grad[1:] != 0).all()


@pytest.mark.parametrize("fused", [True, False])
def test_alpha_gradient_matches_finite_differences(fused):
    model = set_fused(tiny_supernet(), fused)
    x, y = batch()
    alphas = model.arch_parameters()

    def loss(values):
        return torch.nn.functional.cross_entropy(
            functional_call(model, dict(zip(["alphas_normal", "alphas_reduce"], values)), (x,)), y)

    grads = torch.autograd.grad(loss(alphas), alphas)
    assert all(g.abs().sum() > 0 for g in grads)
    generator = torch.Generator().manual_seed(2)
    h = 1e-5
    for _ in range(3):  # directional derivatives along random directions of both alpha tensors
        direction = [torch.randn(a.shape, generator=generator, dtype=a.dtype) for a in alphas]
        with torch.no_grad():
            numeric = (loss([a + h * d for a, d in zip(alphas, direction)])
                       - loss([a - h * d for a, d in zip(alphas, direction)])) / (2 * h)
        analytic = sum((g * d).sum() for g, d in zip(grads, direction))
        torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_unrolled_gradient_matches_exact_second_order(tmp_path):
    """DARTS' finite-difference Hessian-vector product against the exact second-order gradient (autograd
    through the virtual step), in float64. The fused ops have no double backward, so the exact gradient is
    taken on the reference ops; the unrolled step needs none (it only takes first derivatives). The ReLUs
    and max-pools of so small a network have kinks within DARTS' finite-difference step (0.01 in norm), so
    the estimate is checked at a small step, where it must converge to the exact value."""
    dataset = proxied_dataset(DataSpec("digits"), Proxy.parse("c2r0s0e2"))
    search = DartsSearch(DartsConfig(**TINY, unrolled=True), dataset)
    search.model.double()
    model = search.model
    with torch.no_grad():
        for alpha in model.arch_parameters():
            alpha.normal_()
    x, y = (t.double() if t.is_floating_point() else t for t in next(search.halves.batches("train", 16)))
    x_arch, y_arch = (t.double() if t.is_floating_point() else t for t in next(search.halves.batches("val", 16)))
    eta = 0.05
    names = [n for n, _ in model.named_parameters() if not n.startswith("alphas_")]
    weights = model.weight_parameters()
    alphas = model.arch_parameters()
    buffers = dict(model.named_buffers())

    def loss(w, a, xb, yb):
        state = {**dict(zip(names, w)), "alphas_normal": a[0], "alphas_reduce": a[1],
                 **{n: b.clone() for n, b in buffers.items()}}
        return torch.nn.functional.cross_entropy(functional_call(model, state, (xb,)), yb)

    set_fused(model, False)
    grads = torch.autograd.grad(loss(weights, alphas, x, y), weights, create_graph=True)
    virtual = [w - eta * (g + search.config.weight_decay * w) for w, g in zip(weights, grads)]
    exact = torch.autograd.grad(loss(virtual, alphas, x_arch, y_arch), alphas)
    first_order = torch.autograd.grad(loss(weights, alphas, x_arch, y_arch), alphas)
    set_fused(model, True)
    approx = search._unrolled_arch_gradient(x_arch, y_arch, x, y, eta, epsilon=1e-7)
    for a, e, f in zip(approx, exact, first_order):
        # the second-order term is real (the first-order gradient differs) and the estimate finds it
        assert (e - f).norm() > 1e-2 * e.norm()
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-7)


# --- genotype derivation ------------------------------------------------------------------------------------


def hand_made_alphas(choices: dict[tuple[int, int], tuple[str, float]]) -> torch.Tensor:
    """Alphas where edge (node, source) prefers op with logit value; every other logit is 0."""
    alphas = torch.zeros(EDGES, len(PRIMITIVES))
    for (node, source), (op, value) in choices.items():
        alphas[edge_index(node, source), OP[op]] = value
    return alphas


def test_derivation_keeps_strongest_non_none_ops_and_two_strongest_inputs():
    normal = hand_made_alphas({
        (0, 0): ("sep_conv_3x3", 3.0), (0, 1): ("skip_connect", 2.0),
        (1, 0): ("none", 9.0), (1, 1): ("dil_conv_5x5", 1.0), (1, 2): ("max_pool_3x3", 4.0),
        (2, 3): ("avg_pool_3x3", 5.0), (2, 0): ("sep_conv_5x5", 4.5), (2, 1): ("dil_conv_3x3", 1.0),
        (3, 4): ("sep_conv_3x3", 2.0), (3, 2): ("skip_connect", 1.5), (3, 0): ("skip_connect", 1.0),
    })
    # edge (1, 0) is dominated by 'none': its best other op is weak, so node 1 takes inputs 1 and 2
    normal[edge_index(1, 0), OP["sep_conv_3x3"]] = 0.5
    reduce = hand_made_alphas({(node, source): ("max_pool_3x3", 1.0 + source) for node in range(4)
                               for source in range(node + 2)})
    genotype = derive_genotype(normal, reduce)
    assert isinstance(genotype, Genotype)
    assert genotype.normal == (
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("dil_conv_5x5", 1), ("max_pool_3x3", 2),
        ("sep_conv_5x5", 0), ("avg_pool_3x3", 3),
        ("skip_connect", 2), ("sep_conv_3x3", 4),
    )
    # reduction cell: the two latest inputs of every node, each with max_pool_3x3
    assert genotype.reduce == tuple(("max_pool_3x3", s) for node in range(4) for s in (node, node + 1))
    assert Genotype.from_json(genotype.to_json()) == genotype


def test_skip_cap_replaces_the_weakest_skips_by_their_next_best_op():
    normal = hand_made_alphas({(node, source): ("skip_connect", 1.0 + node + 0.1 * source)
                               for node in range(4) for source in range(node + 2)})
    for node in range(4):  # each edge's runner-up: a distinct op, weaker than its skip
        for source in range(node + 2):
            normal[edge_index(node, source), OP[("sep_conv_3x3", "dil_conv_3x3")[source % 2]]] = 0.5
            normal[edge_index(node, source), OP["none"]] = 20.0  # 'none' never comes back as a replacement
    reduce = torch.randn(EDGES, len(PRIMITIVES))
    uncapped = derive_genotype(normal, reduce)
    assert [op for op, _ in uncapped.normal] == ["skip_connect"] * 8
    capped = derive_genotype(normal, reduce, max_skips=2)
    # the two strongest skips (node 3, inputs 3 and 4) stay; the others take their edge's runner-up
    assert [source for _, source in capped.normal] == [source for _, source in uncapped.normal]
    assert capped.normal[6:] == (("skip_connect", 3), ("skip_connect", 4))
    assert capped.normal[:6] == tuple((("sep_conv_3x3", "dil_conv_3x3")[s % 2], s) for _, s in uncapped.normal[:6])
    assert derive_genotype(normal, reduce, max_skips=0).normal[6:] == (("dil_conv_3x3", 3), ("sep_conv_3x3", 4))
    assert capped.reduce == uncapped.reduce  # the cap is on the normal cell


def test_derivation_rejects_bad_alphas():
    good = torch.zeros(EDGES, len(PRIMITIVES))
    with pytest.raises(ValueError, match="alphas_normal"):
        derive_genotype(torch.zeros(EDGES, 7), good)
    with pytest.raises(ValueError, match="alphas_reduce.*non-finite"):
        derive_genotype(good, torch.full((EDGES, len(PRIMITIVES)), float("nan")))
    with pytest.raises(ValueError, match="max_skips"):
        derive_genotype(good, good, max_skips=-1)
    with pytest.raises(ValueError, match="max_skips"):
        DartsConfig(max_skips=-1)


# --- fused = reference, memory ------------------------------------------------------------------------------


def test_fused_and_reference_supernet_step_agree():
    fused = tiny_supernet()
    reference = set_fused(copy.deepcopy(fused), False)
    x, y = batch()
    outputs, grads = [], []
    for model in (fused, reference):
        logits = model(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        outputs.append(logits)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-9, atol=1e-9)
    assert grads[0].keys() == grads[1].keys() and "alphas_normal" in grads[0]
    for name in grads[0]:
        assert grads[0][name].abs().sum() > 0, name
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-8, atol=1e-9, msg=name)
    # the same MACs are counted either way (the cost does not depend on the implementation)
    x1 = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    assert count_macs(fused, x1) == count_macs(reference, x1) > 0


def test_fused_supernet_keeps_at_least_30_percent_less_for_backward():
    """The activation memory a training step holds at its peak (just before backward), as the storages
    autograd saves: the fused sep_conv2d keeps neither ReLU nor depthwise results, multires_sum no products."""
    model = tiny_supernet(torch.float32)
    x = torch.randn(16, 2, 16, 16)
    fused = sum(saved_storages(model, [x]).values())
    reference = sum(saved_storages(set_fused(model, False), [x]).values())
    assert fused <= 0.7 * reference, (fused, reference)


# --- the search ---------------------------------------------------------------------------------------------


def test_halves_split_the_training_data_only():
    dataset = proxied_dataset(DataSpec("digits"), Proxy.parse("c0r0s0e1"))
    halves = split_halves(dataset, seed=0)
    assert abs(len(halves.train) - len(halves.val)) <= 1
    assert len(halves.train) + len(halves.val) == len(dataset.train)
    rows = {bytes(img.flatten().tolist()) for img in dataset.train.images}
    assert {bytes(img.flatten().tolist()) for img in halves.val.images} <= rows
    assert halves.test is dataset.test


def test_search_never_reads_the_test_split(tmp_path, monkeypatch):
    from pyaccel_nas.data import Dataset

    seen = []
    original = Dataset.batches
    monkeypatch.setattr(Dataset, "batches",
                        lambda self, split, *a, **kw: seen.append(split) or original(self, split, *a, **kw))
    run_darts(DartsConfig(**{**TINY, "proxy": "c2r0s4e1"}), tmp_path, progress=False)
    assert set(seen) == {"train", "val"}


def test_search_writes_the_result_contract_and_costs_as_the_proxy_says(tmp_path, monkeypatch):
    seen = []
    original = DartsSearch.evaluate
    monkeypatch.setattr(DartsSearch, "evaluate", lambda self, **kw: seen.append(1) or original(self, **kw))
    result = run_darts(DartsConfig(**{**TINY, "final_top": 1, "final_proxy": "c4r0s0e1", "final_layers": 3}),
                       tmp_path, progress=False)
    for key in ("strategy", "proxy", "best", "trained_networks", "cost", "history", "final", "alphas",
                "skip_connections"):
        assert key in result
    assert result["strategy"] == "darts" and len(seen) == 2  # the supernet is evaluated once per epoch
    assert Genotype.from_dict(result["best"]["genotype"]) == Genotype.load(tmp_path / "best_genotype.json")
    assert [h["epoch"] for h in result["history"]] == [1, 2] and len(result["alphas"]) == 2
    for entry in result["alphas"]:
        for cell in ("normal", "reduce"):
            assert len(entry[cell]) == EDGES and all(abs(sum(row) - 1) < 1e-6 for row in entry[cell])
    assert result["alphas"][0] != result["alphas"][1]  # alpha trains
    # first-order: the supernet's MACs per image x training images x epochs x 3, as Proxy.cost has it
    proxy = Proxy.parse(TINY["proxy"])
    train_images = len(proxied_dataset(DataSpec("digits"), Proxy()).train)
    assert result["cost"]["macs"] == proxy.cost(result["cost"]["supernet_macs_per_image"], train_images)
    assert result["cost"]["epochs"] == 2
    assert result["skip_connections"]["normal"] == sum(op == "skip_connect" for op, _ in
                                                       Genotype.from_dict(result["best"]["genotype"]).normal)
    (final,) = result["final"]["networks"]
    assert 0 < final["test_accuracy"] <= 1
    assert json.loads((tmp_path / "result.json").read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "alphas.png").read_bytes()[:4] == b"\x89PNG"


def test_unrolled_search_costs_four_times_per_alpha_image(tmp_path):
    first = run_darts(DartsConfig(**TINY), tmp_path / "first", progress=False)
    second = run_darts(DartsConfig(**TINY, unrolled=True), tmp_path / "second", progress=False)
    macs = first["cost"]["supernet_macs_per_image"]
    halves = split_halves(proxied_dataset(DataSpec("digits"), Proxy.parse(TINY["proxy"])), 0)
    assert second["cost"]["macs"] == 2 * macs * (3 * len(halves.train) + 12 * len(halves.val))
    assert second["alphas"] != first["alphas"]


def test_resume_continues_from_the_last_epoch_and_equals_a_straight_run(tmp_path):
    straight = run_darts(DartsConfig(**TINY), tmp_path / "straight", progress=False)
    one_epoch = straight["history"][0]["cost_macs"]
    stopped = run_darts(DartsConfig(**TINY, budget=one_epoch + 1), tmp_path / "staged", progress=False)
    assert stopped["stopped_by"] == "budget" and stopped["cost"]["epochs"] == 1
    resumed = run_darts(DartsConfig(**TINY), tmp_path / "staged", resume=True, progress=False)
    for key in ("best", "cost", "history", "alphas", "skip_connections"):
        assert resumed[key] == straight[key], key
    checkpoint = torch.load(tmp_path / "staged" / "darts_checkpoint.pt", weights_only=True)
    assert checkpoint["arch_optimizer"]["state"] and checkpoint["weight_optimizer"]["state"]
    with pytest.raises(ValueError, match="other settings"):
        run_darts(DartsConfig(**{**TINY, "seed": 3}), tmp_path / "staged", resume=True, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run_darts(DartsConfig(**TINY), tmp_path / "staged", progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run_darts(DartsConfig(**TINY), tmp_path / "empty", resume=True, progress=False)


@pytest.mark.slow
def test_cli_smoke_darts_search_on_fashion_mnist(tmp_path):
    # what the run produced, not how long it took: a loaded machine must not fail it (speed is for benchmarks)
    out = subprocess.run(
        [sys.executable, "-m", "pyaccel_nas.cli", "search", "--strategy", "darts", "--preset", "smoke",
         "--dataset", "fashion-mnist", "--max-skips", "2", "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=1800,
    )
    assert out.returncode == 0, out.stderr
    assert "supernet validation accuracy" in out.stdout and "test" in out.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["proxy"] == "c4r4s100e2" and result["skip_connections"]["normal"] <= 2
    assert 1 <= result["threads"] <= os.cpu_count()  # the supernet's, by the rule of pyaccel_nas.threads
    assert result["final"]["networks"][0]["test_accuracy"] > 0.3  # 10 classes
    bad = subprocess.run([sys.executable, "-m", "pyaccel_nas.cli", "search", "--strategy", "darts", "--cycles", "3",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--cycles does not apply" in bad.stderr


def test_a_checkpoint_remembers_its_thread_count_and_a_cli_resume_takes_it(tmp_path, monkeypatch):
    """A search resumed on a machine whose load changed trains with the threads it started with (CPU results
    depend on them), unless --threads says otherwise."""
    search = DartsSearch(DartsConfig(**TINY), proxied_dataset(DataSpec("digits"), Proxy.parse(TINY["proxy"])))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        search.save(tmp_path / CHECKPOINT_NAME)
        assert DartsSearch.saved_threads(tmp_path / CHECKPOINT_NAME) == 1
        assert DartsSearch.saved_threads(tmp_path / "missing.pt") is None
        (tmp_path / "truncated.pt").write_bytes((tmp_path / CHECKPOINT_NAME).read_bytes()[:100])
        assert DartsSearch.saved_threads(tmp_path / "truncated.pt") is None

        class Started(Exception):
            pass

        def fake_run_darts(config, out, **kwargs):
            raise Started(torch.get_num_threads())

        monkeypatch.setattr(pyaccel_nas.darts, "run_darts", fake_run_darts)
        for extra, expected in (([], 1), (["--threads", "2"], 2)):
            torch.set_num_threads(2 if expected == 1 else 1)
            with pytest.raises(Started) as started:
                cli.main(["search", "--strategy", "darts", "--preset", "smoke", "--out", str(tmp_path), "--resume",
                          *extra])
            assert started.value.args == (expected,)
    finally:
        torch.set_num_threads(before)
