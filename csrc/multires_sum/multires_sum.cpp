// Tensor-level wrappers of multires_sum: validation, layout, allocation, dtype dispatch. The same wrappers
// serve the CPU and (in a CUDA build) the CUDA kernels. The op's schemas are defined here too, next to the
// wrappers that implement them; its autograd is in multires_sum_autograd.cpp.
#include "multires_sum.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "../common/tensor_checks.h"

namespace pyaccel_nas {
namespace {

constexpr const char* kOp = "pyaccel_nas::multires_sum";

bool is_linear_mode(const std::string& mode, int64_t rank) {
  if (mode == "nearest") return false;
  const char* linear = rank == 4 ? "bilinear" : "trilinear";
  TORCH_CHECK_VALUE(mode == linear, kOp, ": `mode` must be 'nearest' or '", linear, "' for rank-", rank,
              " branches, got '", mode, "'");
  return true;
}

// Validates the branches and weights and returns the output spatial size.
std::vector<int64_t> check_args(at::TensorList branches, const at::Tensor& weights,
                                at::OptionalIntArrayRef size) {
  TORCH_CHECK_VALUE(!branches.empty(), kOp, ": `branches` must not be empty");
  const at::Tensor& first = branches[0];
  const int64_t rank = first.dim();
  TORCH_CHECK_VALUE(rank == 4 || rank == 5, kOp, ": branches must be 4-D (N, C, H, W) or 5-D (N, C, T, H, W), got branch 0 "
              "with shape ", first.sizes());
  check_floating(first, kOp, "branches[0]");
  for (size_t k = 0; k < branches.size(); ++k) {
    const at::Tensor& b = branches[k];
    const std::string name = "branches[" + std::to_string(k) + "]";
    check_same_device_dtype(b, first, kOp, name.c_str(), "branches[0]");
    TORCH_CHECK_VALUE(b.dim() == rank && b.size(0) == first.size(0) && b.size(1) == first.size(1), kOp, ": `", name,
                "` must have rank ", rank, " and (N, C) = (", first.size(0), ", ", first.size(1),
                ") like branches[0], got shape ", b.sizes());
    for (int64_t d = 2; d < rank; ++d) {
      TORCH_CHECK_VALUE(b.size(d) > 0, kOp, ": `", name, "` has an empty spatial dimension: shape ", b.sizes());
    }
  }
  check_same_device_dtype(weights, first, kOp, "weights", "branches[0]");
  TORCH_CHECK_VALUE(weights.dim() == 1 && weights.size(0) == static_cast<int64_t>(branches.size()), kOp,
              ": `weights` must have shape (", branches.size(), ",), one per branch, got ", weights.sizes());

  std::vector<int64_t> out(rank - 2, 0);
  if (size.has_value()) {
    TORCH_CHECK_VALUE(static_cast<int64_t>(size->size()) == rank - 2, kOp, ": `size` must have ", rank - 2,
                " elements for rank-", rank, " branches, got ", *size);
    out.assign(size->begin(), size->end());
  } else {
    for (const auto& b : branches)
      for (int64_t d = 2; d < rank; ++d) out[d - 2] = std::max(out[d - 2], b.size(d));
  }
  for (size_t k = 0; k < branches.size(); ++k) {
    for (int64_t d = 2; d < rank; ++d) {
      TORCH_CHECK_VALUE(out[d - 2] > 0 && out[d - 2] % branches[k].size(d) == 0, kOp, ": the output size ",
                  at::IntArrayRef(out), " must be a positive integer multiple of every branch's spatial size; branch ",
                  k, " has shape ", branches[k].sizes());
    }
  }
  return out;
}

Strides5 strides5_of(const at::Tensor& t) {
  if (t.dim() == 4) return Strides5{t.stride(0), t.stride(1), 0, t.stride(2), t.stride(3)};
  return Strides5{t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4)};
}

MultiresBranch branch_of(const at::Tensor& t) {
  const int64_t d = t.dim();
  return MultiresBranch{d == 5 ? t.size(2) : 1, t.size(d - 2), t.size(d - 1), strides5_of(t)};
}

MultiresShape shape_of(const at::Tensor& first, const std::vector<int64_t>& out, bool linear) {
  const size_t r = out.size();
  return MultiresShape{first.size(0), first.size(1), r == 3 ? out[0] : 1, out[r - 2], out[r - 1], linear};
}

// What the kernels take for a list of branches: their geometry and data pointers.
template <typename T>
struct KernelInputs {
  std::vector<MultiresBranch> layout;
  std::vector<const T*> branches;
};

template <typename T>
KernelInputs<T> kernel_inputs(const std::vector<at::Tensor>& branches) {
  KernelInputs<T> in;
  for (const auto& b : branches) {
    in.layout.push_back(branch_of(b));
    in.branches.push_back(b.const_data_ptr<T>());
  }
  return in;
}

template <typename T>
std::vector<T*> mutable_ptrs(std::vector<at::Tensor>& tensors) {
  std::vector<T*> out;
  for (auto& t : tensors) out.push_back(t.mutable_data_ptr<T>());
  return out;
}

std::vector<at::Tensor> in_layout(at::TensorList branches, at::MemoryFormat format) {
  std::vector<at::Tensor> out;
  for (const auto& b : branches) out.push_back(b.contiguous(format));
  return out;
}

at::Tensor forward_impl(at::TensorList branches_in, const at::Tensor& weights_in, at::OptionalIntArrayRef size,
                        c10::string_view mode) {
  const std::vector<int64_t> out_size = check_args(branches_in, weights_in, size);
  const at::Tensor& first = branches_in[0];
  const bool linear = is_linear_mode(std::string(mode), first.dim());
  check_kernel_dtype(first, kOp);
  const c10::OptionalDeviceGuard guard(first.device());  // CUDA: the kernels launch on the branches' device
  const auto format = output_memory_format(first);
  const std::vector<at::Tensor> branches = in_layout(branches_in, format);
  const at::Tensor weights = weights_in.contiguous();
  std::vector<int64_t> y_shape = {first.size(0), first.size(1)};
  y_shape.insert(y_shape.end(), out_size.begin(), out_size.end());
  at::Tensor y = at::empty(y_shape, first.options().memory_format(format));
  if (y.numel() == 0) return y;
  const MultiresShape shape = shape_of(first, out_size, linear);
  if (first.is_cuda()) {
#ifdef WITH_CUDA
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "multires_sum_forward_cuda", [&] {
      const KernelInputs<scalar_t> in = kernel_inputs<scalar_t>(branches);
      multires_sum_forward_cuda<scalar_t>(shape, in.layout, in.branches, weights.const_data_ptr<scalar_t>(),
                                          y.mutable_data_ptr<scalar_t>(), strides5_of(y));
    });
#endif
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES(first.scalar_type(), "multires_sum_forward_cpu", [&] {
    const KernelInputs<scalar_t> in = kernel_inputs<scalar_t>(branches);
    multires_sum_forward_cpu<scalar_t>(shape, in.layout, in.branches, weights.const_data_ptr<scalar_t>(),
                                       y.mutable_data_ptr<scalar_t>(), strides5_of(y));
  });
  return y;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> backward_impl(const at::Tensor& grad_y_in,
                                                              at::TensorList branches_in,
                                                              const at::Tensor& weights_in, c10::string_view mode) {
  TORCH_CHECK_VALUE(grad_y_in.dim() == (branches_in.empty() ? 0 : branches_in[0].dim()), kOp,
              ": `grad_out` must have the rank of the branches, got shape ", grad_y_in.sizes());
  const std::vector<int64_t> out_size =
      check_args(branches_in, weights_in, grad_y_in.sizes().slice(2));
  const at::Tensor& first = branches_in[0];
  const bool linear = is_linear_mode(std::string(mode), first.dim());
  check_kernel_dtype(first, kOp);
  check_same_device_dtype(grad_y_in, first, kOp, "grad_out", "branches[0]");
  TORCH_CHECK_VALUE(grad_y_in.size(0) == first.size(0) && grad_y_in.size(1) == first.size(1), kOp,
              ": `grad_out` must have (N, C) = (", first.size(0), ", ", first.size(1), "), got shape ",
              grad_y_in.sizes());
  const c10::OptionalDeviceGuard guard(first.device());
  const auto format = output_memory_format(first);
  const std::vector<at::Tensor> branches = in_layout(branches_in, format);
  const at::Tensor grad_y = grad_y_in.contiguous(format);
  const at::Tensor weights = weights_in.contiguous();
  std::vector<at::Tensor> grad_branches;
  for (const auto& b : branches) {
    grad_branches.push_back(at::empty(b.sizes(), b.options().memory_format(format)));  // the kernels write all
  }
  at::Tensor grad_weights = at::zeros(weights.sizes(), weights.options());
  if (grad_y.numel() == 0) {
    for (auto& g : grad_branches) g.zero_();
    return {grad_branches, grad_weights};
  }
  const MultiresShape shape = shape_of(first, out_size, linear);
  std::vector<Strides5> grad_strides;
  for (const auto& g : grad_branches) grad_strides.push_back(strides5_of(g));
  if (first.is_cuda()) {
#ifdef WITH_CUDA
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "multires_sum_backward_cuda", [&] {
      const KernelInputs<scalar_t> in = kernel_inputs<scalar_t>(branches);
      multires_sum_backward_cuda<scalar_t>(shape, in.layout, in.branches, weights.const_data_ptr<scalar_t>(),
                                           grad_y.const_data_ptr<scalar_t>(), strides5_of(grad_y),
                                           mutable_ptrs<scalar_t>(grad_branches), grad_strides,
                                           grad_weights.mutable_data_ptr<scalar_t>());
    });
#endif
    return {grad_branches, grad_weights};
  }
  AT_DISPATCH_FLOATING_TYPES(first.scalar_type(), "multires_sum_backward_cpu", [&] {
    const KernelInputs<scalar_t> in = kernel_inputs<scalar_t>(branches);
    multires_sum_backward_cpu<scalar_t>(shape, in.layout, in.branches, weights.const_data_ptr<scalar_t>(),
                                        grad_y.const_data_ptr<scalar_t>(), strides5_of(grad_y),
                                        mutable_ptrs<scalar_t>(grad_branches), grad_strides,
                                        grad_weights.mutable_data_ptr<scalar_t>());
  });
  return {grad_branches, grad_weights};
}

}  // namespace

// sum_k weights[k] * interpolate(branches[k], size, mode) for 4-D/5-D branches at integer ratios.
TORCH_LIBRARY_FRAGMENT(pyaccel_nas, m) {
  m.def("multires_sum(Tensor[] branches, Tensor weights, int[]? size, str mode) -> Tensor");
  m.def(
      "multires_sum_backward(Tensor grad_out, Tensor[] branches, Tensor weights, str mode) -> "
      "(Tensor[] grad_branches, Tensor grad_weights)");
}

TORCH_LIBRARY_IMPL(pyaccel_nas, CPU, m) {
  m.impl("multires_sum", &forward_impl);
  m.impl("multires_sum_backward", &backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(pyaccel_nas, CUDA, m) {
  m.impl("multires_sum", &forward_impl);
  m.impl("multires_sum_backward", &backward_impl);
}
#endif

}  // namespace pyaccel_nas
