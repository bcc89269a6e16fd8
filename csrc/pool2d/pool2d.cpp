// Tensor-level wrappers of pool2d: validation, layout, allocation, dtype dispatch. The op's schemas are
// defined here too, next to the wrappers that implement them; its autograd is in pool2d_autograd.cpp.
//
// On CUDA the wrappers call ATen's pooling kernels (the backward of max pooling recomputes the indices
// there): the op exists on that device to keep one model and one compiled graph for both devices.
#include "pool2d.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <string>

#include "../common/tensor_checks.h"

namespace pyaccel_nas {
namespace {

constexpr const char* kOp = "pyaccel_nas::pool2d";

PoolShape check_args(const at::Tensor& x, c10::string_view mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                     at::IntArrayRef padding, bool count_include_pad) {
  TORCH_CHECK_VALUE(x.dim() == 4, kOp, ": `x` must have rank 4 (N, C, H, W), got rank ", x.dim(), " with shape ",
                    x.sizes());
  check_floating(x, kOp, "x");
  TORCH_CHECK_VALUE(mode == "max" || mode == "avg", kOp, ": `mode` must be \"max\" or \"avg\", got \"",
                    std::string(mode), "\"");
  check_pair(kernel, kOp, "kernel_size", 1);
  check_pair(stride, kOp, "stride", 1);
  check_pair(padding, kOp, "padding", 0);
  // the CPU backward numbers a window's taps in the activation's dtype (exact below 2^24)
  TORCH_CHECK_VALUE(kernel[0] * kernel[1] < (int64_t(1) << 24), kOp, ": `kernel_size` ", kernel,
                    " has 2^24 taps or more");
  for (int d = 0; d < 2; ++d) {
    // torch's rule: a window is never all padding
    TORCH_CHECK_VALUE(padding[d] <= kernel[d] / 2, kOp, ": `padding` must be at most half of `kernel_size`, got ",
                      padding, " for kernel_size ", kernel);
    TORCH_CHECK_VALUE(x.size(2 + d) + 2 * padding[d] >= kernel[d], kOp, ": the padded input (",
                      x.size(2) + 2 * padding[0], " x ", x.size(3) + 2 * padding[1],
                      ") is smaller than the window ", kernel);
  }
  PoolShape s{};
  s.batch = x.size(0);
  s.channels = x.size(1);
  s.in_h = x.size(2);
  s.in_w = x.size(3);
  s.kernel_h = kernel[0];
  s.kernel_w = kernel[1];
  s.stride_h = stride[0];
  s.stride_w = stride[1];
  s.pad_h = padding[0];
  s.pad_w = padding[1];
  s.out_h = (s.in_h + 2 * s.pad_h - s.kernel_h) / s.stride_h + 1;
  s.out_w = (s.in_w + 2 * s.pad_w - s.kernel_w) / s.stride_w + 1;
  s.max = mode == "max";
  s.count_include_pad = count_include_pad;
  return s;
}

at::Tensor forward_impl(const at::Tensor& x_in, c10::string_view mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                        at::IntArrayRef padding, bool count_include_pad) {
  PoolShape s = check_args(x_in, mode, kernel, stride, padding, count_include_pad);
  check_kernel_dtype(x_in, kOp);
  const c10::OptionalDeviceGuard guard(x_in.device());
  const auto format = output_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  if (x.is_cuda()) {
    return s.max ? at::max_pool2d(x, kernel, stride, padding, {1, 1}, false)
                 : at::avg_pool2d(x, kernel, stride, padding, false, count_include_pad, std::nullopt);
  }
  at::Tensor y = at::empty({s.batch, s.channels, s.out_h, s.out_w}, x.options().memory_format(format));
  if (y.numel() == 0) return y;
  s.channels_last = format != at::MemoryFormat::Contiguous;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool2d_forward_cpu", [&] {
    pool2d_forward_cpu<scalar_t>(s, x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

at::Tensor backward_impl(const at::Tensor& grad_y_in, const at::Tensor& x_in, c10::string_view mode,
                         at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                         bool count_include_pad) {
  PoolShape s = check_args(x_in, mode, kernel, stride, padding, count_include_pad);
  check_kernel_dtype(x_in, kOp);
  check_same_device_dtype(grad_y_in, x_in, kOp, "grad_out", "x");
  TORCH_CHECK_VALUE(grad_y_in.dim() == 4 && grad_y_in.size(0) == s.batch && grad_y_in.size(1) == s.channels &&
                        grad_y_in.size(2) == s.out_h && grad_y_in.size(3) == s.out_w,
                    kOp, ": `grad_out` must have the output's shape (", s.batch, ", ", s.channels, ", ", s.out_h, ", ",
                    s.out_w, "), got ", grad_y_in.sizes());
  const c10::OptionalDeviceGuard guard(x_in.device());
  const auto format = output_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor grad_y = with_dense_images(grad_y_in, format);  // channels-first: images any distance apart
  if (x.is_cuda()) {
    if (!s.max) return at::avg_pool2d_backward(grad_y, x, kernel, stride, padding, false, count_include_pad, std::nullopt);
    const auto indices = std::get<1>(at::max_pool2d_with_indices(x, kernel, stride, padding, {1, 1}, false));
    return at::max_pool2d_with_indices_backward(grad_y, x, kernel, stride, padding, {1, 1}, false, indices);
  }
  at::Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format));  // the kernels write every entry
  if (grad_x.numel() == 0) return grad_x;
  s.channels_last = format != at::MemoryFormat::Contiguous;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool2d_backward_cpu", [&] {
    pool2d_backward_cpu<scalar_t>(s, grad_y.const_data_ptr<scalar_t>(), grad_y.stride(0),
                                  x.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>());
  });
  return grad_x;
}

}  // namespace

// F.max_pool2d (mode "max") or F.avg_pool2d (mode "avg", count_include_pad as there) of an (N, C, H, W)
// tensor, dilation 1 and ceil_mode False.
TORCH_LIBRARY_FRAGMENT(pyaccel_nas, m) {
  m.def(
      "pool2d(Tensor x, str mode, int[2] kernel_size, int[2] stride, int[2] padding, bool count_include_pad) -> "
      "Tensor");
  m.def(
      "pool2d_backward(Tensor grad_out, Tensor x, str mode, int[2] kernel_size, int[2] stride, int[2] padding, "
      "bool count_include_pad) -> Tensor");
}

TORCH_LIBRARY_IMPL(pyaccel_nas, CPU, m) {
  m.impl("pool2d", &forward_impl);
  m.impl("pool2d_backward", &backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(pyaccel_nas, CUDA, m) {
  m.impl("pool2d", &forward_impl);
  m.impl("pool2d_backward", &backward_impl);
}
#endif

}  // namespace pyaccel_nas
