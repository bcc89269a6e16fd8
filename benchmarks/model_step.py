"""Times one training step of a whole network: reference modules, torch.compile of them, fused.

    python -m benchmarks.model_step [--network cell|supernet] [--proxy c4r4] [--channels 36] [--layers 20] \
        [--batch 96] [--no-compile] [--out DIR]

``cell`` (default): the DARTS V2 cell (sep and dil convs on most edges, like the cells a search trains) in
the paper's CIFAR-10 macro network of ``--layers`` cells and ``--channels`` channels, shrunk by the proxy's
channel and resolution divisors (the default c4r4: 9 channels, 8x8 inputs; ``--proxy c0r0 --channels 16
--layers 8``: the DARTS evaluation network at C=16, 8 cells, 32x32). ``supernet``: the DARTS search network
(all eight operations on every edge; ``--proxy c4r2 --channels 16 --layers 8``: DARTS' search setting under
c4r2), whose step is the weight step of a search step (the alpha step is the same computation on another
batch). A step is forward, cross-entropy, backward and an SGD update; the three variants start from the
same weights and the same batch, and the report checks that their losses and gradients agree before
timing. Besides the time it reports the bytes the forward keeps alive for the backward (the
activation memory of a training step) and the minor page faults of a step: glibc gives large freed blocks
back to the OS, so a variant that allocates more also pays for faulting fresh pages in. To time the
variants with an allocator that keeps freed memory instead, run it under glibc's
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736`` (recorded in the results). Results
go to ``benchmarks/results/model_step_*.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from benchmarks import measure
from benchmarks.cases import require_kernels
from benchmarks.report import RESULTS_DIR, machine, slug, source_state
from pyaccel_nas._extension import OPS
from pyaccel_nas.darts.supernet import Supernet
from pyaccel_nas.econas.genotype import Genotype
from pyaccel_nas.econas.network import Network, NetworkConfig
from pyaccel_nas.econas.proxy import Proxy
from pyaccel_nas.nn import set_fused
from pyaccel_nas.threads import OtherLoad

# DARTS V2 (Liu et al., 2019), the best-known cell of this search space.
DARTS_V2 = Genotype.from_dict({
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
               ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
               ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
})  # fmt: skip
FULL_CHANNELS, FULL_RESOLUTION, CLASSES = 36, 32, 10  # the paper's CIFAR-10 setting
SEED = 0


def build(proxy: Proxy, layers: int, channels: int = FULL_CHANNELS, network: str = "cell") -> nn.Module:
    torch.manual_seed(SEED)
    config = NetworkConfig(channels=proxy.channels_of(channels), layers=layers, num_classes=CLASSES)
    return Supernet(config) if network == "supernet" else Network(DARTS_V2, config)


def batch(proxy: Proxy, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    side = FULL_RESOLUTION // (proxy.resolution or 1)
    return torch.randn(size, 3, side, side, generator=gen), torch.randint(0, CLASSES, (size,), generator=gen)


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """A zero-argument training step: forward, loss, backward, SGD update (the optimizer is created once)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=True)  # as training.py's

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def max_grad_rel_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(((ga - gb).abs().max() / gb.abs().max().clamp_min(1e-30)).item() for ga, gb in zip(a, b))


def saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the unique storages the forward saves for the backward (activation memory of a step)."""
    with measure.saved_storages() as storages:
        nn.functional.cross_entropy(model(x), y)
    return sum(storages.values())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", choices=("cell", "supernet"), default="cell",
                        help="the DARTS V2 cell network, or the DARTS search supernet")
    parser.add_argument("--proxy", default="c4r4", help="channel/resolution part of a proxy, c{x}r{y} (default c4r4)")
    parser.add_argument("--channels", type=int, default=FULL_CHANNELS, help="channels before the proxy divides them")
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference network")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    require_kernels(OPS)
    proxy = Proxy.parse(args.proxy + "s0e1")
    x, y = batch(proxy, args.batch)
    reference = set_fused(build(proxy, args.layers, args.channels, args.network), False)
    fused = set_fused(copy.deepcopy(reference), True)
    models = {"eager": reference, "fused": fused}
    if not args.no_compile:
        models["compiled"] = torch.compile(copy.deepcopy(reference))

    ref_loss, ref_grads = gradients(reference, x, y)
    errors = {}
    for name, model in models.items():
        loss, grads = gradients(model, x, y)
        errors[name] = {"loss": abs(loss - ref_loss).item(), "grad_rel": max_grad_rel_error(grads, ref_grads)}
    print(f"agreement with the reference network: {errors}", file=sys.stderr)

    measure.wait_until_quiet(0.2)
    load = OtherLoad()
    steps = {name: training_step(model, x, y) for name, model in models.items()}
    samples = measure.time_steps(steps, warmup=3, repeats=args.repeats, budget_s=60.0)
    ms = {name: 1e3 * s.median for name, s in samples.items()}
    saved = {name: saved_bytes(models[name], x, y) / measure.MIB for name in ("eager", "fused")}

    result = {
        "machine": machine(torch.get_num_threads()),
        "source": source_state(),
        "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "network": {"kind": args.network, "genotype": "DARTS_V2" if args.network == "cell" else None,
                    "proxy": args.proxy, "channels": proxy.channels_of(args.channels), "layers": args.layers,
                    "batch": args.batch, "input": list(x.shape),
                    "parameters": sum(p.numel() for p in reference.parameters())},
        "step_ms": ms,
        "step_ms_range": {name: [1e3 * min(s.seconds), 1e3 * max(s.seconds)] for name, s in samples.items()},
        "samples": {name: len(s.seconds) for name, s in samples.items()},
        # fresh pages a step touches: glibc returns large freed blocks to the OS, so a step that allocates more
        # pays page faults (MALLOC_* variables, recorded below, make it keep them)
        "faults_per_step": {name: s.faults_per_call for name, s in samples.items()},
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "eager/fused": ms["eager"] / ms["fused"],
        "compiled/fused": ms["compiled"] / ms["fused"] if "compiled" in ms else None,
        "saved_mib": saved,
        "saved_reduction": 1 - saved["fused"] / saved["eager"],
        "agreement": errors,
        "busy_others": load.cores(),
    }  # fmt: skip
    print(json.dumps({k: result[k] for k in ("network", "step_ms", "eager/fused", "compiled/fused", "saved_mib",
                                             "faults_per_step")},
                     indent=1))  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    m = result["machine"]
    path = args.out / (
        f"model_step_{args.network}_{args.proxy}_C{args.channels}_L{args.layers}_b{args.batch}_"
        f"{slug(m['cpu'])}-{m['cores']}c_t{m['threads']}_"
        f"{result['timestamp'].replace(':', '').replace('-', '')}.json"
    )
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
