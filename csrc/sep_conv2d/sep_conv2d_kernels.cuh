// Device code of sep_conv2d.
//
// The pointwise 1x1 convolution is a tiled product: a block computes a kTileA x kTileP tile of
// out[n][a][p] = sum_b M[a][b] * in[n][b][p] (p a flattened output pixel), staging kTileB rows of `in` and
// the matching kTileA x kTileB slice of M in shared memory per step. In the forward, `in` is the depthwise
// result, computed straight into shared memory from x (so no depthwise intermediate exists in global
// memory); in the backward the same kernel computes grad_D = pw^T grad_y. Every thread owns a 4 x 4 block of
// the tile: rows ty + 16 j, pixels tx + 16 q (consecutive threads, consecutive pixels).
#pragma once

#include "../common/cuda_utils.cuh"
#include "sep_conv2d.h"

namespace pyaccel_nas {
namespace cuda {

constexpr int kTileA = 64, kTileP = 64, kTileB = 16;
constexpr int kTileThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each
static_assert(kTileA == 4 * 16 && kTileP == 4 * 16, "each of the 16 x 16 threads owns 4 x 4 outputs");

// The depthwise result D[n][c][p] of the (optionally ReLU'd) input, computed from x.
template <typename T, typename acc_t>
struct DepthwiseSource {
  const T* x;
  Strides4 xs;
  const T* dw;
  SepConv2dShape s;

  __device__ __forceinline__ acc_t operator()(int64_t n, int64_t c, int64_t p) const {
    const int64_t oh = p / s.out_w, ow = p - oh * s.out_w;
    const T* xc = x + n * xs.n + c * xs.c;
    const T* w = dw + c * s.kernel_h * s.kernel_w;
    acc_t sum = 0;
    for (int64_t ki = 0; ki < s.kernel_h; ++ki) {
      const int64_t ih = oh * s.stride_h - s.pad_h + ki * s.dilation_h;
      if (ih < 0 || ih >= s.in_h) continue;
      for (int64_t kj = 0; kj < s.kernel_w; ++kj) {
        const int64_t iw = ow * s.stride_w - s.pad_w + kj * s.dilation_w;
        if (iw < 0 || iw >= s.in_w) continue;
        acc_t v = static_cast<acc_t>(xc[ih * xs.h + iw * xs.w]);
        if (s.pre_relu && v < acc_t(0)) v = 0;
        sum += static_cast<acc_t>(w[ki * s.kernel_w + kj]) * v;
      }
    }
    return sum;
  }
};

// grad_y[n][co][p], any strides.
template <typename T, typename acc_t>
struct GradSource {
  const T* grad_y;
  Strides4 gs;
  int64_t out_w;

  __device__ __forceinline__ acc_t operator()(int64_t n, int64_t co, int64_t p) const {
    const int64_t oh = p / out_w, ow = p - oh * out_w;
    return static_cast<acc_t>(grad_y[n * gs.n + co * gs.c + oh * gs.h + ow * gs.w]);
  }
};

// y[n][co][p] = value + bias[co], any strides.
template <typename T, typename acc_t>
struct OutputSink {
  T* y;
  Strides4 ys;
  const T* bias;  // may be null
  int64_t out_w;

  __device__ __forceinline__ void operator()(int64_t n, int64_t co, int64_t p, acc_t value) const {
    const int64_t oh = p / out_w, ow = p - oh * out_w;
    if (bias != nullptr) value += static_cast<acc_t>(bias[co]);
    y[n * ys.n + co * ys.c + oh * ys.h + ow * ys.w] = static_cast<T>(value);
  }
};

// A dense [N][rows][P] workspace in the accumulation type.
template <typename acc_t>
struct WorkspaceSink {
  acc_t* out;
  int64_t rows, pixels;

  __device__ __forceinline__ void operator()(int64_t n, int64_t a, int64_t p, acc_t value) const {
    out[(n * rows + a) * pixels + p] = value;
  }
};

// out[n][a][p] = sum_b m[a * m_sa + b * m_sb] * source(n, b, p) for a < A, p < P; block (n * p_tiles + pixel
// tile, a tile).
template <typename T, typename acc_t, typename Source, typename Sink>
__global__ void __launch_bounds__(kTileThreads)
    pointwise_tile_kernel(const Source source, const Sink sink, const T* __restrict__ m, int64_t m_sa, int64_t m_sb,
                          int64_t A, int64_t B, int64_t P, int64_t p_tiles) {
  __shared__ acc_t in_s[kTileB][kTileP];
  __shared__ acc_t m_s[kTileA][kTileB];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t n = blockIdx.x / p_tiles, p0 = (blockIdx.x % p_tiles) * kTileP;
  const int64_t a0 = static_cast<int64_t>(blockIdx.y) * kTileA;
  acc_t acc[4][4];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[j][q] = 0;
  for (int64_t b0 = 0; b0 < B; b0 += kTileB) {
    for (int i = threadIdx.x; i < kTileB * kTileP; i += kTileThreads) {
      const int bb = i / kTileP, pp = i % kTileP;
      const int64_t b = b0 + bb, p = p0 + pp;
      in_s[bb][pp] = (b < B && p < P) ? source(n, b, p) : acc_t(0);
    }
    for (int i = threadIdx.x; i < kTileA * kTileB; i += kTileThreads) {
      const int aa = i / kTileB, bb = i % kTileB;
      const int64_t a = a0 + aa, b = b0 + bb;
      m_s[aa][bb] = (a < A && b < B) ? static_cast<acc_t>(m[a * m_sa + b * m_sb]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int bb = 0; bb < kTileB; ++bb) {
      acc_t mv[4], iv[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) mv[j] = m_s[ty + 16 * j][bb];
#pragma unroll
      for (int q = 0; q < 4; ++q) iv[q] = in_s[bb][tx + 16 * q];
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[j][q] += mv[j] * iv[q];
    }
    __syncthreads();  // the tiles are overwritten by the next step
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t a = a0 + ty + 16 * j;
    if (a >= A) continue;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t p = p0 + tx + 16 * q;
      if (p < P) sink(n, a, p, acc[j][q]);
    }
  }
}

// Partial pointwise weight and bias gradients over part `blockIdx.x` of the N * P output pixels:
//   partial_pw[part][co][c] = sum_m grad_y[m][co] * D[m][c],  partial_bias[part][co] = sum_m grad_y[m][co]
// for the (co tile blockIdx.z, c tile blockIdx.y); D is recomputed from x (nothing was kept from the
// forward). Bias partials are written by the blocks of c tile 0.
template <typename T, typename acc_t>
__global__ void __launch_bounds__(kTileThreads)
    pointwise_weight_grad_kernel(const DepthwiseSource<T, acc_t> depthwise, const GradSource<T, acc_t> grad,
                                 int64_t parts, acc_t* __restrict__ partial_pw, acc_t* __restrict__ partial_bias) {
  // [pixel][channel], padded: the loads below write along the pixel index
  __shared__ acc_t d_s[kTileB][kTileA + 1];
  __shared__ acc_t g_s[kTileB][kTileA + 1];
  const SepConv2dShape& s = depthwise.s;
  const int64_t C = s.channels, Co = s.out_channels, P = s.out_h * s.out_w, M = s.batch * P;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t part = blockIdx.x;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kTileA, co0 = static_cast<int64_t>(blockIdx.z) * kTileA;
  const bool with_bias = blockIdx.y == 0;
  const int64_t begin = part * M / parts, end = (part + 1) * M / parts;
  acc_t acc[4][4], bias_acc[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    bias_acc[j] = 0;
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[j][q] = 0;
  }
  for (int64_t m0 = begin; m0 < end; m0 += kTileB) {
    for (int i = threadIdx.x; i < kTileB * kTileA; i += kTileThreads) {
      const int mm = i % kTileB, cc = i / kTileB;  // consecutive threads, consecutive pixels
      const int64_t m = m0 + mm;
      const int64_t n = m / P, p = m - n * P;
      const bool valid = m < end;
      d_s[mm][cc] = valid && c0 + cc < C ? depthwise(n, c0 + cc, p) : acc_t(0);
      g_s[mm][cc] = valid && co0 + cc < Co ? grad(n, co0 + cc, p) : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int mm = 0; mm < kTileB; ++mm) {
      acc_t gv[4], dv[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) gv[j] = g_s[mm][ty + 16 * j];
#pragma unroll
      for (int q = 0; q < 4; ++q) dv[q] = d_s[mm][tx + 16 * q];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        bias_acc[j] += gv[j];
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[j][q] += gv[j] * dv[q];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t co = co0 + ty + 16 * j;
    if (co >= Co) continue;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t c = c0 + tx + 16 * q;
      if (c < C) partial_pw[(part * Co + co) * C + c] = acc[j][q];
    }
    if (with_bias && tx == 0) partial_bias[part * Co + co] = bias_acc[j];
  }
}

// grad_x[n][c][ih][iw] = relu'(x) * sum over the taps that read (ih, iw) of grad_D * dw; grad_D is the dense
// [N][C][P] workspace. Threads walk grad_x in its memory order (NCHW or NHWC).
template <typename T, typename acc_t>
__global__ void depthwise_input_grad_kernel(const acc_t* __restrict__ grad_d, const T* __restrict__ x, Strides4 xs,
                                            const T* __restrict__ dw, const SepConv2dShape s, bool channels_last,
                                            T* __restrict__ grad_x, Strides4 gxs) {
  const int64_t C = s.channels, H = s.in_h, W = s.in_w, Ho = s.out_h, Wo = s.out_w;
  const int64_t numel = s.batch * C * H * W;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, c, ih, iw, r = i;
    if (channels_last) {
      c = r % C; r /= C;
      iw = r % W; r /= W;
      ih = r % H; n = r / H;
    } else {
      iw = r % W; r /= W;
      ih = r % H; r /= H;
      c = r % C; n = r / C;
    }
    acc_t sum = 0;
    const acc_t* gd = grad_d + (n * C + c) * Ho * Wo;
    const T* w = dw + c * s.kernel_h * s.kernel_w;
    for (int64_t ki = 0; ki < s.kernel_h; ++ki) {
      const int64_t th = ih + s.pad_h - ki * s.dilation_h;  // = oh * stride_h for the output row reading ih
      if (th < 0) break;                                     // decreases with ki
      if (th % s.stride_h != 0) continue;
      const int64_t oh = th / s.stride_h;
      if (oh >= Ho) continue;
      for (int64_t kj = 0; kj < s.kernel_w; ++kj) {
        const int64_t tw = iw + s.pad_w - kj * s.dilation_w;
        if (tw < 0) break;
        if (tw % s.stride_w != 0) continue;
        const int64_t ow = tw / s.stride_w;
        if (ow >= Wo) continue;
        sum += gd[oh * Wo + ow] * static_cast<acc_t>(w[ki * s.kernel_w + kj]);
      }
    }
    // ReLU's gradient: zero where x <= 0; a NaN passes the gradient, as in torch's threshold_backward
    if (s.pre_relu && static_cast<acc_t>(x[n * xs.n + c * xs.c + ih * xs.h + iw * xs.w]) <= acc_t(0)) sum = 0;
    grad_x[n * gxs.n + c * gxs.c + ih * gxs.h + iw * gxs.w] = static_cast<T>(sum);
  }
}

// Partial depthwise weight gradients: block (c, part) sums grad_D[m][c] * relu(x)[tap(m)] over part `part`
// of the N * P output pixels, for 8 taps at a time, into partial[(part * C + c) * taps + tap].
template <typename T, typename acc_t>
__global__ void depthwise_weight_grad_kernel(const acc_t* __restrict__ grad_d, const T* __restrict__ x, Strides4 xs,
                                             const SepConv2dShape s, int64_t parts, acc_t* __restrict__ partial) {
  constexpr int kTapsPerPass = 8;
  const int64_t C = s.channels, P = s.out_h * s.out_w, M = s.batch * P, taps = s.kernel_h * s.kernel_w;
  const int64_t c = blockIdx.x, part = blockIdx.y;
  const int64_t begin = part * M / parts, end = (part + 1) * M / parts;
  for (int64_t tap0 = 0; tap0 < taps; tap0 += kTapsPerPass) {
    acc_t acc[kTapsPerPass];
#pragma unroll
    for (int t = 0; t < kTapsPerPass; ++t) acc[t] = 0;
    for (int64_t m = begin + threadIdx.x; m < end; m += blockDim.x) {
      const int64_t n = m / P, p = m - n * P, oh = p / s.out_w, ow = p - oh * s.out_w;
      const acc_t g = grad_d[(n * C + c) * P + p];
      const T* xc = x + n * xs.n + c * xs.c;
#pragma unroll
      for (int t = 0; t < kTapsPerPass; ++t) {
        const int64_t tap = tap0 + t;
        if (tap >= taps) break;
        const int64_t ki = tap / s.kernel_w, kj = tap - ki * s.kernel_w;
        const int64_t ih = oh * s.stride_h - s.pad_h + ki * s.dilation_h;
        const int64_t iw = ow * s.stride_w - s.pad_w + kj * s.dilation_w;
        if (ih < 0 || ih >= s.in_h || iw < 0 || iw >= s.in_w) continue;
        acc_t v = static_cast<acc_t>(xc[ih * xs.h + iw * xs.w]);
        if (s.pre_relu && v < acc_t(0)) v = 0;
        acc[t] += g * v;
      }
    }
#pragma unroll
    for (int t = 0; t < kTapsPerPass; ++t) {
      const acc_t total = block_sum(acc[t]);  // every thread takes part
      if (threadIdx.x == 0 && tap0 + t < taps) partial[(part * C + c) * taps + tap0 + t] = total;
    }
  }
}

}  // namespace cuda
}  // namespace pyaccel_nas
