// Autograd of multires_sum and multires_sum_backward for the Autograd dispatch key: torch::autograd::Functions
// around the op and its explicit backward (csrc/common/autograd.h says why autograd is C++).
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "../common/autograd.h"

namespace pyaccel_nas {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using MultiresSumSig = at::Tensor(at::TensorList, const at::Tensor&, at::OptionalIntArrayRef, c10::string_view);
using MultiresSumBackwardSig = std::tuple<std::vector<at::Tensor>, at::Tensor>(const at::Tensor&, at::TensorList,
                                                                               const at::Tensor&, c10::string_view);

constexpr char kMultiresSumName[] = "pyaccel_nas::multires_sum";
constexpr auto multires_sum_op = &registered_op<MultiresSumSig, kMultiresSumName>;

constexpr char kMultiresSumBackwardName[] = "pyaccel_nas::multires_sum_backward";
constexpr auto multires_sum_backward_op = &registered_op<MultiresSumBackwardSig, kMultiresSumBackwardName>;

class MultiresSumFunction : public torch::autograd::Function<MultiresSumFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::TensorList branches, const at::Tensor& weights,
                            at::OptionalIntArrayRef size, c10::string_view mode) {
    std::vector<at::Tensor> to_save(branches.begin(), branches.end());
    to_save.push_back(weights);
    ctx->save_for_backward(to_save);
    ctx->saved_data["mode"] = std::string(mode);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return multires_sum_op().call(branches, weights, size, mode);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list saved = ctx->get_saved_variables();
    const at::Tensor weights = saved.back();
    saved.pop_back();
    const std::string mode = ctx->saved_data.at("mode").toStringRef();
    auto [grad_branches, grad_weights] = multires_sum_backward_op().call(grad_outputs[0], saved, weights, mode);
    // one entry per branch, then weights, size, mode
    variable_list grads(grad_branches.begin(), grad_branches.end());
    grads.push_back(grad_weights);
    grads.emplace_back();
    grads.emplace_back();
    return grads;
  }
};

class MultiresSumBackwardFunction : public torch::autograd::Function<MultiresSumBackwardFunction> {
 public:
  // the gradients of the branches, then that of the weights
  static variable_list forward(AutogradContext*, const at::Tensor& grad_out, at::TensorList branches,
                               const at::Tensor& weights, c10::string_view mode) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_branches, grad_weights] = multires_sum_backward_op().call(grad_out, branches, weights, mode);
    variable_list grads(grad_branches.begin(), grad_branches.end());
    grads.push_back(grad_weights);
    return grads;
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward("multires_sum"); }
};

at::Tensor multires_sum_autograd(at::TensorList branches, const at::Tensor& weights, at::OptionalIntArrayRef size,
                                 c10::string_view mode) {
  if (!records_graph(branches, weights)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return multires_sum_op().call(branches, weights, size, mode);
  }
  return MultiresSumFunction::apply(branches, weights, size, mode);
}

std::tuple<std::vector<at::Tensor>, at::Tensor> multires_sum_backward_autograd(const at::Tensor& grad_out,
                                                                               at::TensorList branches,
                                                                               const at::Tensor& weights,
                                                                               c10::string_view mode) {
  if (!records_graph(grad_out, branches, weights)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return multires_sum_backward_op().call(grad_out, branches, weights, mode);
  }
  variable_list grads = MultiresSumBackwardFunction::apply(grad_out, branches, weights, mode);
  const at::Tensor grad_weights = grads.back();
  grads.pop_back();
  return {grads, grad_weights};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyaccel_nas, Autograd, m) {
  m.impl("multires_sum", &multires_sum_autograd);
  m.impl("multires_sum_backward", &multires_sum_backward_autograd);
}

}  // namespace pyaccel_nas
