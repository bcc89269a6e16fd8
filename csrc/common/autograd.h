// What the C++ autograd of every pyaccel_nas op (csrc/<op>/<op>_autograd.cpp) shares.
//
// Each op's autograd is registered for the Autograd dispatch key: one wiring for all devices (each device
// only registers forward and backward kernels), and a training step runs no Python per op. A Python
// `torch.library.register_autograd` did the same job at ~0.1-0.3 ms of interpreter work per
// forward+backward, as much as the kernels themselves at the small shapes of proxy training.
//
// Each forward saves only its inputs (sep_conv2d's backward recomputes the depthwise result) and calls the
// op below autograd; each backward calls the op's explicit `_backward` through the dispatcher, so
// torch.compile (AOTAutograd) traces the same two ops. The `_backward` ops are differentiable no further:
// under create_graph they record a node that raises if a second derivative is asked for (without an
// autograd kernel, PyTorch would only warn and treat them as constants, a silently wrong answer).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/functions/utils.h>

namespace pyaccel_nas {

// The registered op `Name` with the C++ signature `Sig` (it must match the op's schema, defined next to its
// wrappers in csrc/<op>/<op>.cpp), looked up once.
template <typename Sig, const char* Name>
const c10::TypedOperatorHandle<Sig>& registered_op() {
  static const auto handle = c10::Dispatcher::singleton().findSchemaOrThrow(Name, "").typed<Sig>();
  return handle;
}

// Whether a call records an autograd node: grad mode is on and an input requires grad. When it does not (no_grad
// evaluation, the backward ops inside a plain backward pass), the wrappers call the op below autograd at once:
// a custom Function allocates and wires its node even when it records nothing, which takes about as long as
// channel_gate's kernel on a small tensor.
template <typename... Args>
bool records_graph(const Args&... inputs) {
  return torch::autograd::compute_requires_grad(inputs...);
}

// The backward of a `_backward` op: second derivatives are not implemented.
[[noreturn]] inline void refuse_double_backward(const char* op_name) {
  TORCH_CHECK(false, "pyaccel_nas::", op_name, " is differentiable once: its backward has no derivative of its own. ",
              "For higher-order gradients use the reference ops (pyaccel_nas.ops.reference, or ",
              "pyaccel_nas.nn.set_fused(model, False)).");
}

}  // namespace pyaccel_nas
