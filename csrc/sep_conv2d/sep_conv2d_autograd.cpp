// Autograd of sep_conv2d and sep_conv2d_backward for the Autograd dispatch key: torch::autograd::Functions
// around the op and its explicit backward (csrc/common/autograd.h says why autograd is C++).
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "../common/autograd.h"

namespace pyaccel_nas {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<int64_t> saved_ints(const AutogradContext* ctx, const char* key) {
  return ctx->saved_data.at(key).toIntVector();
}

using SepConv2dSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const std::optional<at::Tensor>&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                bool);
using SepConv2dBackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
    at::IntArrayRef, bool);

constexpr char kSepConv2dName[] = "pyaccel_nas::sep_conv2d";
constexpr auto sep_conv2d_op = &registered_op<SepConv2dSig, kSepConv2dName>;

constexpr char kSepConv2dBackwardName[] = "pyaccel_nas::sep_conv2d_backward";
constexpr auto sep_conv2d_backward_op = &registered_op<SepConv2dBackwardSig, kSepConv2dBackwardName>;

class SepConv2dFunction : public torch::autograd::Function<SepConv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& dw_weight,
                            const at::Tensor& pw_weight, const std::optional<at::Tensor>& pw_bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool pre_relu) {
    ctx->save_for_backward({x, dw_weight, pw_weight});
    ctx->saved_data["has_bias"] = pw_bias.has_value() && pw_bias->defined();
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["pre_relu"] = pre_relu;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return sep_conv2d_op().call(x, dw_weight, pw_weight, pw_bias, stride, padding, dilation, pre_relu);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    auto [grad_x, grad_dw, grad_pw, grad_bias] = sep_conv2d_backward_op().call(
        grad_outputs[0], saved[0], saved[1], saved[2], saved_ints(ctx, "stride"), saved_ints(ctx, "padding"),
        saved_ints(ctx, "dilation"), ctx->saved_data.at("pre_relu").toBool());
    if (!ctx->saved_data.at("has_bias").toBool()) grad_bias = at::Tensor();
    // one entry per forward argument; the non-tensor arguments get none
    return {grad_x, grad_dw, grad_pw, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class SepConv2dBackwardFunction : public torch::autograd::Function<SepConv2dBackwardFunction> {
 public:
  static variable_list forward(AutogradContext*, const at::Tensor& grad_out, const at::Tensor& x,
                               const at::Tensor& dw_weight, const at::Tensor& pw_weight, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool pre_relu) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_x, grad_dw, grad_pw, grad_bias] =
        sep_conv2d_backward_op().call(grad_out, x, dw_weight, pw_weight, stride, padding, dilation, pre_relu);
    return {grad_x, grad_dw, grad_pw, grad_bias};
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward("sep_conv2d"); }
};

at::Tensor sep_conv2d_autograd(const at::Tensor& x, const at::Tensor& dw_weight, const at::Tensor& pw_weight,
                               const std::optional<at::Tensor>& pw_bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool pre_relu) {
  if (!records_graph(x, dw_weight, pw_weight, pw_bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return sep_conv2d_op().call(x, dw_weight, pw_weight, pw_bias, stride, padding, dilation, pre_relu);
  }
  return SepConv2dFunction::apply(x, dw_weight, pw_weight, pw_bias, stride, padding, dilation, pre_relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sep_conv2d_backward_autograd(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& dw_weight, const at::Tensor& pw_weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool pre_relu) {
  if (!records_graph(grad_out, x, dw_weight, pw_weight)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return sep_conv2d_backward_op().call(grad_out, x, dw_weight, pw_weight, stride, padding, dilation, pre_relu);
  }
  const variable_list grads =
      SepConv2dBackwardFunction::apply(grad_out, x, dw_weight, pw_weight, stride, padding, dilation, pre_relu);
  return {grads[0], grads[1], grads[2], grads[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyaccel_nas, Autograd, m) {
  m.impl("sep_conv2d", &sep_conv2d_autograd);
  m.impl("sep_conv2d_backward", &sep_conv2d_backward_autograd);
}

}  // namespace pyaccel_nas
