"""The benchmark cases as data, and the one definition of what a timed step runs.

A :class:`Case` is one op at one shape. It builds its inputs (float32, seeded), binds the op's keyword
arguments into three callables over the flat list of input tensors -- ``fused`` (pyaccel_nas.ops),
``eager`` (pyaccel_nas.ops.reference) and ``compiled`` (torch.compile of the reference) -- and carries a
work model (FLOPs and the bytes that must move) from which :mod:`benchmarks.measure` derives a floor.

:func:`make_step` turns (case, impl, pass, device) into a zero-argument callable: ``forward`` runs the op under
``torch.no_grad``; ``fwd+bwd`` runs it on inputs that require grad and takes the gradients of every input
for a fixed random output gradient (``torch.autograd.grad``, so nothing accumulates between calls).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

import pyaccel_nas.ops as fused_ops
from pyaccel_nas._extension import fallback_reason
from pyaccel_nas.ops import reference
from pyaccel_nas.threads import available_cores

IMPLS = ("eager", "compiled", "fused")
PASSES = ("forward", "fwd+bwd")
OPS = ("sep_conv2d", "channel_gate", "multires_sum", "batch_norm", "pool2d")
F32 = 4  # bytes per element
SEED = 0


@dataclass(frozen=True)
class Case:
    op: str
    name: str  # unique within the op, e.g. "n32_c16_h16_k3_d1_s1"
    shapes: tuple[tuple[int, ...], ...]  # the tensor arguments, flat, in call order
    out_shape: tuple[int, ...]
    kwargs: tuple[tuple[str, object], ...]  # keyword arguments of the op
    flops: tuple[float, float]  # (forward, fwd+bwd)
    bytes: tuple[float, float]  # (forward, fwd+bwd): every input read once, every output written once

    @property
    def id(self) -> str:
        return f"{self.op}/{self.name}"

    def work(self, pass_: str) -> tuple[float, float]:
        """(FLOPs, bytes) of one pass."""
        i = PASSES.index(pass_)
        return self.flops[i], self.bytes[i]

    def inputs(self, *, requires_grad: bool, device: str = "cpu") -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(SEED)  # on the CPU: the same values on every device
        return [torch.randn(s, generator=gen).to(device).requires_grad_(requires_grad) for s in self.shapes]

    def grad_output(self, device: str = "cpu") -> torch.Tensor:
        return torch.randn(self.out_shape, generator=torch.Generator().manual_seed(SEED + 1)).to(device)

    def fn(self, impl: str) -> Callable[..., torch.Tensor]:
        if impl == "compiled":
            return _compiled(self)
        return self._bind(getattr(fused_ops if impl == "fused" else reference, self.op))

    def _bind(self, fn: Callable) -> Callable[..., torch.Tensor]:
        kwargs = dict(self.kwargs)
        if self.op == "multires_sum":  # flat (*branches, weights) -> (branches, weights)
            return lambda *t: fn(list(t[:-1]), t[-1], **kwargs)
        if self.op == "batch_norm":  # flat (x, weight, bias) -> (x, running_mean, running_var, weight, bias)
            return lambda x, weight, bias: fn(x, None, None, weight, bias, **kwargs)
        if self.op == "pool2d":  # mode, kernel_size, stride, padding are positional
            mode, kernel, stride, padding = (kwargs.pop(k) for k in ("mode", "kernel_size", "stride", "padding"))
            return lambda x: fn(x, mode, kernel, stride, padding, **kwargs)
        return lambda *t: fn(*t, **kwargs)


_COMPILED: dict[str, Callable] = {}


def _compiled(case: Case) -> Callable[..., torch.Tensor]:
    """torch.compile of the reference, created on first use and cached for the most recent case only.

    Every case's callable shares the code object of ``Case._bind``'s lambda, and dynamo keeps its compiled
    graphs per code object: keeping many cases alive would fill that cache (recompile_limit, after which
    dynamo silently runs eager) and make every call check the guards of every other case. So moving to a
    new case resets dynamo; run the cases one after another (the report and the pytest order do) and each
    is compiled once per pass.
    """
    if case.id not in _COMPILED:
        torch._dynamo.reset()
        _COMPILED.clear()
        _COMPILED[case.id] = torch.compile(case._bind(getattr(reference, case.op)), dynamic=False)
    return _COMPILED[case.id]


def make_step(case: Case, impl: str, pass_: str, device: str = "cpu") -> Callable[[], object]:
    """The zero-argument callable that benchmarks time: one forward, or one forward + backward, with the
    case's tensors on ``device`` (CUDA steps only launch work: the timer synchronises). A "fused" step
    whose op would run its reference instead of a compiled kernel is refused (:func:`require_kernels`)."""
    if impl == "fused":
        require_kernels((case.op,), device)
    fn = case.fn(impl)
    if pass_ == "forward":
        args = case.inputs(requires_grad=False, device=device)

        def step():
            with torch.no_grad():
                return fn(*args)

    elif pass_ == "fwd+bwd":
        args = case.inputs(requires_grad=True, device=device)
        grad = case.grad_output(device)

        def step():
            return torch.autograd.grad(fn(*args), args, grad)

    else:
        raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")
    return step


def require_kernels(ops, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
    """Refuses to time "fused" when the compiled kernels are not what would run: RuntimeError naming the
    reason (a library that did not load, a source tree hiding the install, a dtype without a kernel)."""
    reasons = {op: fallback_reason(op, torch.device(device).type, dtype) for op in ops}
    missing = {op: reason for op, reason in reasons.items() if reason is not None}
    if missing:
        raise RuntimeError("refusing to time the fused ops: they would run their references, not the compiled "
                           "kernels: " + "; ".join(f"{op}: {reason}" for op, reason in missing.items()))


def set_threads() -> int:
    """Use every core this process may run on: a benchmark states its thread count and times on a quiet
    machine (it checks), so it does not adapt to other load as runs do (:mod:`pyaccel_nas.threads`)."""
    cores = available_cores()
    torch.set_num_threads(cores)
    return cores


# --- case constructors: shapes, keyword arguments and work model of each op ---------------------------


def sep_conv2d_case(n: int, c: int, h: int, k: int, dilation: int, stride: int) -> Case:
    padding = dilation * (k - 1) // 2
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    x, out, weights = n * c * h * h, n * c * ho * ho, c * k * k + c * c
    fwd_flops = 2 * n * c * ho * ho * (k * k + c)  # depthwise + pointwise multiply-adds
    return Case(
        op="sep_conv2d",
        name=f"n{n}_c{c}_h{h}_k{k}_d{dilation}_s{stride}",
        shapes=((n, c, h, h), (c, 1, k, k), (c, c, 1, 1)),
        out_shape=(n, c, ho, ho),
        kwargs=(("stride", stride), ("padding", padding), ("dilation", dilation), ("pre_relu", True)),
        # backward: gradients of input and weights of both convolutions = 2x forward
        flops=(fwd_flops, 3 * fwd_flops),
        # fwd+bwd: x, weights -> out; then grad_out, x, weights -> grad_x, grad_weights
        bytes=(F32 * (x + weights + out), F32 * (3 * x + 3 * weights + 2 * out)),
    )


def channel_gate_case(n: int, c: int, h: int) -> Case:
    x = n * c * h * h
    return Case(
        op="channel_gate",
        name=f"n{n}_c{c}_h{h}",
        shapes=((n, c, h, h), (c,)),
        out_shape=(n, c, h, h),
        kwargs=(),
        flops=(x, 4 * x),  # forward 1 mul; backward grad_x 1 mul, grad_gate 1 multiply-add per element
        bytes=(F32 * 2 * x, F32 * 5 * x),  # x -> out; grad_out, x -> grad_x
    )


def batch_norm_case(n: int, c: int, h: int) -> Case:
    """Training-mode BatchNorm with weight and bias, without running statistics (torch updates them with
    separate small ops, the fused op inside its kernel: leaving them out leaves that gain out)."""
    x = n * c * h * h
    return Case(
        op="batch_norm",
        name=f"n{n}_c{c}_h{h}",
        shapes=((n, c, h, h), (c,), (c,)),
        out_shape=(n, c, h, h),
        kwargs=(),
        # forward: sum, squared deviation, normalize (4 per element); backward: two sums and grad_x (7)
        flops=(4 * x, 11 * x),
        bytes=(F32 * 2 * x, F32 * 5 * x),  # x -> out; grad_out, x -> grad_x
    )


def pool2d_case(n: int, c: int, h: int, mode: str, stride: int) -> Case:
    """DARTS' 3x3 pools: padding 1, an average over the taps inside the input (count_include_pad False)."""
    ho = (h - 1) // stride + 1
    x, out = n * c * h * h, n * c * ho * ho
    return Case(
        op="pool2d",
        name=f"n{n}_c{c}_h{h}_{mode}_s{stride}",
        shapes=((n, c, h, h),),
        out_shape=(n, c, ho, ho),
        kwargs=(("mode", mode), ("kernel_size", 3), ("stride", stride), ("padding", 1), ("count_include_pad", False)),
        flops=(9 * out, 18 * out),  # a compare or add per tap; backward: the window again (max) or a scatter
        bytes=(F32 * (x + out), F32 * (2 * x + out)),  # x -> out; grad_out (and x for max) -> grad_x
    )


def multires_sum_case(n: int, c: int, size: Sequence[int], factors: Sequence[Sequence[int]], mode: str) -> Case:
    """Branches of spatial size ``size / factor`` for each factor, summed at ``size``."""
    branch_shapes = tuple((n, c, *(s // f for s, f in zip(size, fac))) for fac in factors)
    out = n * c * math.prod(size)
    branches = sum(math.prod(b) for b in branch_shapes)
    # per output element and branch: weight multiply-add, plus 2**d taps of interpolation when resampled
    taps = [1 if all(f == 1 for f in fac) or mode == "nearest" else 2 ** len(size) for fac in factors]
    fwd_flops = out * sum(2 + 2 * (t - 1) for t in taps)
    dims = "x".join(map(str, size))
    scales = "-".join("".join(map(str, fac)) for fac in factors)
    return Case(
        op="multires_sum",
        name=f"n{n}_c{c}_{dims}_f{scales}_{mode}",
        shapes=(*branch_shapes, (len(factors),)),
        out_shape=(n, c, *size),
        kwargs=(("size", list(size)), ("mode", mode)),
        flops=(fwd_flops, 3 * fwd_flops),  # backward: scatter to each branch + weight gradient
        bytes=(F32 * (branches + out), F32 * 2 * (branches + out)),  # + grad_out -> grad_branches
    )


# --- the grids ---------------------------------------------------------------------------------------

MULTIRES_2D = ((32, 32), ((1, 1), (2, 2), (4, 4)))
MULTIRES_3D = ((8, 16, 16), ((1, 1, 1), (1, 2, 2), (2, 2, 2)))
LINEAR = {2: "bilinear", 3: "trilinear"}


def full_grid() -> list[Case]:
    sizes = dict(n=(32, 96), c=(9, 16, 36, 64), h=(8, 16, 32))
    cases = [
        sep_conv2d_case(n, c, h, k, d, s)
        for n, c, h, k, d, s in itertools.product(*sizes.values(), (3, 5), (1, 2), (1, 2))
    ]
    cases += [channel_gate_case(n, c, h) for n, c, h in itertools.product(*sizes.values())]
    cases += [batch_norm_case(n, c, h) for n, c, h in itertools.product(*sizes.values())]
    cases += [pool2d_case(n, c, h, mode, s)
              for n, c, h, mode, s in itertools.product(*sizes.values(), ("max", "avg"), (1, 2))]
    cases += [
        multires_sum_case(n, c, size, factors, mode)
        for size, factors in (MULTIRES_2D, MULTIRES_3D)
        for mode in ("nearest", LINEAR[len(size)])
        for n, c in itertools.product((32, 96), (16, 36))
    ]
    return cases


def quick_grid() -> list[Case]:
    """A handful of DARTS / EcoNAS-sized shapes per op: the proxy (C=9 at 8x8), a normal cell, a wide one."""
    return [
        sep_conv2d_case(32, 9, 8, 3, 1, 1),  # EcoNAS c4r4 proxy
        sep_conv2d_case(32, 16, 16, 3, 1, 1),
        sep_conv2d_case(32, 16, 16, 3, 1, 2),  # reduction cell
        sep_conv2d_case(96, 36, 32, 5, 2, 1),  # dil_conv_5x5 at full CIFAR width
        channel_gate_case(32, 9, 8),
        channel_gate_case(32, 16, 16),
        channel_gate_case(96, 36, 32),
        batch_norm_case(96, 9, 8),  # the c4r4 proxy's cells
        batch_norm_case(96, 36, 2),
        batch_norm_case(64, 16, 32),  # DARTS' evaluation net at C=16
        pool2d_case(96, 9, 8, "max", 2),  # the c4r4 proxy's reduction cells
        pool2d_case(64, 32, 32, "max", 2),  # DARTS' evaluation net at C=16
        pool2d_case(96, 4, 16, "avg", 1),  # the supernet under c4r2
        multires_sum_case(32, 16, *MULTIRES_2D, "nearest"),
        multires_sum_case(96, 36, *MULTIRES_2D, "bilinear"),
        multires_sum_case(32, 16, *MULTIRES_3D, "nearest"),
        multires_sum_case(32, 16, *MULTIRES_3D, "trilinear"),
    ]


def darts_grid() -> list[Case]:
    """The shapes DARTS networks give the ops at batch 64, and tensors larger than the last-level cache.

    sep_conv2d: every separable and dilated DARTS op (3x3, 5x5; dilation 1, 2; stride 1, 2) at the three
    stages of the evaluation network at C=16 and C=36 (32x32, 16x16, 8x8 planes), and at held-out widths and
    sizes no other grid has (48 channels at 12x12, 24 at 24x24, 96 at 6x6). channel_gate: a cell's output at
    C=36 and two tensors past a large last-level cache (0.5 and 1 GiB). batch_norm: every stage of both
    widths, and the c4r4 proxy's cell planes (96 images of 9, 18 and 36 channels at 8x8, 4x4, 2x2).
    pool2d: DARTS' 3x3 max and average pools at both strides on the C=16 stages and the c4r2 supernet's
    planes (96 images of 4, 8 and 16 channels at 16x16, 8x8, 4x4). multires_sum: the supernet's mix of
    seven same-size op outputs on those planes.
    """
    stages = ((16, 32), (32, 16), (64, 8), (36, 32), (72, 16), (144, 8), (48, 12), (24, 24), (96, 6))
    cases = [sep_conv2d_case(64, c, h, k, d, s)
             for (c, h), k, d, s in itertools.product(stages, (3, 5), (1, 2), (1, 2))]
    cases += [channel_gate_case(64, 144, 32), channel_gate_case(128, 64, 128), channel_gate_case(256, 64, 128)]
    cases += [batch_norm_case(64, c, h) for c, h in stages[:6]]
    cases += [batch_norm_case(96, c, h) for c, h in ((9, 8), (18, 4), (36, 2))]
    # the supernet's mix: seven op outputs at one size per edge
    cases += [multires_sum_case(96, c, (h, h), ((1, 1),) * 7, "nearest") for c, h in ((4, 16), (8, 8), (16, 4))]
    cases += [pool2d_case(n, c, h, mode, s) for (n, c, h), mode, s in
              itertools.product(((64, 16, 32), (64, 32, 16), (64, 64, 8), (96, 4, 16), (96, 8, 8), (96, 16, 4)),
                                ("max", "avg"), (1, 2))]
    return cases


GRIDS = {"quick": quick_grid, "full": full_grid, "darts": darts_grid}


def grid(name: str = "quick", ops: Sequence[str] | None = None) -> list[Case]:
    if name not in GRIDS:
        raise ValueError(f"grid must be one of {sorted(GRIDS)}, got {name!r}")
    unknown = set(ops or ()) - set(OPS)
    if unknown:
        raise ValueError(f"unknown ops {sorted(unknown)}; choose from {OPS}")
    return [c for c in GRIDS[name]() if ops is None or c.op in ops]
