"""What a training-mode BatchNorm costs on the planes of proxy and DARTS networks: the baseline of a fused one.

    python -m benchmarks.batchnorm_cost [--repeats 15] [--out DIR]

Forward (batch statistics, running statistics updated) and forward + backward (input, weight and bias
gradients) of ``F.batch_norm`` in eager PyTorch and under torch.compile, interleaved, the machine's cores,
with the bytes a minimal kernel must move (forward: read x twice, write y; backward: read x and grad_y
twice, write grad_x) and the rate each achieves. Results go to ``benchmarks/results/batchnorm_cost_*.json``.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from benchmarks import measure
from benchmarks.report import quiet_cores, save_report, whole_run_arguments

# (batch, channels, plane side): the c4r4 proxy's cells (9 and 18 channels), DARTS' evaluation net at C=16
SHAPES = ((96, 9, 8, 8), (96, 18, 4, 4), (64, 16, 32, 32), (64, 32, 16, 16), (64, 64, 8, 8))


def steps(shape: tuple[int, ...]) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_()
    weight, bias = torch.ones(shape[1], requires_grad=True), torch.zeros(shape[1], requires_grad=True)
    running_mean, running_var = torch.zeros(shape[1]), torch.ones(shape[1])
    grad = torch.randn(shape, generator=gen)

    def batch_norm(x, weight, bias):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training=True)

    compiled = torch.compile(batch_norm)

    def forward():
        with torch.no_grad():
            return batch_norm(x, weight, bias)

    def eager():
        return torch.autograd.grad(batch_norm(x, weight, bias), (x, weight, bias), grad)

    def compiled_step():
        return torch.autograd.grad(compiled(x, weight, bias), (x, weight, bias), grad)

    return {"eager forward": forward, "eager fwd+bwd": eager, "compiled fwd+bwd": compiled_step}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    whole_run_arguments(parser, repeats=15)
    args = parser.parse_args(argv)
    cores = quiet_cores()
    rows = []
    for shape in SHAPES:
        bytes_ = 4 * torch.Size(shape).numel()
        us = {name: 1e6 * s.median for name, s in measure.time_steps(steps(shape), repeats=args.repeats).items()}
        # minimal traffic: forward 3 passes (statistics, then read and write), backward 5 (two reductions over
        # x and grad_y, then read both and write grad_x)
        rows.append({"shape": list(shape), "mib": bytes_ / measure.MIB, **{f"{k} us": v for k, v in us.items()},
                     "forward GB/s": 3 * bytes_ / us["eager forward"] / 1e3,
                     "fwd+bwd GB/s": 8 * bytes_ / us["eager fwd+bwd"] / 1e3})
        print(f"{'x'.join(map(str, shape)):<14} " + "  ".join(f"{k} {v:8.1f} us" for k, v in us.items()) +
              f"  eager forward at {rows[-1]['forward GB/s']:.1f} GB/s", file=sys.stderr)
    report, path = save_report("batchnorm_cost", {"rows": rows}, cores, args.out)
    return report


if __name__ == "__main__":
    main()
