// Autograd of every pyaccel_nas op, registered for the Autograd dispatch key: one wiring for all devices
// (each device only registers forward and backward kernels), and a training step runs no Python per op.
// A Python `torch.library.register_autograd` did the same job at ~0.1-0.3 ms of interpreter work per
// forward+backward, as much as the kernels themselves at the small shapes of proxy training.
//
// Each forward saves only its inputs (sep_conv2d's backward recomputes the depthwise result) and calls the
// op below autograd; each backward calls the op's explicit `_backward` through the dispatcher, so
// torch.compile (AOTAutograd) traces the same two ops. The `_backward` ops are differentiable no further:
// under create_graph they record a node that raises if a second derivative is asked for (without an
// autograd kernel, PyTorch would only warn and treat them as constants, a silently wrong answer).
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/FuncTorchTLS.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace pyaccel_nas {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The registered op `Name` with the C++ signature `Sig` (it must match the schema in registration.cpp),
// looked up once.
template <typename Sig, const char* Name>
const c10::TypedOperatorHandle<Sig>& registered_op() {
  static const auto handle = c10::Dispatcher::singleton().findSchemaOrThrow(Name, "").typed<Sig>();
  return handle;
}

// Whether a call records an autograd node: grad mode is on and an input requires grad. When it does not (no_grad
// evaluation, the backward ops inside a plain backward pass), the wrappers call the op below autograd at once:
// a custom Function allocates and wires its node even when it records nothing, which takes about as long as
// channel_gate's kernel on a small tensor.
template <typename... Args>
bool records_graph(const Args&... inputs) {
  return torch::autograd::compute_requires_grad(inputs...);
}

// The backward of a `_backward` op: second derivatives are not implemented.
[[noreturn]] void refuse_double_backward(const char* op_name) {
  TORCH_CHECK(false, "pyaccel_nas::", op_name, " is differentiable once: its backward has no derivative of its own. ",
              "For higher-order gradients use the reference ops (pyaccel_nas.ops.reference, or ",
              "pyaccel_nas.nn.set_fused(model, False)).");
}

std::vector<int64_t> saved_ints(const AutogradContext* ctx, const char* key) {
  return ctx->saved_data.at(key).toIntVector();
}

// ---- sep_conv2d -------------------------------------------------------------------------------------------

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

// ---- channel_gate -----------------------------------------------------------------------------------------

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

// ---- multires_sum -----------------------------------------------------------------------------------------

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
  m.impl("sep_conv2d", &sep_conv2d_autograd);
  m.impl("sep_conv2d_backward", &sep_conv2d_backward_autograd);
  m.impl("channel_gate", &channel_gate_autograd);
  m.impl("channel_gate_backward", &channel_gate_backward_autograd);
  m.impl("multires_sum", &multires_sum_autograd);
  m.impl("multires_sum_backward", &multires_sum_backward_autograd);
}

}  // namespace pyaccel_nas
