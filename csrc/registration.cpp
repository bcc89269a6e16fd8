// Every schema of the pyaccel_nas op library, in one place. Kernels are registered per device next to
// their wrappers (csrc/<op>/<op>.cpp), autograd for all devices in csrc/autograd.cpp; fake kernels are
// registered from Python (pyaccel_nas/ops/).
#include <torch/library.h>

TORCH_LIBRARY(pyaccel_nas, m) {
  // Fused ReLU -> depthwise kxk -> pointwise 1x1 (+ bias). The backward recomputes the depthwise result.
  m.def(
      "sep_conv2d(Tensor x, Tensor dw_weight, Tensor pw_weight, Tensor? pw_bias, int[2] stride, "
      "int[2] padding, int[2] dilation, bool pre_relu) -> Tensor");
  m.def(
      "sep_conv2d_backward(Tensor grad_out, Tensor x, Tensor dw_weight, Tensor pw_weight, int[2] stride, "
      "int[2] padding, int[2] dilation, bool pre_relu) -> (Tensor grad_x, Tensor grad_dw_weight, "
      "Tensor grad_pw_weight, Tensor grad_pw_bias)");

  // x * gate over dim 1 of a rank 2-5 tensor; gates with |g| < threshold act as zero.
  m.def("channel_gate(Tensor x, Tensor gate, float? threshold) -> Tensor");
  m.def(
      "channel_gate_backward(Tensor grad_out, Tensor x, Tensor gate, float? threshold) -> (Tensor grad_x, "
      "Tensor grad_gate)");

  // sum_k weights[k] * interpolate(branches[k], size, mode) for 4-D/5-D branches at integer ratios.
  m.def("multires_sum(Tensor[] branches, Tensor weights, int[]? size, str mode) -> Tensor");
  m.def(
      "multires_sum_backward(Tensor grad_out, Tensor[] branches, Tensor weights, str mode) -> "
      "(Tensor[] grad_branches, Tensor grad_weights)");
}
