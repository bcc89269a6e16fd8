// Python bindings of the emulated CUDA launchers: each takes CPU tensors laid out as the op's wrapper
// (csrc/<op>/<op>.cpp) lays them out for the CUDA kernels, runs forward and backward, and returns the results.
#include <torch/extension.h>

#include <optional>
#include <vector>

#include "../../csrc/channel_gate/channel_gate.h"
#include "../../csrc/multires_sum/multires_sum.h"
#include "../../csrc/sep_conv2d/sep_conv2d.h"

namespace pyaccel_nas {
namespace {

#define DISPATCH(t, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "emulated", __VA_ARGS__)

// x, grad_y dense channels-first or channels-last; returns (y, grad_x, grad_gate).
std::vector<at::Tensor> channel_gate(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& grad_y,
                                     std::optional<double> threshold, bool channels_last, at::Tensor y,
                                     at::Tensor grad_x) {
  const int64_t spatial = x.numel() / (x.size(0) * x.size(1));
  const GateLayout l{x.size(0), x.size(1), spatial, channels_last};
  at::Tensor grad_gate = at::full_like(gate, std::numeric_limits<double>::quiet_NaN());
  DISPATCH(x, [&] {
    channel_gate_forward_cuda<scalar_t>(l, x.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(),
                                        threshold.has_value(), threshold.value_or(0.0), y.mutable_data_ptr<scalar_t>());
    channel_gate_backward_cuda<scalar_t>(l, grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                         gate.const_data_ptr<scalar_t>(), threshold.has_value(),
                                         threshold.value_or(0.0), grad_x.mutable_data_ptr<scalar_t>(),
                                         grad_gate.mutable_data_ptr<scalar_t>());
  });
  return {y, grad_x, grad_gate};
}

Strides5 strides5_of(const at::Tensor& t) {
  if (t.dim() == 4) return Strides5{t.stride(0), t.stride(1), 0, t.stride(2), t.stride(3)};
  return Strides5{t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4)};
}

// branches, y, grad_y, grad_branches dense in one format; returns (y, grad_weights).
std::vector<at::Tensor> multires_sum(const std::vector<at::Tensor>& branches, const at::Tensor& weights,
                                     at::Tensor y, const at::Tensor& grad_y, std::vector<at::Tensor> grad_branches,
                                     bool linear) {
  const int64_t d = y.dim();
  const MultiresShape s{y.size(0), y.size(1), d == 5 ? y.size(2) : 1, y.size(d - 2), y.size(d - 1), linear};
  std::vector<MultiresBranch> layout;
  std::vector<Strides5> grad_strides;
  for (size_t k = 0; k < branches.size(); ++k) {
    const auto& b = branches[k];
    layout.push_back(MultiresBranch{d == 5 ? b.size(2) : 1, b.size(d - 2), b.size(d - 1), strides5_of(b)});
    grad_strides.push_back(strides5_of(grad_branches[k]));
  }
  at::Tensor grad_weights = at::full_like(weights, std::numeric_limits<double>::quiet_NaN());
  DISPATCH(y, [&] {
    std::vector<const scalar_t*> ptrs;
    std::vector<scalar_t*> grad_ptrs;
    for (size_t k = 0; k < branches.size(); ++k) {
      ptrs.push_back(branches[k].const_data_ptr<scalar_t>());
      grad_ptrs.push_back(grad_branches[k].mutable_data_ptr<scalar_t>());
    }
    multires_sum_forward_cuda<scalar_t>(s, layout, ptrs, weights.const_data_ptr<scalar_t>(),
                                        y.mutable_data_ptr<scalar_t>(), strides5_of(y));
    multires_sum_backward_cuda<scalar_t>(s, layout, ptrs, weights.const_data_ptr<scalar_t>(),
                                         grad_y.const_data_ptr<scalar_t>(), strides5_of(grad_y), grad_ptrs,
                                         grad_strides, grad_weights.mutable_data_ptr<scalar_t>());
  });
  return {y, grad_weights};
}

Strides4 strides4_of(const at::Tensor& t) { return Strides4{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// x, grad_y: any strides; y, grad_x: preallocated, any strides. Returns (y, grad_x, grad_dw, grad_pw, grad_bias).
std::vector<at::Tensor> sep_conv2d(const at::Tensor& x, const at::Tensor& dw, const at::Tensor& pw,
                                   const std::optional<at::Tensor>& bias, std::vector<int64_t> stride,
                                   std::vector<int64_t> padding, std::vector<int64_t> dilation, bool pre_relu,
                                   at::Tensor y, const at::Tensor& grad_y, at::Tensor grad_x) {
  SepConv2dShape s{};
  s.batch = x.size(0);
  s.channels = x.size(1);
  s.out_channels = pw.size(0);
  s.in_h = x.size(2);
  s.in_w = x.size(3);
  s.out_h = y.size(2);
  s.out_w = y.size(3);
  s.kernel_h = dw.size(2);
  s.kernel_w = dw.size(3);
  s.stride_h = stride[0];
  s.stride_w = stride[1];
  s.pad_h = padding[0];
  s.pad_w = padding[1];
  s.dilation_h = dilation[0];
  s.dilation_w = dilation[1];
  s.pre_relu = pre_relu;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor grad_dw = at::full_like(dw, nan), grad_pw = at::full_like(pw, nan);
  at::Tensor grad_bias = at::full({s.out_channels}, nan, pw.options());
  DISPATCH(x, [&] {
    sep_conv2d_forward_cuda<scalar_t>(s, x.const_data_ptr<scalar_t>(), strides4_of(x), dw.const_data_ptr<scalar_t>(),
                                      pw.const_data_ptr<scalar_t>(),
                                      bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr,
                                      y.mutable_data_ptr<scalar_t>(), strides4_of(y));
    sep_conv2d_backward_cuda<scalar_t>(s, grad_y.const_data_ptr<scalar_t>(), strides4_of(grad_y),
                                       x.const_data_ptr<scalar_t>(), strides4_of(x), dw.const_data_ptr<scalar_t>(),
                                       pw.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(),
                                       strides4_of(grad_x), grad_dw.mutable_data_ptr<scalar_t>(),
                                       grad_pw.mutable_data_ptr<scalar_t>(), grad_bias.mutable_data_ptr<scalar_t>());
  });
  return {y, grad_x, grad_dw, grad_pw, grad_bias};
}

}  // namespace
}  // namespace pyaccel_nas

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("channel_gate", &pyaccel_nas::channel_gate);
  m.def("multires_sum", &pyaccel_nas::multires_sum);
  m.def("sep_conv2d", &pyaccel_nas::sep_conv2d);
}
