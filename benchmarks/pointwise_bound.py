"""How far ahead of eager a fused sep_conv2d can get where its 1x1 part dominates.

    python -m benchmarks.pointwise_bound [--grid darts] [--below 2.0] [--repeats 9] [--out DIR]

For each sep_conv2d case of the grid, one interleaved run (fwd+bwd, the machine's cores) times eager (ReLU,
depthwise conv, 1x1 conv: :mod:`pyaccel_nas.ops.reference`), fused, and the 1x1 products alone on a
tensor of the depthwise result's shape, the faster of two ways torch has: a 1x1 ``conv2d`` (oneDNN) and a
``matmul`` over the images (MKL). Every implementation must do those products, so eager / products alone
bounds the speed-up of a fused op whose products run no faster than torch's (the depthwise part, the
activation and every memory pass free). Only cases whose eager / fused is below ``--below`` are
reported: the question is whether the bound leaves room for ``--below``. Results go to
``benchmarks/results/pointwise_bound_*.json``.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from benchmarks import measure
from benchmarks.cases import Case, grid, make_step
from benchmarks.report import quiet_cores, save_report, whole_run_arguments


def products_steps(case: Case) -> dict:
    """The 1x1 products, forward and backward, on the depthwise result's shape: as a 1x1 conv2d, and as a
    matmul of the weights with every image's (C, pixels) matrix."""
    n, c, ho, wo = case.out_shape
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(n, c, ho, wo, generator=gen).requires_grad_()
    weight = torch.randn(case.shapes[2], generator=gen).requires_grad_()
    grad = torch.randn(case.out_shape, generator=gen)

    def conv():
        return torch.autograd.grad(F.conv2d(d, weight), (d, weight), grad)

    def matmul():
        y = torch.matmul(weight.view(c, c), d.view(n, c, ho * wo)).view(case.out_shape)
        return torch.autograd.grad(y, (d, weight), grad)

    return {"conv1x1": conv, "matmul": matmul}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="darts", help="a grid of benchmarks.cases (default darts)")
    parser.add_argument("--below", type=float, default=2.0, help="report cases with eager / fused below this")
    whole_run_arguments(parser, repeats=9)
    args = parser.parse_args(argv)
    cores = quiet_cores()
    rows = []
    for case in grid(args.grid, ["sep_conv2d"]):
        steps = {impl: make_step(case, impl, "fwd+bwd") for impl in ("eager", "fused")}
        steps.update(products_steps(case))
        ms = {name: 1e3 * s.median for name, s in measure.time_steps(steps, repeats=args.repeats).items()}
        ms["products"] = min(ms["conv1x1"], ms["matmul"])
        if ms["eager"] / ms["fused"] >= args.below:
            continue
        rows.append({"case": case.name, **{f"{name}_ms": value for name, value in ms.items()},
                     "eager/fused": ms["eager"] / ms["fused"], "bound": ms["eager"] / ms["products"]})
        print(f"{case.name:<24} eager {ms['eager']:7.3f}  fused {ms['fused']:7.3f}  products: conv1x1 "
              f"{ms['conv1x1']:7.3f} matmul {ms['matmul']:7.3f}  "
              f"eager/fused {rows[-1]['eager/fused']:.2f}  bound {rows[-1]['bound']:.2f}", file=sys.stderr)
    report, path = save_report("pointwise_bound", {"grid": args.grid, "below": args.below, "rows": rows}, cores,
                               args.out, tag=args.grid)
    return report


if __name__ == "__main__":
    main()
