// Autograd of channel_gate and channel_gate_backward for the Autograd dispatch key (csrc/common/autograd.h
// says why autograd is C++).
#include <ATen/FuncTorchTLS.h>
#include <torch/autograd.h>
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

using ChannelGateSig = at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<double>);
using ChannelGateBackwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                  const at::Tensor&, std::optional<double>);

constexpr char kChannelGateName[] = "pyaccel_nas::channel_gate";
constexpr auto channel_gate_op = &registered_op<ChannelGateSig, kChannelGateName>;

constexpr char kChannelGateBackwardName[] = "pyaccel_nas::channel_gate_backward";
constexpr auto channel_gate_backward_op = &registered_op<ChannelGateBackwardSig, kChannelGateBackwardName>;

// channel_gate's node, written out like PyTorch's generated ones (MulBackward0) rather than as a
// torch::autograd::Function: the op is one multiply per element, and a Function's per-call bookkeeping
// (context map, output wrapping, per-call vectors) was 5-6 us of a 25-60 us forward+backward at NAS shapes
// (1-element fwd+bwd 30.0 -> 24.3 us; eager's 30). The other ops do enough work per call not to need it.
// Like a Function's node it refuses forward-mode AD and functorch transforms, where it would be wrong.
struct ChannelGateBackward : public torch::autograd::Node {
  torch::autograd::SavedVariable x_, gate_;
  std::optional<double> threshold_;

  std::string name() const override { return "pyaccel_nas::ChannelGateBackward"; }

  void release_variables() override {
    x_.reset_data();
    gate_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor()};
    auto [grad_x, grad_gate] = channel_gate_backward_op().call(grads[0], x_.unpack(), gate_.unpack(), threshold_);
    return {should_compute_output(0) ? grad_x : at::Tensor(), should_compute_output(1) ? grad_gate : at::Tensor()};
  }

  // Compiled autograd (torch._dynamo) traces apply() with its own saved tensors, as for generated nodes.
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(x_, false);
    args.collect(gate_, false);
    args.collect(threshold_);
  }
  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    saved.before(x_);
    saved.before(gate_);
    variable_list result = apply(variable_list(grads));
    saved.after(x_);
    saved.after(gate_);
    return result;
  }
};

class ChannelGateBackwardFunction : public torch::autograd::Function<ChannelGateBackwardFunction> {
 public:
  static variable_list forward(AutogradContext*, const at::Tensor& grad_out, const at::Tensor& x,
                               const at::Tensor& gate, std::optional<double> threshold) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_x, grad_gate] = channel_gate_backward_op().call(grad_out, x, gate, threshold);
    return {grad_x, grad_gate};
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward("channel_gate"); }
};

at::Tensor channel_gate_autograd(const at::Tensor& x, const at::Tensor& gate, std::optional<double> threshold) {
  if (!records_graph(x, gate)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return channel_gate_op().call(x, gate, threshold);
  }
  if (const auto& functorch_tls = at::functorch::functorchTLSAccessor()) {
    functorch_tls->checkSupportsCppAutogradFunction();  // raises: transforms need the reference ops
  }
  TORCH_CHECK(!torch::autograd::isFwGradDefined(x) && !torch::autograd::isFwGradDefined(gate),
              "pyaccel_nas::channel_gate has no forward-mode derivative (jvp). For forward-mode AD use the ",
              "reference ops (pyaccel_nas.ops.reference, or pyaccel_nas.nn.set_fused(model, False)).");
  auto node = c10::make_intrusive<ChannelGateBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(x, gate));
  node->x_ = torch::autograd::SavedVariable(x, false);
  node->gate_ = torch::autograd::SavedVariable(gate, false);
  node->threshold_ = threshold;
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    y = channel_gate_op().call(x, gate, threshold);
  }
  torch::autograd::set_history(y, node);
  return y;
}

std::tuple<at::Tensor, at::Tensor> channel_gate_backward_autograd(const at::Tensor& grad_out, const at::Tensor& x,
                                                                  const at::Tensor& gate,
                                                                  std::optional<double> threshold) {
  if (!records_graph(grad_out, x, gate)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return channel_gate_backward_op().call(grad_out, x, gate, threshold);
  }
  const variable_list grads = ChannelGateBackwardFunction::apply(grad_out, x, gate, threshold);
  return {grads[0], grads[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyaccel_nas, Autograd, m) {
  m.impl("channel_gate", &channel_gate_autograd);
  m.impl("channel_gate_backward", &channel_gate_backward_autograd);
}

}  // namespace pyaccel_nas
