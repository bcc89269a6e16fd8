// CUDA launchers of multires_sum (device code in multires_sum_kernels.cuh). The caller sets the device and
// passes branches, output and gradients dense in one memory format; kernels run on the current stream.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "multires_sum.h"
#include "../common/cuda_launch.cuh"
#include "multires_sum_kernels.cuh"

namespace pyaccel_nas {
namespace {

using cuda::ceil_div;
using cuda::kMaxParts;
using cuda::kThreads;

// Dense channels-last strides have C innermost (stride 1) unless C == 1, when both orders coincide.
bool is_channels_last(const MultiresShape& s, const Strides5& st) { return s.channels > 1 && st.c == 1; }

bool at_output_size(const MultiresShape& s, const MultiresBranch& b) {
  return b.t == s.out_t && b.h == s.out_h && b.w == s.out_w;
}

template <typename T, int V>
void launch_forward(const MultiresShape& s, const cuda::BranchGroup<T>& group, const T* weights, bool channels_last,
                    bool accumulate, T* y) {
  const int64_t units = s.batch * s.channels * s.out_t * s.out_h * s.out_w / V;
  cuda::launch(cuda::multires_forward_kernel<T, V>, cuda::grid_for(units), kThreads,
               group, weights, s, channels_last, accumulate, y);
}

template <typename T, int V>
void launch_backward(const MultiresShape& s, const MultiresBranch& b, const T* branch, bool identity, const T* grad_y,
                     Strides5 gys, bool channels_last, const T* weights, int64_t k, int64_t num_branches,
                     T* grad_branch, at::opmath_type<T>* partial) {
  const int64_t units = s.batch * s.channels * b.t * b.h * b.w / V;
  // The grid depends on the shape only: the partial sums, and so grad_weights, are reproducible.
  const int64_t blocks = std::min<int64_t>(kMaxParts, ceil_div(units, kThreads));
  cuda::launch(cuda::multires_backward_kernel<T, V>, static_cast<unsigned>(blocks), kThreads,
               branch, b.t, b.h, b.w, identity, grad_y, gys, s, channels_last, weights, k, num_branches, grad_branch,
               partial);
}

}  // namespace

template <typename T>
void multires_sum_forward_cuda(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                               const std::vector<const T*>& branches, const T* weights, T* y, Strides5 ys) {
  constexpr int V = cuda::vec_width<T>();
  const bool channels_last = is_channels_last(s, ys);
  const int64_t inner = channels_last ? s.channels : s.out_w;
  const int64_t count = static_cast<int64_t>(branches.size());
  for (int64_t first = 0; first < count; first += cuda::kMaxBranchesPerLaunch) {
    cuda::BranchGroup<T> group{};
    group.first = static_cast<int>(first);
    group.count = static_cast<int>(std::min<int64_t>(cuda::kMaxBranchesPerLaunch, count - first));
    bool aligned = cuda::aligned16(y);
    for (int k = 0; k < group.count; ++k) {
      const MultiresBranch& b = layout[first + k];
      group.data[k] = branches[first + k];
      group.t[k] = b.t;
      group.h[k] = b.h;
      group.w[k] = b.w;
      group.strides[k] = b.strides;
      group.identity[k] = at_output_size(s, b);
      if (group.identity[k]) aligned = aligned && cuda::aligned16(branches[first + k]);
    }
    if (aligned && inner % V == 0) {
      launch_forward<T, V>(s, group, weights, channels_last, first > 0, y);
    } else {
      launch_forward<T, 1>(s, group, weights, channels_last, first > 0, y);
    }
  }
}

template <typename T>
void multires_sum_backward_cuda(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                                const std::vector<const T*>& branches, const T* weights, const T* grad_y,
                                Strides5 gys, const std::vector<T*>& grad_branches,
                                const std::vector<Strides5>& grad_strides, T* grad_weights) {
  (void)grad_strides;  // dense in the format of grad_y, like the branches
  using acc_t = at::opmath_type<T>;
  constexpr int V = cuda::vec_width<T>();
  const bool channels_last = is_channels_last(s, gys);
  const int64_t count = static_cast<int64_t>(branches.size());
  cuda::Workspace<acc_t> partial(kMaxParts * count);
  partial.zero(kMaxParts * count);  // a branch with fewer blocks leaves its other partials at zero
  for (int64_t k = 0; k < count; ++k) {
    const MultiresBranch& b = layout[k];
    const bool identity = at_output_size(s, b);
    const int64_t inner = channels_last ? s.channels : b.w;
    const bool aligned = cuda::aligned16(branches[k]) && cuda::aligned16(grad_branches[k]) &&
                         (!identity || cuda::aligned16(grad_y));
    if (aligned && inner % V == 0) {
      launch_backward<T, V>(s, b, branches[k], identity, grad_y, gys, channels_last, weights, k, count,
                            grad_branches[k], partial.data());
    } else {
      launch_backward<T, 1>(s, b, branches[k], identity, grad_y, gys, channels_last, weights, k, count,
                            grad_branches[k], partial.data());
    }
  }
  cuda::sum_partials<T, acc_t>(partial.data(), kMaxParts, count, grad_weights);
}

#define PYACCEL_NAS_INSTANTIATE(T)                                                                                \
  template void multires_sum_forward_cuda<T>(const MultiresShape&, const std::vector<MultiresBranch>&,           \
                                             const std::vector<const T*>&, const T*, T*, Strides5);              \
  template void multires_sum_backward_cuda<T>(const MultiresShape&, const std::vector<MultiresBranch>&,          \
                                              const std::vector<const T*>&, const T*, const T*, Strides5,        \
                                              const std::vector<T*>&, const std::vector<Strides5>&, T*);
PYACCEL_NAS_INSTANTIATE(float)
PYACCEL_NAS_INSTANTIATE(double)
PYACCEL_NAS_INSTANTIATE(c10::Half)
PYACCEL_NAS_INSTANTIATE(c10::BFloat16)
#undef PYACCEL_NAS_INSTANTIATE

}  // namespace pyaccel_nas
