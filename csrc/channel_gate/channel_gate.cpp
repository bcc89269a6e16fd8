// Tensor-level wrappers of channel_gate: validation, layout, allocation, dtype dispatch. The same wrappers
// serve the CPU and (in a CUDA build) the CUDA kernels. The op's schemas are defined here too, next to the
// wrappers that implement them; its autograd is in channel_gate_autograd.cpp.
#include "channel_gate.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../common/tensor_checks.h"

namespace pyaccel_nas {
namespace {

constexpr const char* kOp = "pyaccel_nas::channel_gate";

void check_args(const at::Tensor& x, const at::Tensor& gate, std::optional<double> threshold) {
  TORCH_CHECK_VALUE(x.dim() >= 2 && x.dim() <= 5, kOp, ": `x` must have rank 2 to 5 (N, C, *spatial), got rank ", x.dim(),
              " with shape ", x.sizes());
  check_floating(x, kOp, "x");
  check_same_device_dtype(gate, x, kOp, "gate", "x");
  TORCH_CHECK_VALUE(gate.dim() == 1 && gate.size(0) == x.size(1), kOp, ": `gate` must have shape (C,) = (", x.size(1),
              ",) to match x of shape ", x.sizes(), ", got ", gate.sizes());
  TORCH_CHECK_VALUE(!threshold.has_value() || *threshold >= 0.0, kOp, ": `threshold` must be >= 0, got ",
              threshold.value_or(0.0));
}

GateLayout layout_of(const at::Tensor& x, at::MemoryFormat format) {
  const int64_t spatial = x.numel() == 0 ? 0 : x.numel() / (x.size(0) * x.size(1));
  return GateLayout{x.size(0), x.size(1), spatial, format != at::MemoryFormat::Contiguous};
}

at::Tensor forward_impl(const at::Tensor& x_in, const at::Tensor& gate_in, std::optional<double> threshold) {
  check_args(x_in, gate_in, threshold);
  check_kernel_dtype(x_in, kOp);
  const c10::OptionalDeviceGuard guard(x_in.device());  // CUDA: the kernels launch on x's device
  const auto format = output_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor gate = gate_in.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(format));
  if (x.numel() == 0) return y;
  if (x.is_cuda()) {
#ifdef WITH_CUDA
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "channel_gate_forward_cuda", [&] {
      channel_gate_forward_cuda<scalar_t>(layout_of(x, format), x.const_data_ptr<scalar_t>(),
                                          gate.const_data_ptr<scalar_t>(), threshold.has_value(),
                                          threshold.value_or(0.0), y.mutable_data_ptr<scalar_t>());
    });
#endif
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_gate_forward_cpu", [&] {
    channel_gate_forward_cpu<scalar_t>(layout_of(x, format), x.const_data_ptr<scalar_t>(),
                                       gate.const_data_ptr<scalar_t>(), threshold.has_value(),
                                       threshold.value_or(0.0), y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                                                                     const at::Tensor& gate_in,
                                                                     std::optional<double> threshold) {
  check_args(x_in, gate_in, threshold);
  check_kernel_dtype(x_in, kOp);
  check_same_device_dtype(grad_y_in, x_in, kOp, "grad_out", "x");
  TORCH_CHECK_VALUE(grad_y_in.sizes() == x_in.sizes(), kOp, ": `grad_out` must have the shape of x ", x_in.sizes(), ", got ",
              grad_y_in.sizes());
  const c10::OptionalDeviceGuard guard(x_in.device());
  const auto format = output_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor grad_y = grad_y_in.contiguous(format);
  const at::Tensor gate = gate_in.contiguous();
  at::Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format));
  if (x.numel() == 0) return {grad_x, at::zeros(gate.sizes(), gate.options())};
  at::Tensor grad_gate = at::empty(gate.sizes(), gate.options());  // the kernels write every entry
  if (x.is_cuda()) {
#ifdef WITH_CUDA
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "channel_gate_backward_cuda", [&] {
      channel_gate_backward_cuda<scalar_t>(layout_of(x, format), grad_y.const_data_ptr<scalar_t>(),
                                           x.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(),
                                           threshold.has_value(), threshold.value_or(0.0),
                                           grad_x.mutable_data_ptr<scalar_t>(), grad_gate.mutable_data_ptr<scalar_t>());
    });
#endif
    return {grad_x, grad_gate};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_gate_backward_cpu", [&] {
    channel_gate_backward_cpu<scalar_t>(layout_of(x, format), grad_y.const_data_ptr<scalar_t>(),
                                        x.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(),
                                        threshold.has_value(), threshold.value_or(0.0),
                                        grad_x.mutable_data_ptr<scalar_t>(), grad_gate.mutable_data_ptr<scalar_t>());
  });
  return {grad_x, grad_gate};
}

}  // namespace

// x * gate over dim 1 of a rank 2-5 tensor; gates with |g| < threshold act as zero.
TORCH_LIBRARY_FRAGMENT(pyaccel_nas, m) {
  m.def("channel_gate(Tensor x, Tensor gate, float? threshold) -> Tensor");
  m.def(
      "channel_gate_backward(Tensor grad_out, Tensor x, Tensor gate, float? threshold) -> (Tensor grad_x, "
      "Tensor grad_gate)");
}

TORCH_LIBRARY_IMPL(pyaccel_nas, CPU, m) {
  m.impl("channel_gate", &forward_impl);
  m.impl("channel_gate_backward", &backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(pyaccel_nas, CUDA, m) {
  m.impl("channel_gate", &forward_impl);
  m.impl("channel_gate_backward", &backward_impl);
}
#endif

}  // namespace pyaccel_nas
