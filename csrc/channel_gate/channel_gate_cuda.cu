// CUDA launchers of channel_gate (device code in channel_gate_kernels.cuh). The caller sets the device;
// kernels run on the current stream.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "channel_gate.h"
#include "../common/cuda_launch.cuh"
#include "channel_gate_kernels.cuh"

namespace pyaccel_nas {
namespace {

using cuda::ceil_div;
using cuda::kMaxParts;
using cuda::kThreads;

template <typename T, int V>
void launch_forward(const GateLayout& l, const T* x, const T* gate, bool has_threshold, double threshold, T* y) {
  const int64_t numel = l.batch * l.channels * l.spatial;
  const int64_t run = l.channels_last ? 1 : l.spatial;
  cuda::launch(cuda::channel_gate_forward_kernel<T, V>, cuda::grid_for(ceil_div(numel, V)), kThreads,
               x, gate, has_threshold, threshold, numel, run, l.channels, y);
}

// Channels-last (and rank-2, where S = 1 makes both layouts [N][C]): rows of C contiguous channels.
template <typename T, int V>
void launch_backward_rows(const GateLayout& l, const T* grad_y, const T* x, const T* gate, bool has_threshold,
                          double threshold, T* grad_x, T* grad_gate) {
  using acc_t = at::opmath_type<T>;
  const int64_t rows = l.batch * l.spatial, vectors = l.channels / V;
  int tx_count = 1;
  while (tx_count < 32 && tx_count < vectors) tx_count *= 2;
  const int64_t ty_count = kThreads / tx_count;
  // at least 4 rows per thread, so a block does real work before its shared-memory reduction
  const int64_t parts = std::min<int64_t>(kMaxParts, ceil_div(rows, 4 * ty_count));
  cuda::Workspace<acc_t> partial(parts * l.channels);
  cuda::launch(cuda::channel_gate_backward_cl_kernel<T, V>, static_cast<unsigned>(parts), kThreads,
               grad_y, x, gate, has_threshold, threshold, rows, l.channels, parts, tx_count, grad_x, partial.data());
  cuda::sum_partials<T, acc_t>(partial.data(), parts, l.channels, grad_gate);
}

// Channels-first: every channel is N rows of S contiguous elements; blocks (c, p).
template <typename T, int V>
void launch_backward_planes(const GateLayout& l, const T* grad_y, const T* x, const T* gate, bool has_threshold,
                            double threshold, T* grad_x, T* grad_gate) {
  using acc_t = at::opmath_type<T>;
  const int64_t units = l.batch * l.spatial / V;
  // enough blocks in all to fill a GPU (~4096), at least one block-wide step of work per block
  const int64_t parts = std::max<int64_t>(
      1, std::min<int64_t>({kMaxParts, ceil_div(units, kThreads), std::max<int64_t>(1, 4096 / l.channels)}));
  cuda::Workspace<acc_t> partial(parts * l.channels);
  const dim3 grid(static_cast<unsigned>(l.channels), static_cast<unsigned>(parts));
  cuda::launch(cuda::channel_gate_backward_cf_kernel<T, V>, grid, kThreads,
               grad_y, x, gate, has_threshold, threshold, l.batch, l.channels, l.spatial, parts, grad_x,
               partial.data());
  cuda::sum_partials<T, acc_t>(partial.data(), parts, l.channels, grad_gate);
}

}  // namespace

template <typename T>
void channel_gate_forward_cuda(const GateLayout& l, const T* x, const T* gate, bool has_threshold, double threshold,
                               T* y) {
  constexpr int V = cuda::vec_width<T>();
  if (cuda::aligned16(x) && cuda::aligned16(y)) {
    launch_forward<T, V>(l, x, gate, has_threshold, threshold, y);
  } else {
    launch_forward<T, 1>(l, x, gate, has_threshold, threshold, y);
  }
}

template <typename T>
void channel_gate_backward_cuda(const GateLayout& l, const T* grad_y, const T* x, const T* gate, bool has_threshold,
                                double threshold, T* grad_x, T* grad_gate) {
  constexpr int V = cuda::vec_width<T>();
  TORCH_CHECK(l.channels < (int64_t(1) << 31), "pyaccel_nas::channel_gate: the CUDA kernel supports < 2^31 channels");
  const bool aligned = cuda::aligned16(grad_y) && cuda::aligned16(x) && cuda::aligned16(grad_x);
  if (l.channels_last || l.spatial == 1) {
    if (aligned && l.channels % V == 0) {
      launch_backward_rows<T, V>(l, grad_y, x, gate, has_threshold, threshold, grad_x, grad_gate);
    } else {
      launch_backward_rows<T, 1>(l, grad_y, x, gate, has_threshold, threshold, grad_x, grad_gate);
    }
  } else if (aligned && l.spatial % V == 0) {
    launch_backward_planes<T, V>(l, grad_y, x, gate, has_threshold, threshold, grad_x, grad_gate);
  } else {
    launch_backward_planes<T, 1>(l, grad_y, x, gate, has_threshold, threshold, grad_x, grad_gate);
  }
}

#define PYACCEL_NAS_INSTANTIATE(T)                                                                             \
  template void channel_gate_forward_cuda<T>(const GateLayout&, const T*, const T*, bool, double, T*);       \
  template void channel_gate_backward_cuda<T>(const GateLayout&, const T*, const T*, const T*, bool, double, T*, \
                                              T*);
PYACCEL_NAS_INSTANTIATE(float)
PYACCEL_NAS_INSTANTIATE(double)
PYACCEL_NAS_INSTANTIATE(c10::Half)
PYACCEL_NAS_INSTANTIATE(c10::BFloat16)
#undef PYACCEL_NAS_INSTANTIATE

}  // namespace pyaccel_nas
