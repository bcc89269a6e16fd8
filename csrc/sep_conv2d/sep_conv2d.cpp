// Tensor-level wrappers of sep_conv2d: validation, layout, allocation, dtype dispatch. The same wrappers
// serve the CPU and (in a CUDA build) the CUDA kernels. The op's schemas are defined here too, next to the
// wrappers that implement them; its autograd is in sep_conv2d_autograd.cpp.
#include "sep_conv2d.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../common/tensor_checks.h"

namespace pyaccel_nas {
namespace {

constexpr const char* kOp = "pyaccel_nas::sep_conv2d";

SepConv2dShape check_args(const at::Tensor& x, const at::Tensor& dw, const at::Tensor& pw,
                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, bool pre_relu) {
  TORCH_CHECK_VALUE(x.dim() == 4, kOp, ": `x` must have rank 4 (N, C, H, W), got rank ", x.dim(), " with shape ", x.sizes());
  check_floating(x, kOp, "x");
  const int64_t C = x.size(1);
  // a depthwise conv of no channels has no groups: torch's conv2d (the reference) refuses it too
  TORCH_CHECK_VALUE(C > 0, kOp, ": `x` must have C >= 1 channels, got shape ", x.sizes());
  check_same_device_dtype(dw, x, kOp, "dw_weight", "x");
  check_same_device_dtype(pw, x, kOp, "pw_weight", "x");
  TORCH_CHECK_VALUE(dw.dim() == 4 && dw.size(0) == C && dw.size(1) == 1 && dw.size(2) > 0 && dw.size(3) > 0, kOp,
              ": `dw_weight` must have shape (C, 1, kh, kw) with C = ", C, " (channels of x), got ", dw.sizes());
  TORCH_CHECK_VALUE(pw.dim() == 4 && pw.size(0) > 0 && pw.size(1) == C && pw.size(2) == 1 && pw.size(3) == 1, kOp,
              ": `pw_weight` must have shape (C_out, C, 1, 1) with C = ", C, " (channels of x), got ", pw.sizes());
  if (bias.has_value()) {
    check_same_device_dtype(*bias, x, kOp, "pw_bias", "x");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == pw.size(0), kOp, ": `pw_bias` must have shape (C_out,) = (",
                pw.size(0), ",), got ", bias->sizes());
  }
  check_pair(stride, kOp, "stride", 1);
  check_pair(padding, kOp, "padding", 0);
  check_pair(dilation, kOp, "dilation", 1);
  TORCH_CHECK_VALUE(dw.size(2) < kMaxGeometry && dw.size(3) < kMaxGeometry, kOp, ": kernel size too large: ", dw.sizes());

  SepConv2dShape s{};
  s.batch = x.size(0);
  s.channels = C;
  s.out_channels = pw.size(0);
  s.in_h = x.size(2);
  s.in_w = x.size(3);
  s.kernel_h = dw.size(2);
  s.kernel_w = dw.size(3);
  s.stride_h = stride[0];
  s.stride_w = stride[1];
  s.pad_h = padding[0];
  s.pad_w = padding[1];
  s.dilation_h = dilation[0];
  s.dilation_w = dilation[1];
  s.pre_relu = pre_relu;
  const int64_t span_h = s.dilation_h * (s.kernel_h - 1) + 1, span_w = s.dilation_w * (s.kernel_w - 1) + 1;
  TORCH_CHECK_VALUE(s.in_h + 2 * s.pad_h >= span_h && s.in_w + 2 * s.pad_w >= span_w, kOp,
              ": padded input (", s.in_h + 2 * s.pad_h, " x ", s.in_w + 2 * s.pad_w,
              ") is smaller than the dilated kernel (", span_h, " x ", span_w, ")");
  s.out_h = (s.in_h + 2 * s.pad_h - span_h) / s.stride_h + 1;
  s.out_w = (s.in_w + 2 * s.pad_w - span_w) / s.stride_w + 1;
  return s;
}

Strides4 strides4_of(const at::Tensor& t) { return Strides4{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

#ifdef WITH_CUDA
// The CUDA kernels read x and grad_y through their strides and write y and grad_x in the output layout
// directly: no copies for channels_last or strided inputs.
at::Tensor forward_cuda(const SepConv2dShape& s, const at::Tensor& x, const at::Tensor& dw, const at::Tensor& pw,
                        const std::optional<at::Tensor>& bias, at::MemoryFormat format) {
  at::Tensor y = at::empty({s.batch, s.out_channels, s.out_h, s.out_w}, x.options().memory_format(format));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sep_conv2d_forward_cuda", [&] {
    sep_conv2d_forward_cuda<scalar_t>(s, x.const_data_ptr<scalar_t>(), strides4_of(x), dw.const_data_ptr<scalar_t>(),
                                      pw.const_data_ptr<scalar_t>(),
                                      bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr,
                                      y.mutable_data_ptr<scalar_t>(), strides4_of(y));
  });
  return y;
}

void backward_cuda(const SepConv2dShape& s, const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& dw,
                   const at::Tensor& pw, at::Tensor& grad_x, at::Tensor& grad_dw, at::Tensor& grad_pw,
                   at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sep_conv2d_backward_cuda", [&] {
    sep_conv2d_backward_cuda<scalar_t>(s, grad_y.const_data_ptr<scalar_t>(), strides4_of(grad_y),
                                       x.const_data_ptr<scalar_t>(), strides4_of(x), dw.const_data_ptr<scalar_t>(),
                                       pw.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(),
                                       strides4_of(grad_x), grad_dw.mutable_data_ptr<scalar_t>(),
                                       grad_pw.mutable_data_ptr<scalar_t>(), grad_bias.mutable_data_ptr<scalar_t>());
  });
}
#endif

at::Tensor forward_impl(const at::Tensor& x_in, const at::Tensor& dw_in, const at::Tensor& pw_in,
                        const std::optional<at::Tensor>& bias_in, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation, bool pre_relu) {
  const SepConv2dShape s = check_args(x_in, dw_in, pw_in, bias_in, stride, padding, dilation, pre_relu);
  check_kernel_dtype(x_in, kOp);
  const c10::OptionalDeviceGuard guard(x_in.device());  // CUDA: the kernels launch on x's device
  const auto format = output_memory_format(x_in);
  const at::Tensor dw = dw_in.contiguous(), pw = pw_in.contiguous();
  const std::optional<at::Tensor> bias = bias_in.has_value() ? std::optional(bias_in->contiguous()) : std::nullopt;
#ifdef WITH_CUDA
  if (x_in.is_cuda()) return forward_cuda(s, x_in, dw, pw, bias, format);
#endif
  // The CPU kernels compute in NCHW (vectors along the width and the pixels of a plane); a channels_last input
  // gets a channels_last output, converted once at the end.
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty({s.batch, s.out_channels, s.out_h, s.out_w}, x.options());
  if (y.numel() == 0) return y.contiguous(format);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sep_conv2d_forward_cpu", [&] {
    sep_conv2d_forward_cpu<scalar_t>(s, x.const_data_ptr<scalar_t>(), dw.const_data_ptr<scalar_t>(),
                                     pw.const_data_ptr<scalar_t>(),
                                     bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr,
                                     y.mutable_data_ptr<scalar_t>());
  });
  if (format != at::MemoryFormat::Contiguous) y = y.contiguous(format);
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_impl(
    const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& dw_in, const at::Tensor& pw_in,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool pre_relu) {
  const SepConv2dShape s = check_args(x_in, dw_in, pw_in, std::nullopt, stride, padding, dilation, pre_relu);
  check_kernel_dtype(x_in, kOp);
  check_same_device_dtype(grad_y_in, x_in, kOp, "grad_out", "x");
  TORCH_CHECK_VALUE(grad_y_in.sizes() == at::IntArrayRef({s.batch, s.out_channels, s.out_h, s.out_w}), kOp,
              ": `grad_out` must have the output shape (", s.batch, ", ", s.out_channels, ", ", s.out_h, ", ", s.out_w,
              "), got ", grad_y_in.sizes());
  const c10::OptionalDeviceGuard guard(x_in.device());
  const auto format = output_memory_format(x_in);
  // CPU: dense NCHW copies; CUDA: any strides
  const at::Tensor x = x_in.is_cuda() ? x_in : x_in.contiguous();
  const at::Tensor grad_y = grad_y_in.is_cuda() ? grad_y_in : grad_y_in.contiguous();
  const at::Tensor dw = dw_in.contiguous(), pw = pw_in.contiguous();
  at::Tensor grad_dw = at::zeros(dw.sizes(), dw.options());
  at::Tensor grad_pw = at::zeros(pw.sizes(), pw.options());
  at::Tensor grad_bias = at::zeros({s.out_channels}, pw.options());
  if (x.numel() == 0 || grad_y.numel() == 0) {
    // at::zeros ignores the memory format of its options: allocate empty in the format, then zero.
    return {at::empty(x.sizes(), x.options().memory_format(format)).zero_(), grad_dw, grad_pw, grad_bias};
  }
#ifdef WITH_CUDA
  if (x.is_cuda()) {
    at::Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format));  // every element is written
    backward_cuda(s, grad_y, x, dw, pw, grad_x, grad_dw, grad_pw, grad_bias);
    return {grad_x, grad_dw, grad_pw, grad_bias};
  }
#endif
  at::Tensor grad_x = at::empty(x.sizes(), x.options());  // the kernel writes every element
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sep_conv2d_backward_cpu", [&] {
    sep_conv2d_backward_cpu<scalar_t>(s, grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                      dw.const_data_ptr<scalar_t>(), pw.const_data_ptr<scalar_t>(),
                                      grad_x.mutable_data_ptr<scalar_t>(), grad_dw.mutable_data_ptr<scalar_t>(),
                                      grad_pw.mutable_data_ptr<scalar_t>(), grad_bias.mutable_data_ptr<scalar_t>());
  });
  if (format != at::MemoryFormat::Contiguous) grad_x = grad_x.contiguous(format);
  return {grad_x, grad_dw, grad_pw, grad_bias};
}

}  // namespace

// Fused ReLU -> depthwise kxk -> pointwise 1x1 (+ bias). The backward recomputes the depthwise result.
TORCH_LIBRARY_FRAGMENT(pyaccel_nas, m) {
  m.def(
      "sep_conv2d(Tensor x, Tensor dw_weight, Tensor pw_weight, Tensor? pw_bias, int[2] stride, "
      "int[2] padding, int[2] dilation, bool pre_relu) -> Tensor");
  m.def(
      "sep_conv2d_backward(Tensor grad_out, Tensor x, Tensor dw_weight, Tensor pw_weight, int[2] stride, "
      "int[2] padding, int[2] dilation, bool pre_relu) -> (Tensor grad_x, Tensor grad_dw_weight, "
      "Tensor grad_pw_weight, Tensor grad_pw_bias)");
}

TORCH_LIBRARY_IMPL(pyaccel_nas, CPU, m) {
  m.impl("sep_conv2d", &forward_impl);
  m.impl("sep_conv2d_backward", &backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(pyaccel_nas, CUDA, m) {
  m.impl("sep_conv2d", &forward_impl);
  m.impl("sep_conv2d_backward", &backward_impl);
}
#endif

}  // namespace pyaccel_nas
