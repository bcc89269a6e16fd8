"""What a lower resolution saves on a CPU, per MAC: one residual block timed at full and at half resolution.

    python -m benchmarks.mdp_resolution_cost [--channels 16] [--size 28] [--batch 64] [--threads 2]

MDP trades resolution for MACs; at equal MACs it beats pruning channels only if a MAC removed by pooling
saves at least as much time as a MAC removed by thinning the block. This times, in eval mode with
BatchNorms folded, channels-last, a ResNet basic block of ``--channels`` channels on ``--size`` x ``--size``
inputs (ResNet-20's first stage on Fashion-MNIST by default):

- ``full``: the block as it is;
- ``half_channels``: its middle thinned to half the channels (what the channel-only arm does), the
  shortcut kept;
- ``half_resolution``: MDP's pruned block at factor 2: average-pool, the two convs, nearest upsample, add,
  ReLU;
- ``half_resolution_fused``: the same, the upsample, the shortcut's add folded into one ``multires_sum``
  (no upsampled copy), then ReLU: the fused pool -> conv -> upsample path.

Each variant's MACs and median time (interleaved rounds) are reported with its saving relative to ``full``:
time saved per MAC saved is what decides the comparison.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import measure
from benchmarks.cases import require_kernels
from pyaccel_nas import ops
from pyaccel_nas.nn import count_macs


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)  # a folded BatchNorm leaves a bias


class Block(nn.Module):
    """relu(body(x) + x) with ``body`` = conv-ReLU-conv at ``factor`` (pool before, upsample after)."""

    def __init__(self, channels: int, middle: int, factor: int, fused: bool) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(channels, middle), _conv(middle, channels)
        self.factor, self.fused = factor, fused
        self.register_buffer("ones", torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.avg_pool2d(x, self.factor) if self.factor > 1 else x
        body = self.conv2(F.relu(self.conv1(low)))
        if self.fused:
            return F.relu(ops.multires_sum([x, body], self.ones))
        if self.factor > 1:
            body = F.interpolate(body, scale_factor=self.factor, mode="nearest")
        return F.relu(body + x)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    require_kernels(["multires_sum"])
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = args.channels
    variants = {"full": Block(c, c, 1, False), "half_channels": Block(c, c // 2, 1, False),
                "half_resolution": Block(c, c, 2, False), "half_resolution_fused": Block(c, c, 2, True)}
    x = torch.randn(args.batch, c, args.size, args.size).to(memory_format=torch.channels_last)
    with torch.no_grad():
        variants["half_resolution_fused"].load_state_dict(variants["half_resolution"].state_dict())
        torch.testing.assert_close(variants["half_resolution_fused"](x), variants["half_resolution"](x))
        macs = {name: count_macs(block, x[:1]) for name, block in variants.items()}
        load = os.getloadavg()[0]
        samples = measure.time_steps({name: (lambda b=block: b(x)) for name, block in variants.items()},
                                     warmup=5, repeats=40, budget_s=20.0)
    ms = {name: 1e3 * s.median for name, s in samples.items()}
    rows = {name: {"macs": macs[name], "ms": ms[name], "macs_saved": 1 - macs[name] / macs["full"],
                   "time_saved": 1 - ms[name] / ms["full"]} for name in variants}
    print(f"basic block, {c} channels, {args.size}x{args.size}, batch {args.batch}, {args.threads} thread(s), "
          f"channels-last, load average before {load:.2f}")
    print(f"{'variant':<24} {'MMACs':>7} {'ms':>7} {'MACs saved':>10} {'time saved':>10}")
    for name, row in rows.items():
        print(f"{name:<24} {row['macs'] / 1e6:>7.2f} {row['ms']:>7.3f} {row['macs_saved']:>10.2f} "
              f"{row['time_saved']:>10.2f}")
    return {"config": vars(args), "load_before": load, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(main()["rows"]))
