"""Memory of one DARTS supernet search step (alpha step + weight step), fused ops against reference ops.

    python -m benchmarks.darts_memory [--proxy c4r2s0e50] [--channels 16] [--layers 8] [--batch 64]

Each implementation runs in a fresh process (so one's allocations cannot hide the other's), on a batch of
the proxied Fashion-MNIST, and reports:
- ``saved_mib``: the storages autograd keeps for backward at the end of the weight step's forward, the
  peak of a training step's activation memory (as tests/test_training_memory.py measures it);
- ``peak_rss_growth_mib``: how far the process' peak resident memory rose during the step, above what the
  model, optimizers and data already took (``ru_maxrss``: a real peak, though coarse and allocator-bound).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from benchmarks.cases import require_kernels
from benchmarks.measure import saved_storages
from pyaccel_nas._extension import OPS


def _saved_bytes(fn) -> int:
    with saved_storages() as storages:
        out = fn()
    del out
    return sum(storages.values())


def measure(proxy: str, channels: int, layers: int, batch: int, fused: bool) -> dict:
    from pyaccel_nas.darts import DartsConfig, DartsSearch
    from pyaccel_nas.econas.evaluation import DataSpec, proxied_dataset
    from pyaccel_nas.econas.proxy import Proxy

    if fused:
        require_kernels(OPS)
    config = DartsConfig(proxy=proxy, channels=channels, layers=layers, batch_size=batch, fused=fused)
    search = DartsSearch(config, proxied_dataset(DataSpec(config.dataset), Proxy.parse(proxy)))
    (x, y), (x_arch, y_arch) = (next(search.halves.batches(split, batch, generator=0)) for split in ("train", "val"))
    saved = _saved_bytes(lambda: search.model(x))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    search.arch_step(x_arch, y_arch, x, y, config.learning_rate)
    loss = torch.nn.functional.cross_entropy(search.model(x), y)
    loss.backward()
    search.optimizer.step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"fused": fused, "saved_mib": saved / 2**20, "peak_rss_growth_mib": (after - before) / 1024,
            "image_size": search.dataset.info.image_size, "channels": search.network_config.channels,
            "supernet_macs_per_image": search.macs_per_image}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy", default="c4r2s0e50")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--impl", choices=["fused", "reference"], help="measure one, in this process")
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(measure(args.proxy, args.channels, args.layers, args.batch, args.impl == "fused")))
        return
    rows = []
    for impl in ("fused", "reference"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.darts_memory", "--proxy", args.proxy, "--channels",
                              str(args.channels), "--layers", str(args.layers), "--batch", str(args.batch),
                              "--impl", impl], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    fused, reference = rows
    print(json.dumps({"proxy": args.proxy, "layers": args.layers, "batch": args.batch, "fused": fused,
                      "reference": reference,
                      "saved_reduction": 1 - fused["saved_mib"] / reference["saved_mib"],
                      "peak_rss_reduction": 1 - fused["peak_rss_growth_mib"] / reference["peak_rss_growth_mib"]},
                     indent=2))


if __name__ == "__main__":
    main()
