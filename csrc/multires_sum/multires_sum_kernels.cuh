// Device code of multires_sum. Every tensor a kernel touches is dense in one memory format, channels-first
// (N, C, T, H, W) or channels-last (N, T, H, W, C); a thread handles V consecutive elements of that order
// (V = 16 bytes / element size when the innermost extent splits into whole vectors, else 1), so a branch
// at the output's resolution is read with 16-byte loads.
#pragma once

#include <ATen/NumericUtils.h>

#include "../common/cuda_utils.cuh"
#include "multires_sum.h"

namespace pyaccel_nas {
namespace cuda {

// Branches per forward launch; more are summed in further launches that accumulate into y.
constexpr int kMaxBranchesPerLaunch = 16;

template <typename T>
struct BranchGroup {
  const T* data[kMaxBranchesPerLaunch];
  int64_t t[kMaxBranchesPerLaunch], h[kMaxBranchesPerLaunch], w[kMaxBranchesPerLaunch];
  Strides5 strides[kMaxBranchesPerLaunch];
  bool identity[kMaxBranchesPerLaunch];  // at the output size: y[i] reads element i
  int count;
  int first;  // index of data[0] in the weights
};

struct Coord {
  int64_t n, c, t, h, w;
};

// The coordinates of element i of a dense (N, C, T, H, W) tensor stored in the given order.
__device__ __forceinline__ Coord coord_of(int64_t i, int64_t C, int64_t T, int64_t H, int64_t W, bool channels_last) {
  Coord q;
  if (channels_last) {
    q.c = i % C;
    i /= C;
    q.w = i % W;
    i /= W;
    q.h = i % H;
    i /= H;
    q.t = i % T;
    q.n = i / T;
  } else {
    q.w = i % W;
    i /= W;
    q.h = i % H;
    i /= H;
    q.t = i % T;
    i /= T;
    q.c = i % C;
    q.n = i / C;
  }
  return q;
}

// Output index o of an axis upsampled from `in` to `out` (out % in == 0) reads inputs i0 and i1 with
// weights w0 and w1: nearest reads o / factor; linear follows interpolate(align_corners=False).
template <typename acc_t>
struct Taps {
  int64_t i0, i1;
  acc_t w0, w1;
};

template <typename acc_t>
__device__ __forceinline__ Taps<acc_t> taps_of(int64_t o, int64_t in, int64_t out, bool linear) {
  const int64_t factor = out / in;
  if (!linear) return {o / factor, o / factor, acc_t(1), acc_t(0)};
  acc_t src = (static_cast<acc_t>(o) + acc_t(0.5)) / static_cast<acc_t>(factor) - acc_t(0.5);
  if (src < acc_t(0)) src = acc_t(0);
  const int64_t floor_src = static_cast<int64_t>(src);
  const int64_t i0 = floor_src < in - 1 ? floor_src : in - 1;
  acc_t lambda = src - static_cast<acc_t>(i0);
  lambda = lambda < acc_t(0) ? acc_t(0) : (lambda > acc_t(1) ? acc_t(1) : lambda);
  return {i0, i0 < in - 1 ? i0 + 1 : i0, acc_t(1) - lambda, lambda};
}

// The weight with which output o reads input i (0 if it does not).
template <typename acc_t>
__device__ __forceinline__ acc_t tap_weight(int64_t o, int64_t i, int64_t in, int64_t out, bool linear) {
  const Taps<acc_t> tp = taps_of<acc_t>(o, in, out, linear);
  return (tp.i0 == i ? tp.w0 : acc_t(0)) + (tp.i1 == i ? tp.w1 : acc_t(0));
}

// The outputs [begin, end) that may read input i: [i f, (i + 1) f) for nearest; for linear, outputs whose
// source position lies in [i - 1, i + 1), a subset of [(i - 1) f, (i + 2) f).
__device__ __forceinline__ void readers_of(int64_t i, int64_t in, int64_t out, bool linear, int64_t& begin,
                                           int64_t& end) {
  const int64_t factor = out / in;
  if (linear) {
    begin = i > 0 ? (i - 1) * factor : 0;
    end = (i + 2) * factor < out ? (i + 2) * factor : out;
  } else {
    begin = i * factor;
    end = (i + 1) * factor;
  }
}

// interpolate(branch)[n, c, t, h, w] at the output size.
template <typename T, typename acc_t>
__device__ acc_t interpolate_at(const T* data, const Strides5& st, int64_t bt, int64_t bh, int64_t bw,
                                const MultiresShape& s, const Coord& q) {
  const Taps<acc_t> tt = taps_of<acc_t>(q.t, bt, s.out_t, s.linear), th = taps_of<acc_t>(q.h, bh, s.out_h, s.linear),
                    tw = taps_of<acc_t>(q.w, bw, s.out_w, s.linear);
  const T* base = data + q.n * st.n + q.c * st.c;
  acc_t sum = 0;
  for (int a = 0; a < 2; ++a) {
    const acc_t wa = a ? tt.w1 : tt.w0;
    if (wa == acc_t(0)) continue;
    const T* pt = base + (a ? tt.i1 : tt.i0) * st.t;
    for (int b = 0; b < 2; ++b) {
      const acc_t wb = b ? th.w1 : th.w0;
      if (wb == acc_t(0)) continue;
      const T* ph = pt + (b ? th.i1 : th.i0) * st.h;
      for (int d = 0; d < 2; ++d) {
        const acc_t wd = d ? tw.w1 : tw.w0;
        if (wd == acc_t(0)) continue;
        sum += wa * wb * wd * static_cast<acc_t>(ph[(d ? tw.i1 : tw.i0) * st.w]);
      }
    }
  }
  return sum;
}

// y = sum over the group's branches of weights[first + k] * interpolate(branch k) (+ y if accumulate).
template <typename T, int V>
__global__ void multires_forward_kernel(const BranchGroup<T> group, const T* __restrict__ weights,
                                        const MultiresShape s, bool channels_last, bool accumulate,
                                        T* __restrict__ y) {
  using acc_t = at::opmath_type<T>;
  const int64_t numel = s.batch * s.channels * s.out_t * s.out_h * s.out_w;
  const int64_t units = numel / V;
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = u * V;
    const Coord q0 = coord_of(i, s.channels, s.out_t, s.out_h, s.out_w, channels_last);
    acc_t acc[V];
    if (accumulate) {
      const Vec<T, V> prev = load_vec<T, V>(y + i);
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] = static_cast<acc_t>(prev.v[j]);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] = 0;
    }
    for (int k = 0; k < group.count; ++k) {
      const acc_t wk = static_cast<acc_t>(weights[group.first + k]);
      if (group.identity[k]) {
        const Vec<T, V> v = load_vec<T, V>(group.data[k] + i);
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += wk * static_cast<acc_t>(v.v[j]);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) {
          Coord q = q0;  // the V elements differ in the innermost coordinate only
          if (channels_last) q.c += j; else q.w += j;
          acc[j] += wk * interpolate_at<T, acc_t>(group.data[k], group.strides[k], group.t[k], group.h[k], group.w[k],
                                                  s, q);
        }
      }
    }
    Vec<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) out.v[j] = static_cast<T>(acc[j]);
    store_vec<T, V>(y + i, out);
  }
}

// The transpose of the interpolation: sum over the outputs that read branch element q of their gradient
// times the weight they read it with, each term times `times` (see multires_backward_kernel).
template <typename T, typename acc_t>
__device__ acc_t gather_grad(const T* grad_y, const Strides5& gs, int64_t bt, int64_t bh, int64_t bw,
                             const MultiresShape& s, const Coord& q, acc_t times = acc_t(1)) {
  int64_t t0, t1, h0, h1, w0, w1;
  readers_of(q.t, bt, s.out_t, s.linear, t0, t1);
  readers_of(q.h, bh, s.out_h, s.linear, h0, h1);
  readers_of(q.w, bw, s.out_w, s.linear, w0, w1);
  const T* base = grad_y + q.n * gs.n + q.c * gs.c;
  acc_t sum = 0;
  for (int64_t ot = t0; ot < t1; ++ot) {
    const acc_t wt = tap_weight<acc_t>(ot, q.t, bt, s.out_t, s.linear);
    if (wt == acc_t(0)) continue;
    for (int64_t oh = h0; oh < h1; ++oh) {
      const acc_t wh = tap_weight<acc_t>(oh, q.h, bh, s.out_h, s.linear);
      if (wh == acc_t(0)) continue;
      const T* row = base + ot * gs.t + oh * gs.h;
      for (int64_t ow = w0; ow < w1; ++ow) {
        const acc_t ww = tap_weight<acc_t>(ow, q.w, bw, s.out_w, s.linear);
        if (ww != acc_t(0)) sum += wt * wh * ww * static_cast<acc_t>(row[ow * gs.w]) * times;
      }
    }
  }
  return sum;
}

// Backward of one branch k: G = P_k^T grad_y (gathered), grad_branch = weights[k] * G, and block p of the
// fixed grid writes partial[p * num_branches + k] = sum of G * branch over its elements. That regroups the
// reference's sum(grad_y * P_k branch) and equals it for finite elements only: an infinite one is multiplied
// with each gradient that reads it on its own, so that gradients 0, or of both signs, give NaN (inf * 0,
// inf - inf) as in the reference, not +-inf.
template <typename T, int V>
__global__ void multires_backward_kernel(const T* __restrict__ branch, int64_t bt, int64_t bh, int64_t bw,
                                         bool identity, const T* __restrict__ grad_y, const Strides5 gys,
                                         const MultiresShape s, bool channels_last, const T* __restrict__ weights,
                                         int64_t k, int64_t num_branches, T* __restrict__ grad_branch,
                                         at::opmath_type<T>* __restrict__ partial) {
  using acc_t = at::opmath_type<T>;
  const acc_t wk = static_cast<acc_t>(weights[k]);
  const int64_t units = s.batch * s.channels * bt * bh * bw / V;
  acc_t dot = 0;
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = u * V;
    const Vec<T, V> b = load_vec<T, V>(branch + i);
    acc_t g[V], term[V];  // term: element j's share of the sum of G * branch
    if (identity) {
      const Vec<T, V> v = load_vec<T, V>(grad_y + i);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        g[j] = static_cast<acc_t>(v.v[j]);
        term[j] = g[j] * static_cast<acc_t>(b.v[j]);  // one reader: no regrouping
      }
    } else {
      const Coord q0 = coord_of(i, s.channels, bt, bh, bw, channels_last);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        Coord q = q0;
        if (channels_last) q.c += j; else q.w += j;
        g[j] = gather_grad<T, acc_t>(grad_y, gys, bt, bh, bw, s, q);
        const acc_t bj = static_cast<acc_t>(b.v[j]);
        term[j] = at::_isinf(bj) ? gather_grad<T, acc_t>(grad_y, gys, bt, bh, bw, s, q, bj) : g[j] * bj;
      }
    }
    Vec<T, V> gb;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      gb.v[j] = static_cast<T>(wk * g[j]);
      dot += term[j];
    }
    store_vec<T, V>(grad_branch + i, gb);
  }
  dot = block_sum(dot);
  if (threadIdx.x == 0) partial[blockIdx.x * num_branches + k] = dot;
}

}  // namespace cuda
}  // namespace pyaccel_nas
