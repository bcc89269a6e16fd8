// Raw-pointer launchers of multires_sum:
//   y = sum_k weights[k] * interpolate(branch_k, out_size, mode)
// for branches whose spatial sizes divide the output size by integers. 2-D inputs are passed as 3-D with a
// time extent of 1. Interpolation is nearest (src = dst / factor) or linear with align_corners=False
// (src = (dst + 0.5) / factor - 0.5, clamped at 0), separably along each axis.
#pragma once

#include <cstdint>
#include <vector>

namespace pyaccel_nas {

// Element strides of a 5-D activation (N, C, T, H, W); dense NC(T)HW or N(T)HWC in practice.
struct Strides5 {
  int64_t n, c, t, h, w;
};

struct MultiresBranch {
  int64_t t, h, w;   // spatial size of this branch
  Strides5 strides;
};

struct MultiresShape {
  int64_t batch, channels;
  int64_t out_t, out_h, out_w;
  bool linear;
};

// branches[k] points at branch k; weights has one entry per branch.
template <typename T>
void multires_sum_forward_cpu(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                              const std::vector<const T*>& branches, const T* weights, T* y, Strides5 y_strides);

// grad_branches[k] has the shape of branch k and strides grad_strides[k]; grad_weights has one entry per
// branch.
template <typename T>
void multires_sum_backward_cpu(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                               const std::vector<const T*>& branches, const T* weights, const T* grad_y,
                               Strides5 grad_y_strides, const std::vector<T*>& grad_branches,
                               const std::vector<Strides5>& grad_strides, T* grad_weights);

// CUDA (float, double, c10::Half, c10::BFloat16; accumulation in float, or double for double), same
// contract, with every activation dense in one memory format (contiguous or channels-last, as y and
// grad_y); grad_weights is reduced deterministically (no atomics). Runs on the current stream.
template <typename T>
void multires_sum_forward_cuda(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                               const std::vector<const T*>& branches, const T* weights, T* y, Strides5 y_strides);

template <typename T>
void multires_sum_backward_cuda(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                                const std::vector<const T*>& branches, const T* weights, const T* grad_y,
                                Strides5 grad_y_strides, const std::vector<T*>& grad_branches,
                                const std::vector<Strides5>& grad_strides, T* grad_weights);

}  // namespace pyaccel_nas
