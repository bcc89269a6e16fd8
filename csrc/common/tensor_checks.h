// Checks and layout helpers shared by the tensor-level wrappers of every op.
//
// Bad arguments raise ValueError in Python (TORCH_CHECK_VALUE), as the Python checks do: these wrappers are
// the only validation on the kernel path of channel_gate and of a direct torch.ops.pyaccel_nas call.
//
// The wrappers are the only code that sees at::Tensor: they validate, pick the memory layout, allocate
// outputs and hand raw pointers, sizes and strides to the kernels.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace pyaccel_nas {

// The layout an op computes in and returns: channels_last when the input is strictly channels_last
// (rank 4 or 5), contiguous otherwise. Python's fake kernels apply the same rule
// (pyaccel_nas/ops/_layout.py), so compiled graphs see the strides the kernels produce.
inline at::MemoryFormat output_memory_format(const at::Tensor& t) {
  if (t.is_contiguous()) return at::MemoryFormat::Contiguous;
  if (t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::MemoryFormat::ChannelsLast;
  if (t.dim() == 5 && t.is_contiguous(at::MemoryFormat::ChannelsLast3d)) return at::MemoryFormat::ChannelsLast3d;
  return at::MemoryFormat::Contiguous;
}

// t as a kernel reading dense images `stride(0)` apart takes it: t itself when it is channels-first
// (`format` Contiguous) and each image t[n] is dense wherever the images start -- a channel slice of a
// concatenation, as its backward hands gradients on -- else a copy in `format`.
inline at::Tensor with_dense_images(const at::Tensor& t, at::MemoryFormat format) {
  if (format != at::MemoryFormat::Contiguous) return t.contiguous(format);
  int64_t expected = 1;
  for (int64_t d = t.dim() - 1; d >= 1; --d) {
    if (t.size(d) != 1 && t.stride(d) != expected) return t.contiguous();
    expected *= t.size(d);
  }
  return t;
}

// Sizes beyond this are rejected before any index arithmetic could overflow.
constexpr int64_t kMaxGeometry = int64_t(1) << 31;

// An (h, w) pair of geometry arguments (stride, padding, ...): two values in [min_value, 2^31).
inline void check_pair(at::IntArrayRef v, const char* op, const char* name, int64_t min_value) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": `", name, "` must have 2 elements (h, w), got ", v.size());
  for (int64_t e : v) {
    TORCH_CHECK_VALUE(e >= min_value && e < kMaxGeometry, op, ": `", name, "` must be >= ", min_value,
                      " (and < 2^31), got ", v);
  }
}

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()), op, ": `", name, "` must be a floating-point tensor, got ",
              t.scalar_type());
}

inline void check_same_device_dtype(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name,
                                    const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": `", name, "` is on ", t.device(), " but `", ref_name, "` is on ",
              ref.device(), "; all tensors must be on one device");
  TORCH_CHECK_VALUE(t.scalar_type() == ref.scalar_type(), op, ": `", name, "` has dtype ", t.scalar_type(), " but `",
              ref_name, "` has dtype ", ref.scalar_type(), "; all tensors must have one dtype");
}

// The dtypes the kernels of t's device compute in: float32 and float64 on CPU; also float16 and bfloat16 on
// CUDA (accumulating in float32). Python's dispatch table (pyaccel_nas/_extension.py) lists the same.
inline void check_kernel_dtype(const at::Tensor& t, const char* op) {
  const auto dtype = t.scalar_type();
  const bool wide = dtype == at::kFloat || dtype == at::kDouble;
  if (t.is_cuda()) {
    TORCH_CHECK(wide || dtype == at::kHalf || dtype == at::kBFloat16, op,
                ": the CUDA kernel supports float32, float64, float16 and bfloat16, got ", dtype);
  } else {
    TORCH_CHECK(wide, op, ": the CPU kernel supports float32 and float64, got ", dtype);
  }
}

}  // namespace pyaccel_nas
