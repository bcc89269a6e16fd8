// CUDA launchers of sep_conv2d (device code in sep_conv2d_kernels.cuh). The caller sets the device; kernels
// run on the current stream.
//
// Forward: one kernel; each block computes the depthwise result of a tile of pixels x 16 channels at a time
// into shared memory and multiplies it by the pointwise weights, so D never reaches global memory.
// Backward, deterministic (block partials + an ordered second pass; no float atomics):
//   1. grad_pw, grad_bias: partial sums of grad_y D^T over parts of the pixels, D recomputed per tile;
//   2. grad_D = pw^T grad_y into a [N][C][P] workspace (the forward's tile kernel);
//   3. grad_x: the transposed depthwise convolution of grad_D, times ReLU's mask, one thread per element;
//   4. grad_dw: partial sums of grad_D * relu(x) per tap over parts of the pixels.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "sep_conv2d.h"
#include "../common/cuda_launch.cuh"
#include "sep_conv2d_kernels.cuh"

namespace pyaccel_nas {
namespace {

using cuda::ceil_div;
using cuda::kMaxParts;
using cuda::kThreads;
using cuda::kTileA;
using cuda::kTileP;
using cuda::kTileThreads;

constexpr const char* kOp = "pyaccel_nas::sep_conv2d";
constexpr int64_t kMaxGridX = (int64_t(1) << 31) - 1, kMaxGridYZ = 65535;
// Upper bound on the elements of the pointwise partial-gradient workspace (128 MiB in float).
constexpr int64_t kMaxPointwisePartials = int64_t(1) << 25;

// Grid of the tile kernel over (image, pixel tile) x (row tile of A rows).
dim3 tile_grid(const SepConv2dShape& s, int64_t A, int64_t p_tiles) {
  TORCH_CHECK(s.batch * p_tiles <= kMaxGridX && ceil_div(A, kTileA) <= kMaxGridYZ, kOp,
              ": the CUDA kernel supports at most ", kMaxGridYZ * kTileA, " channels and ", kMaxGridX * kTileP,
              " output pixels in a batch");
  return dim3(static_cast<unsigned>(s.batch * p_tiles), static_cast<unsigned>(ceil_div(A, kTileA)));
}

}  // namespace

template <typename T>
void sep_conv2d_forward_cuda(const SepConv2dShape& s, const T* x, Strides4 xs, const T* dw, const T* pw,
                             const T* bias, T* y, Strides4 ys) {
  using acc_t = at::opmath_type<T>;
  const int64_t P = s.out_h * s.out_w, p_tiles = ceil_div(P, kTileP);
  cuda::DepthwiseSource<T, acc_t> depthwise{x, xs, dw, s};
  cuda::OutputSink<T, acc_t> sink{y, ys, bias, s.out_w};
  // y[n][co][p] = sum_c pw[co][c] D[n][c][p] + bias[co]
  cuda::launch(cuda::pointwise_tile_kernel<T, acc_t, decltype(depthwise), decltype(sink)>,
               tile_grid(s, s.out_channels, p_tiles), kTileThreads, depthwise, sink, pw, /*m_sa=*/s.channels,
               /*m_sb=*/1, s.out_channels, s.channels, P, p_tiles);
}

template <typename T>
void sep_conv2d_backward_cuda(const SepConv2dShape& s, const T* grad_y, Strides4 gys, const T* x, Strides4 xs,
                              const T* dw, const T* pw, T* grad_x, Strides4 gxs, T* grad_dw, T* grad_pw,
                              T* grad_bias) {
  using acc_t = at::opmath_type<T>;
  const int64_t C = s.channels, Co = s.out_channels, P = s.out_h * s.out_w, M = s.batch * P;
  const int64_t taps = s.kernel_h * s.kernel_w, p_tiles = ceil_div(P, kTileP);
  cuda::DepthwiseSource<T, acc_t> depthwise{x, xs, dw, s};
  cuda::GradSource<T, acc_t> grad{grad_y, gys, s.out_w};
  TORCH_CHECK(C <= kMaxGridX && ceil_div(C, kTileA) <= kMaxGridYZ && ceil_div(Co, kTileA) <= kMaxGridYZ, kOp,
              ": the CUDA kernel supports at most ", kMaxGridYZ * kTileA, " channels");

  // 1. pointwise weight and bias gradients; parts depend on the shape only (reproducible sums)
  int64_t parts = std::min<int64_t>(kMaxParts, ceil_div(M, kThreads));
  parts = std::max<int64_t>(1, std::min<int64_t>(parts, kMaxPointwisePartials / (Co * C)));
  {
    cuda::Workspace<acc_t> partial_pw(parts * Co * C), partial_bias(parts * Co);
    const dim3 grid(static_cast<unsigned>(parts), static_cast<unsigned>(ceil_div(C, kTileA)),
                    static_cast<unsigned>(ceil_div(Co, kTileA)));
    cuda::launch(cuda::pointwise_weight_grad_kernel<T, acc_t>, grid, kTileThreads,
                 depthwise, grad, parts, partial_pw.data(), partial_bias.data());
    cuda::sum_partials<T, acc_t>(partial_pw.data(), parts, Co * C, grad_pw);
    cuda::sum_partials<T, acc_t>(partial_bias.data(), parts, Co, grad_bias);
  }

  // 2. grad_D[n][c][p] = sum_co pw[co][c] grad_y[n][co][p]
  cuda::Workspace<acc_t> grad_d(s.batch * C * P);
  cuda::WorkspaceSink<acc_t> sink{grad_d.data(), C, P};
  cuda::launch(cuda::pointwise_tile_kernel<T, acc_t, decltype(grad), decltype(sink)>,
               tile_grid(s, C, p_tiles), kTileThreads, grad, sink, pw, /*m_sa=*/1, /*m_sb=*/C, C, Co, P, p_tiles);

  // 3. grad_x, walked in its memory order (channels-last when C is its innermost dimension)
  const bool channels_last = C > 1 && gxs.c == 1;
  cuda::launch(cuda::depthwise_input_grad_kernel<T, acc_t>, cuda::grid_for(s.batch * C * s.in_h * s.in_w), kThreads,
               grad_d.data(), x, xs, dw, s, channels_last, grad_x, gxs);

  // 4. depthwise weight gradients: about 8192 blocks over (channel, part), >= 4 pixels per thread
  const int64_t dw_parts = std::max<int64_t>(
      1, std::min<int64_t>({kMaxParts, ceil_div(M, 4 * kThreads), ceil_div(8192, C)}));
  cuda::Workspace<acc_t> partial_dw(dw_parts * C * taps);
  const dim3 dw_grid(static_cast<unsigned>(C), static_cast<unsigned>(dw_parts));
  cuda::launch(cuda::depthwise_weight_grad_kernel<T, acc_t>, dw_grid, kThreads,
               grad_d.data(), x, xs, s, dw_parts, partial_dw.data());
  cuda::sum_partials<T, acc_t>(partial_dw.data(), dw_parts, C * taps, grad_dw);
}

#define PYACCEL_NAS_INSTANTIATE(T)                                                                               \
  template void sep_conv2d_forward_cuda<T>(const SepConv2dShape&, const T*, Strides4, const T*, const T*,      \
                                           const T*, T*, Strides4);                                            \
  template void sep_conv2d_backward_cuda<T>(const SepConv2dShape&, const T*, Strides4, const T*, Strides4,     \
                                            const T*, const T*, T*, Strides4, T*, T*, T*);
PYACCEL_NAS_INSTANTIATE(float)
PYACCEL_NAS_INSTANTIATE(double)
PYACCEL_NAS_INSTANTIATE(c10::Half)
PYACCEL_NAS_INSTANTIATE(c10::BFloat16)
#undef PYACCEL_NAS_INSTANTIATE

}  // namespace pyaccel_nas
