"""The checks every fused op must pass, written once; tests/test_<op>.py each subclass :class:`OpContract`.

A subclass (named ``Test...``, so pytest collects it) names the op and lists calls of it as :class:`Case`
objects; the tests here run them: comparison with the reference in every memory layout, the layout of the
output, an empty batch, gradcheck in float64, torch.library.opcheck of the op and of its backward,
torch.compile(fullgraph=True), the routing rule (kernel or reference), and bad input to the public
function and to the raw op. What only one op has (its kernels' code paths, its special values, its own
arguments) stays in its test file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
from conftest import LAYOUTS, check_against_reference, check_compiles_fullgraph, dispatch_key, in_layout
from torch.utils._python_dispatch import TorchDispatchMode

from pyaccel_nas import _extension, ops
from pyaccel_nas.ops import reference


@dataclass(frozen=True)
class Case:
    """One call of the op: ``call(fn, *inputs(device))`` with ``fn`` the public op or its reference."""

    id: str
    inputs: Callable[[str], Sequence[torch.Tensor]]
    call: Callable[..., torch.Tensor]


def requiring_grad(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors, set to require grad (for opcheck to check autograd too)."""
    return [t.requires_grad_() for t in tensors]


class _OpsCalled(TorchDispatchMode):
    """Records the name of every op dispatched below autograd (``pyaccel_nas::channel_gate``, ``aten::mul``)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


class OpContract:
    """A subclass sets:

    - ``name``: the op, as in ``pyaccel_nas.ops.<name>``, ``pyaccel_nas.ops.reference.<name>`` and
      ``torch.ops.pyaccel_nas.<name>``;
    - ``activations``: which inputs of a case are activations (batch first; the first one decides the
      output's memory layout); the others are parameters;
    - ``layout_cases``: float32 calls compared with the reference in every layout of the activations;
    - ``sample``: a small float64 call for the tests of the output layout, the empty batch, the routing
      rule (pyaccel_nas/ops/_routing.py) and inputs on two devices or in two dtypes;
    - ``gradcheck_cases``: float64 calls; ``compile_cases``: float32 calls, the op among other PyTorch ops;
    - ``opcheck_cases``: float32 calls, inputs that require grad where opcheck should check autograd;
    - ``bad_inputs``: (id, args, kwargs, message) calls the public function refuses with a ValueError
      matching message;

    and defines ``raw_args`` and ``backward_args``.
    """

    name: str
    activations: slice = slice(0, 1)
    layout_cases: Sequence[Case]
    sample: Case
    gradcheck_cases: Sequence[Case]
    compile_cases: Sequence[Case]
    opcheck_cases: Sequence[Case]
    bad_inputs: Sequence[tuple]

    def raw_args(self, *args, **kwargs) -> tuple:
        """The arguments of ``torch.ops.pyaccel_nas.<name>`` for a call of the public function with these."""
        raise NotImplementedError

    def backward_args(self, grad_out: torch.Tensor, raw_args: tuple) -> tuple:
        """The arguments of ``torch.ops.pyaccel_nas.<name>_backward`` after the raw op's call with raw_args."""
        raise NotImplementedError

    # Looked up at each use, so patching an op or a reference (to see these tests fail) reaches them.
    @property
    def op(self) -> Callable[..., torch.Tensor]:
        return getattr(ops, self.name)

    @property
    def reference(self) -> Callable[..., torch.Tensor]:
        return getattr(reference, self.name)

    @property
    def raw_op(self) -> torch._ops.OpOverloadPacket:
        return getattr(torch.ops.pyaccel_nas, self.name)

    @property
    def raw_backward(self) -> torch._ops.OpOverloadPacket:
        return getattr(torch.ops.pyaccel_nas, f"{self.name}_backward")

    def pytest_generate_tests(self, metafunc):
        # a test argument `layout_case` runs over `layout_cases`, `bad_input` over `bad_inputs`, ...
        for arg in metafunc.fixturenames:
            cases = getattr(self, f"{arg}s", None) if arg.endswith(("_case", "_input")) else None
            if cases is not None:
                metafunc.parametrize(arg, cases, ids=[c.id if isinstance(c, Case) else c[0] for c in cases])

    def _with_layout(self, tensors, layout: str, which: slice) -> list[torch.Tensor]:
        tensors = list(tensors)
        tensors[which] = [in_layout(t, layout) for t in tensors[which]]
        return tensors

    # --- values and gradients against the reference ------------------------------------------------------

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_layouts_match_reference(self, device, layout_case, layout):
        tensors = self._with_layout(layout_case.inputs(device), layout, self.activations)
        check_against_reference(
            lambda *t: layout_case.call(self.op, *t), lambda *t: layout_case.call(self.reference, *t), tensors
        )

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_output_takes_memory_layout_of_first_activation(self, device, layout):
        first = slice(self.activations.start, self.activations.start + 1)
        y = self.sample.call(self.op, *self._with_layout(self.sample.inputs(device), layout, first))
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        assert y.is_contiguous(memory_format=fmt)

    def test_empty_batch_gives_empty_output_and_zero_parameter_grads(self, device):
        tensors = list(self.sample.inputs(device))
        tensors[self.activations] = [t[:0] for t in tensors[self.activations]]
        leaves = [t.detach().requires_grad_() for t in tensors]
        y = self.sample.call(self.op, *leaves)
        assert y.shape == self.sample.call(self.reference, *tensors).shape and y.shape[0] == 0
        y.sum().backward()
        for k, t in enumerate(leaves):
            assert torch.equal(t.grad, torch.zeros_like(t)), f"input {k}"

    def test_gradcheck_float64(self, device, gradcheck_case):
        leaves = [t.detach().requires_grad_() for t in gradcheck_case.inputs(device)]
        assert torch.autograd.gradcheck(lambda *t: gradcheck_case.call(self.op, *t), leaves)

    # --- the dispatcher and the compiler -----------------------------------------------------------------

    def test_opcheck(self, device, opcheck_case):
        tensors = opcheck_case.inputs(device)
        torch.library.opcheck(self.raw_op, opcheck_case.call(self.raw_args, *tensors))
        detached = opcheck_case.call(self.raw_args, *(t.detach() for t in tensors))
        y = self.raw_op(*detached)
        y = y[0] if isinstance(y, tuple) else y  # the output; an op may return saved statistics after it
        grad_out = torch.randn(y.shape, dtype=y.dtype, device=y.device)
        torch.library.opcheck(self.raw_backward, self.backward_args(grad_out, detached))

    def test_dispatches_to_cpp_kernel(self, device):
        for name in (self.name, f"{self.name}_backward"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pyaccel_nas::{name}", dispatch_key(device))

    @pytest.mark.slow
    def test_torch_compile_fullgraph_forward_backward(self, device, compile_case):
        check_compiles_fullgraph(lambda *t: compile_case.call(self.op, *t), compile_case.inputs(device))

    def test_calls_the_kernel_exactly_where_the_routing_rule_says(self, device):
        """The kernel for the dtypes its device's kernels compute in; the reference, with the reference's
        result to the bit, for other dtypes, meta tensors and under autocast."""
        kernel = f"pyaccel_nas::{self.name}"
        tensors = self.sample.inputs(device)
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            cast = [t.to(dtype) for t in tensors]
            with _OpsCalled() as called:
                y = self.sample.call(self.op, *cast)
            if dtype in _extension.KERNEL_DTYPES[device]:
                assert kernel in called.names, dtype
            else:
                assert kernel not in called.names, dtype
                assert torch.equal(y, self.sample.call(self.reference, *cast)), dtype
        with _OpsCalled() as called:
            self.sample.call(self.op, *(t.to("meta") for t in tensors))
        assert kernel not in called.names
        cast = [t.float() for t in tensors]
        with torch.autocast(device, dtype=torch.bfloat16), _OpsCalled() as called:
            y = self.sample.call(self.op, *cast)
            assert kernel not in called.names
            assert torch.equal(y, self.sample.call(self.reference, *cast))

    # --- bad input ---------------------------------------------------------------------------------------

    def test_bad_input_raises_clear_error(self, bad_input):
        _, args, kwargs, message = bad_input
        with pytest.raises(ValueError, match=message):
            self.op(*args, **kwargs)

    def test_bad_input_to_raw_op_raises_value_error(self, bad_input):
        """The C++ wrapper checks on its own: calling torch.ops directly never reaches a kernel with bad input."""
        _, args, kwargs, _ = bad_input
        with pytest.raises(ValueError, match=f"pyaccel_nas::{self.name}"):
            self.raw_op(*self.raw_args(*args, **kwargs))

    def test_tensors_of_two_devices_or_dtypes_are_refused(self, device):
        """Each input in turn on another device (meta where there is only the CPU) or in another dtype."""
        tensors = [t.float() for t in self.sample.inputs(device)]
        if len(tensors) < 2:
            pytest.skip("the op takes one tensor: there is nothing to mix")
        for k in range(len(tensors)):
            other = list(tensors)
            other[k] = tensors[k].to("meta" if device == "cpu" else "cpu")
            with pytest.raises(ValueError, match="all tensors must be on one device"):
                self.sample.call(self.op, *other)
            other[k] = tensors[k].double()
            with pytest.raises(ValueError, match="all tensors must have one dtype"):
                self.sample.call(self.op, *other)
