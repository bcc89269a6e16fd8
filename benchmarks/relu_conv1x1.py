"""ReLU -> 1x1 conv (DARTS' cell-input preprocessing): eager against one sep_conv2d with an identity depthwise part.

    python -m benchmarks.relu_conv1x1 [--repeats 9] [--out DIR]

Forward + backward (input and weight gradients), interleaved, the machine's cores, on the preprocessing
shapes of the c4r4 proxy network and of the DARTS evaluation network at C=16 and C=36 (where ``pyaccel_nas.econas``'s
``ReLUConvBN`` and ``FactorizedReduce`` run the fused form). Results go to
``benchmarks/results/relu_conv1x1_*.json``.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from benchmarks import measure
from benchmarks.cases import require_kernels
from benchmarks.report import quiet_cores, save_report, whole_run_arguments
from pyaccel_nas import ops

# (batch, C_in, C_out, plane side): c4r4 proxy (9 channels, 8x8 -> 2x2), DARTS evaluation net at C=16 and
# at C=36 (32x32 -> 8x8)
SHAPES = ((96, 36, 9, 8), (96, 36, 18, 4), (96, 72, 36, 2), (64, 64, 16, 32), (64, 128, 32, 16), (64, 256, 64, 8),
          (64, 144, 36, 32), (64, 288, 72, 16), (64, 576, 144, 8))


def steps(n: int, c_in: int, c_out: int, side: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_in, side, side, generator=gen).requires_grad_()
    weight = torch.randn(c_out, c_in, 1, 1, generator=gen).requires_grad_()
    identity = torch.ones(c_in, 1, 1, 1)
    grad = torch.randn(n, c_out, side, side, generator=gen)

    def eager():
        return torch.autograd.grad(F.conv2d(F.relu(x), weight), (x, weight), grad)

    def fused():
        return torch.autograd.grad(ops.sep_conv2d(x, identity, weight, pre_relu=True), (x, weight), grad)

    return {"eager": eager, "fused": fused}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    whole_run_arguments(parser, repeats=9)
    args = parser.parse_args(argv)
    require_kernels(("sep_conv2d",))
    cores = quiet_cores()
    rows = []
    for shape in SHAPES:
        us = {name: 1e6 * s.median for name, s in measure.time_steps(steps(*shape), repeats=args.repeats).items()}
        rows.append({"shape": dict(zip(("n", "c_in", "c_out", "side"), shape)), **{f"{k}_us": v for k, v in us.items()},
                     "eager/fused": us["eager"] / us["fused"]})
        print(f"n{shape[0]} {shape[1]}->{shape[2]} {shape[3]}x{shape[3]}: eager {us['eager']:8.1f} us  fused "
              f"{us['fused']:8.1f} us  eager/fused {rows[-1]['eager/fused']:.2f}", file=sys.stderr)
    report, path = save_report("relu_conv1x1", {"rows": rows}, cores, args.out)
    return report


if __name__ == "__main__":
    main()
