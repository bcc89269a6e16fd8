// Autograd of batch_norm and batch_norm_backward for the Autograd dispatch key (csrc/common/autograd.h says
// why autograd is C++).
#include <ATen/FuncTorchTLS.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "../common/autograd.h"

namespace pyaccel_nas {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Optional = std::optional<at::Tensor>;

using BatchNormSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const Optional&, const Optional&,
                                                                    const Optional&, const Optional&, double, double);
using BatchNormBackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                            const Optional&, const at::Tensor&,
                                                                            const at::Tensor&);

constexpr char kBatchNormName[] = "pyaccel_nas::batch_norm";
constexpr auto batch_norm_op = &registered_op<BatchNormSig, kBatchNormName>;

constexpr char kBatchNormBackwardName[] = "pyaccel_nas::batch_norm_backward";
constexpr auto batch_norm_backward_op = &registered_op<BatchNormBackwardSig, kBatchNormBackwardName>;

// batch_norm's node, written out like PyTorch's generated ones, as channel_gate's (channel_gate_autograd.cpp
// says why): at the 8x8 and 4x4 planes of proxy networks the kernels take 10-15 us, and a Function's
// bookkeeping would add about half of that again.
struct BatchNormBackward : public torch::autograd::Node {
  torch::autograd::SavedVariable x_, weight_, mean_, invstd_;

  std::string name() const override { return "pyaccel_nas::BatchNormBackward"; }

  void release_variables() override {
    x_.reset_data();
    weight_.reset_data();
    mean_.reset_data();
    invstd_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const at::Tensor weight = weight_.unpack();
    auto [grad_x, grad_weight, grad_bias] =
        batch_norm_backward_op().call(grads[0], x_.unpack(), weight.defined() ? Optional(weight) : std::nullopt,
                                      mean_.unpack(), invstd_.unpack());
    return {should_compute_output(0) ? grad_x : at::Tensor(), should_compute_output(1) ? grad_weight : at::Tensor(),
            should_compute_output(2) ? grad_bias : at::Tensor()};
  }

  // Compiled autograd (torch._dynamo) traces apply() with its own saved tensors, as for generated nodes.
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(x_, false);
    args.collect(weight_, false);
    args.collect(mean_, false);
    args.collect(invstd_, false);
  }
  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    saved.before(x_);
    saved.before(weight_);
    saved.before(mean_);
    saved.before(invstd_);
    variable_list result = apply(variable_list(grads));
    saved.after(x_);
    saved.after(weight_);
    saved.after(mean_);
    saved.after(invstd_);
    return result;
  }
};

class BatchNormBackwardFunction : public torch::autograd::Function<BatchNormBackwardFunction> {
 public:
  static variable_list forward(AutogradContext*, const at::Tensor& grad_out, const at::Tensor& x,
                               const Optional& weight, const at::Tensor& mean, const at::Tensor& invstd) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_x, grad_weight, grad_bias] = batch_norm_backward_op().call(grad_out, x, weight, mean, invstd);
    return {grad_x, grad_weight, grad_bias};
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward("batch_norm"); }
};

// The in-place update of the running statistics, made visible to autograd's version checks (what the
// ADInplaceOrView kernel, which calls below autograd skip, would do).
void bump_versions(const Optional& running_mean, const Optional& running_var) {
  for (const Optional* t : {&running_mean, &running_var}) {
    if (t->has_value() && (*t)->defined()) torch::autograd::increment_version(**t);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_autograd(const at::Tensor& x, const Optional& weight,
                                                                   const Optional& bias, const Optional& running_mean,
                                                                   const Optional& running_var, double momentum,
                                                                   double eps) {
  if (!records_graph(x, weight, bias)) {
    std::tuple<at::Tensor, at::Tensor, at::Tensor> result;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      result = batch_norm_op().call(x, weight, bias, running_mean, running_var, momentum, eps);
    }
    bump_versions(running_mean, running_var);
    return result;
  }
  if (const auto& functorch_tls = at::functorch::functorchTLSAccessor()) {
    functorch_tls->checkSupportsCppAutogradFunction();  // raises: transforms need the reference ops
  }
  TORCH_CHECK(!torch::autograd::isFwGradDefined(x) && !torch::autograd::isFwGradDefined(weight) &&
                  !torch::autograd::isFwGradDefined(bias),
              "pyaccel_nas::batch_norm has no forward-mode derivative (jvp). For forward-mode AD use the ",
              "reference ops (pyaccel_nas.ops.reference, or pyaccel_nas.nn.set_fused(model, False)).");
  auto node = c10::make_intrusive<BatchNormBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(x, weight, bias));
  std::tuple<at::Tensor, at::Tensor, at::Tensor> result;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    result = batch_norm_op().call(x, weight, bias, running_mean, running_var, momentum, eps);
  }
  bump_versions(running_mean, running_var);
  auto& [y, mean, invstd] = result;
  node->x_ = torch::autograd::SavedVariable(x, false);
  node->weight_ = torch::autograd::SavedVariable(weight.value_or(at::Tensor()), false);
  node->mean_ = torch::autograd::SavedVariable(mean, false);
  node->invstd_ = torch::autograd::SavedVariable(invstd, false);
  torch::autograd::set_history(y, node);  // mean and invstd are statistics, not differentiable outputs
  return result;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_backward_autograd(const at::Tensor& grad_out,
                                                                            const at::Tensor& x, const Optional& weight,
                                                                            const at::Tensor& mean,
                                                                            const at::Tensor& invstd) {
  if (!records_graph(grad_out, x, weight, mean, invstd)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return batch_norm_backward_op().call(grad_out, x, weight, mean, invstd);
  }
  const variable_list grads = BatchNormBackwardFunction::apply(grad_out, x, weight, mean, invstd);
  return {grads[0], grads[1], grads[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyaccel_nas, Autograd, m) {
  m.impl("batch_norm", &batch_norm_autograd);
  m.impl("batch_norm_backward", &batch_norm_backward_autograd);
}

}  // namespace pyaccel_nas
