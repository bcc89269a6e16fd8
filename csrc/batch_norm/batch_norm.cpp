// Tensor-level wrappers of batch_norm (training mode: batch statistics): validation, layout, allocation,
// dtype dispatch. The op's schemas are defined here too, next to the wrappers that implement them; its
// autograd is in batch_norm_autograd.cpp.
//
// On CUDA the wrappers call ATen's own batch-norm kernels (at::native_batch_norm and its backward): there
// they already make one pass per sum and run at the memory bound, so the op exists on that device to keep
// one model, one compiled graph and one checkpoint for both devices, not to be faster.
#include "batch_norm.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../common/tensor_checks.h"

namespace pyaccel_nas {
namespace {

constexpr const char* kOp = "pyaccel_nas::batch_norm";

void check_per_channel(const std::optional<at::Tensor>& t, const at::Tensor& x, const char* name) {
  if (!t.has_value() || !t->defined()) return;
  check_same_device_dtype(*t, x, kOp, name, "x");
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == x.size(1), kOp, ": `", name, "` must have shape (C,) = (",
                    x.size(1), ",) to match x of shape ", x.sizes(), ", got ", t->sizes());
}

void check_args(const at::Tensor& x, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
                double eps) {
  TORCH_CHECK_VALUE(x.dim() >= 2 && x.dim() <= 5, kOp, ": `x` must have rank 2 to 5 (N, C, *spatial), got rank ",
                    x.dim(), " with shape ", x.sizes());
  check_floating(x, kOp, "x");
  check_per_channel(weight, x, "weight");
  check_per_channel(bias, x, "bias");
  check_per_channel(running_mean, x, "running_mean");
  check_per_channel(running_var, x, "running_var");
  // torch's message and rule: one value per channel has no variance (and an infinite unbiased one)
  TORCH_CHECK_VALUE(x.numel() == 0 || x.numel() / x.size(1) > 1, kOp,
                    ": Expected more than 1 value per channel when training, got input size ", x.sizes());
  TORCH_CHECK_VALUE(eps >= 0.0, kOp, ": `eps` must be >= 0, got ", eps);
}

NormLayout layout_of(const at::Tensor& x, at::MemoryFormat format) {
  const int64_t spatial = x.numel() == 0 ? 0 : x.numel() / (x.size(0) * x.size(1));
  // (N, C) and 1x1 planes are rows of C channels either way
  return NormLayout{x.size(0), x.size(1), spatial, format != at::MemoryFormat::Contiguous || spatial == 1};
}

std::optional<at::Tensor> contiguous_or_none(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? std::optional(t->contiguous()) : std::nullopt;
}

const at::Tensor* defined_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? &*t : nullptr;
}

template <typename T>
const T* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->const_data_ptr<T>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(const at::Tensor& x_in,
                                                            const std::optional<at::Tensor>& weight_in,
                                                            const std::optional<at::Tensor>& bias_in,
                                                            const std::optional<at::Tensor>& running_mean,
                                                            const std::optional<at::Tensor>& running_var,
                                                            double momentum, double eps) {
  check_args(x_in, weight_in, bias_in, running_mean, running_var, eps);
  check_kernel_dtype(x_in, kOp);
  const c10::OptionalDeviceGuard guard(x_in.device());
  const auto format = output_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const int64_t C = x.size(1);
  if (x.numel() == 0) {
    // as torch: nothing to normalize, the running statistics stay
    return {at::empty(x.sizes(), x.options().memory_format(format)), at::zeros({C}, x.options()),
            at::zeros({C}, x.options())};
  }
  if (x.is_cuda()) {
    return at::native_batch_norm(x, weight_in, bias_in, running_mean, running_var, /*training=*/true, momentum, eps);
  }
  const std::optional<at::Tensor> weight = contiguous_or_none(weight_in), bias = contiguous_or_none(bias_in);
  // the running statistics are updated in place; a non-contiguous one through a contiguous copy
  const at::Tensor* mean_out = defined_or_null(running_mean);
  const at::Tensor* var_out = defined_or_null(running_var);
  at::Tensor new_mean = mean_out ? mean_out->contiguous() : at::Tensor();
  at::Tensor new_var = var_out ? var_out->contiguous() : at::Tensor();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(format));
  at::Tensor save_mean = at::empty({C}, x.options()), save_invstd = at::empty({C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_forward_cpu", [&] {
    batch_norm_forward_cpu<scalar_t>(layout_of(x, format), x.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(weight),
                                     data_or_null<scalar_t>(bias),
                                     mean_out ? new_mean.mutable_data_ptr<scalar_t>() : nullptr,
                                     var_out ? new_var.mutable_data_ptr<scalar_t>() : nullptr, momentum, eps,
                                     y.mutable_data_ptr<scalar_t>(), save_mean.mutable_data_ptr<scalar_t>(),
                                     save_invstd.mutable_data_ptr<scalar_t>());
  });
  if (mean_out && !new_mean.is_same(*mean_out)) mean_out->copy_(new_mean);
  if (var_out && !new_var.is_same(*var_out)) var_out->copy_(new_var);
  return {y, save_mean, save_invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                                                             const std::optional<at::Tensor>& weight_in,
                                                             const at::Tensor& mean_in, const at::Tensor& invstd_in) {
  check_args(x_in, weight_in, std::nullopt, std::nullopt, std::nullopt, 0.0);
  check_kernel_dtype(x_in, kOp);
  check_same_device_dtype(grad_y_in, x_in, kOp, "grad_out", "x");
  TORCH_CHECK_VALUE(grad_y_in.sizes() == x_in.sizes(), kOp, ": `grad_out` must have the shape of x ", x_in.sizes(),
                    ", got ", grad_y_in.sizes());
  check_per_channel(mean_in, x_in, "mean");
  check_per_channel(invstd_in, x_in, "invstd");
  const c10::OptionalDeviceGuard guard(x_in.device());
  const auto format = output_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor grad_y = with_dense_images(grad_y_in, format);  // channels-first: images any distance apart
  const int64_t C = x.size(1);
  if (x.numel() == 0) {
    return {at::empty(x.sizes(), x.options().memory_format(format)), at::zeros({C}, x.options()),
            at::zeros({C}, x.options())};
  }
  // an absent weight is 1 (and still gets its gradient computed: the autograd drops it)
  const at::Tensor weight = weight_in.has_value() && weight_in->defined() ? weight_in->contiguous()
                                                                         : at::ones({C}, x.options());
  if (x.is_cuda()) {
    return at::native_batch_norm_backward(grad_y, x, weight, std::nullopt, std::nullopt, mean_in, invstd_in,
                                          /*train=*/true, /*eps (unused in training)=*/0.0, {true, true, true});
  }
  const at::Tensor mean = mean_in.contiguous(), invstd = invstd_in.contiguous();
  at::Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format));
  at::Tensor grad_weight = at::empty({C}, x.options()), grad_bias = at::empty({C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_backward_cpu", [&] {
    batch_norm_backward_cpu<scalar_t>(layout_of(x, format), grad_y.const_data_ptr<scalar_t>(), grad_y.stride(0),
                                      x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                      mean.const_data_ptr<scalar_t>(), invstd.const_data_ptr<scalar_t>(),
                                      grad_x.mutable_data_ptr<scalar_t>(), grad_weight.mutable_data_ptr<scalar_t>(),
                                      grad_bias.mutable_data_ptr<scalar_t>());
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

// Training-mode batch normalization over dim 1 of a rank 2-5 tensor: F.batch_norm(x, running_mean,
// running_var, weight, bias, training=True, momentum, eps), with the batch mean and 1/sqrt(var + eps)
// returned for the backward.
TORCH_LIBRARY_FRAGMENT(pyaccel_nas, m) {
  m.def(
      "batch_norm(Tensor x, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, Tensor(b!)? running_var, "
      "float momentum, float eps) -> (Tensor y, Tensor mean, Tensor invstd)");
  m.def(
      "batch_norm_backward(Tensor grad_out, Tensor x, Tensor? weight, Tensor mean, Tensor invstd) -> "
      "(Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");
}

TORCH_LIBRARY_IMPL(pyaccel_nas, CPU, m) {
  m.impl("batch_norm", &forward_impl);
  m.impl("batch_norm_backward", &backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(pyaccel_nas, CUDA, m) {
  m.impl("batch_norm", &forward_impl);
  m.impl("batch_norm_backward", &backward_impl);
}
#endif

}  // namespace pyaccel_nas
