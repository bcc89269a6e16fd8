// Autograd of pool2d and pool2d_backward for the Autograd dispatch key: torch::autograd::Functions around the
// op and its explicit backward (csrc/common/autograd.h says why autograd is C++).
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "../common/autograd.h"

namespace pyaccel_nas {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using Pool2dSig = at::Tensor(const at::Tensor&, c10::string_view, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                             bool);
using Pool2dBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view, at::IntArrayRef,
                                     at::IntArrayRef, at::IntArrayRef, bool);

constexpr char kPool2dName[] = "pyaccel_nas::pool2d";
constexpr auto pool2d_op = &registered_op<Pool2dSig, kPool2dName>;

constexpr char kPool2dBackwardName[] = "pyaccel_nas::pool2d_backward";
constexpr auto pool2d_backward_op = &registered_op<Pool2dBackwardSig, kPool2dBackwardName>;

std::vector<int64_t> saved_ints(const AutogradContext* ctx, const char* key) {
  return ctx->saved_data.at(key).toIntVector();
}

// Saves only x: the backward of max pooling finds each window's maximum again (no index tensor kept).
class Pool2dFunction : public torch::autograd::Function<Pool2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::string_view mode, at::IntArrayRef kernel,
                            at::IntArrayRef stride, at::IntArrayRef padding, bool count_include_pad) {
    ctx->save_for_backward({x});
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["count_include_pad"] = count_include_pad;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return pool2d_op().call(x, mode, kernel, stride, padding, count_include_pad);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const std::string mode = ctx->saved_data.at("mode").toStringRef();
    at::Tensor grad_x = pool2d_backward_op().call(
        grad_outputs[0], saved[0], mode, saved_ints(ctx, "kernel"), saved_ints(ctx, "stride"),
        saved_ints(ctx, "padding"), ctx->saved_data.at("count_include_pad").toBool());
    // one entry per forward argument; the non-tensor arguments get none
    return {grad_x, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class Pool2dBackwardFunction : public torch::autograd::Function<Pool2dBackwardFunction> {
 public:
  static at::Tensor forward(AutogradContext*, const at::Tensor& grad_out, const at::Tensor& x, c10::string_view mode,
                            at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                            bool count_include_pad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return pool2d_backward_op().call(grad_out, x, mode, kernel, stride, padding, count_include_pad);
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward("pool2d"); }
};

at::Tensor pool2d_autograd(const at::Tensor& x, c10::string_view mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                           at::IntArrayRef padding, bool count_include_pad) {
  if (!records_graph(x)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return pool2d_op().call(x, mode, kernel, stride, padding, count_include_pad);
  }
  return Pool2dFunction::apply(x, mode, kernel, stride, padding, count_include_pad);
}

at::Tensor pool2d_backward_autograd(const at::Tensor& grad_out, const at::Tensor& x, c10::string_view mode,
                                    at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                                    bool count_include_pad) {
  if (!records_graph(grad_out, x)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return pool2d_backward_op().call(grad_out, x, mode, kernel, stride, padding, count_include_pad);
  }
  return Pool2dBackwardFunction::apply(grad_out, x, mode, kernel, stride, padding, count_include_pad);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyaccel_nas, Autograd, m) {
  m.impl("pool2d", &pool2d_autograd);
  m.impl("pool2d_backward", &pool2d_backward_autograd);
}

}  // namespace pyaccel_nas
