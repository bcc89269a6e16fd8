// Device code of channel_gate: one pass over memory with 16-byte vectors (V elements per access; V = 1 when
// the tensors are not aligned or the rows do not split into whole vectors).
#pragma once

#include <cmath>

#include "../common/cuda_utils.cuh"

namespace pyaccel_nas {
namespace cuda {

// The gate as applied: zero where |g| < threshold (when a threshold is given).
template <typename T, typename acc_t>
__device__ __forceinline__ acc_t applied_gate(const T* gate, int64_t c, bool has_threshold, double threshold) {
  const T g = gate[c];
  return has_threshold && ::fabs(static_cast<double>(g)) < threshold ? acc_t(0) : static_cast<acc_t>(g);
}

__device__ __forceinline__ bool gate_masked(double g, bool has_threshold, double threshold) {
  return has_threshold && ::fabs(g) < threshold;
}

// y[i] = x[i] * gate[c(i)] over a dense array whose channel index is c(i) = (i / run) % C: run = S for
// channels-first [N][C][S], run = 1 for channels-last [N][S][C]. Each thread handles whole vectors, then
// the numel % V trailing elements one by one.
template <typename T, int V>
__global__ void channel_gate_forward_kernel(const T* __restrict__ x, const T* __restrict__ gate, bool has_threshold,
                                            double threshold, int64_t numel, int64_t run, int64_t channels,
                                            T* __restrict__ y) {
  using acc_t = at::opmath_type<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t units = numel / V;
  for (int64_t u = first; u < units; u += stride) {
    const int64_t i = u * V;
    int64_t c = (i / run) % channels, pos = i % run;
    const Vec<T, V> xv = load_vec<T, V>(x + i);
    Vec<T, V> yv;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      yv.v[j] = static_cast<T>(static_cast<acc_t>(xv.v[j]) * applied_gate<T, acc_t>(gate, c, has_threshold, threshold));
      if (++pos == run) {
        pos = 0;
        if (++c == channels) c = 0;
      }
    }
    store_vec<T, V>(y + i, yv);
  }
  for (int64_t i = units * V + first; i < numel; i += stride) {
    const int64_t c = (i / run) % channels;
    y[i] = static_cast<T>(static_cast<acc_t>(x[i]) * applied_gate<T, acc_t>(gate, c, has_threshold, threshold));
  }
}

// Channels-first backward: block (c, p) covers part p of channel c's N * S elements (S % V == 0, so no
// vector crosses a row), writes grad_x = grad_y * g and partial[p * C + c] = sum grad_y * x (0 for a
// masked gate: it gets no gradient).
template <typename T, int V>
__global__ void channel_gate_backward_cf_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                                                const T* __restrict__ gate, bool has_threshold, double threshold,
                                                int64_t batch, int64_t channels, int64_t spatial, int64_t parts,
                                                T* __restrict__ grad_x, at::opmath_type<T>* __restrict__ partial) {
  using acc_t = at::opmath_type<T>;
  const int64_t c = blockIdx.x, p = blockIdx.y;
  const acc_t g = applied_gate<T, acc_t>(gate, c, has_threshold, threshold);
  const int64_t units = batch * spatial / V;
  const int64_t begin = p * units / parts, end = (p + 1) * units / parts;
  acc_t dot = 0;
  for (int64_t u = begin + threadIdx.x; u < end; u += blockDim.x) {
    const int64_t j = u * V, n = j / spatial, s = j - n * spatial;
    const int64_t off = (n * channels + c) * spatial + s;
    const Vec<T, V> gy = load_vec<T, V>(grad_y + off), xv = load_vec<T, V>(x + off);
    Vec<T, V> gx;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const acc_t gyk = static_cast<acc_t>(gy.v[k]);
      gx.v[k] = static_cast<T>(gyk * g);
      dot += gyk * static_cast<acc_t>(xv.v[k]);
    }
    store_vec<T, V>(grad_x + off, gx);
  }
  dot = block_sum(dot);
  if (threadIdx.x == 0) {
    partial[p * channels + c] = gate_masked(static_cast<double>(gate[c]), has_threshold, threshold) ? acc_t(0) : dot;
  }
}

// Channels-last backward over R = N * S rows of C channels (C % V == 0): block p covers part p of the rows.
// Thread (tx, ty) = (tid % tx_count, tid / tx_count) handles the vector of channels cu = cu0 + tx on rows
// ty, ty + ty_count, ...; the per-thread sums are then added over ty in shared memory, in order.
template <typename T, int V>
__global__ void channel_gate_backward_cl_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                                                const T* __restrict__ gate, bool has_threshold, double threshold,
                                                int64_t rows, int64_t channels, int64_t parts, int tx_count,
                                                T* __restrict__ grad_x, at::opmath_type<T>* __restrict__ partial) {
  using acc_t = at::opmath_type<T>;
  __shared__ acc_t sums[kThreads * V];
  const int tx = threadIdx.x % tx_count, ty = threadIdx.x / tx_count, ty_count = blockDim.x / tx_count;
  const int64_t p = blockIdx.x;
  const int64_t begin = p * rows / parts, end = (p + 1) * rows / parts;
  const int64_t vectors = channels / V;
  for (int64_t cu0 = 0; cu0 < vectors; cu0 += tx_count) {
    const int64_t cu = cu0 + tx, c0 = cu * V;
    acc_t acc[V];
#pragma unroll
    for (int k = 0; k < V; ++k) acc[k] = 0;
    if (cu < vectors) {
      acc_t g[V];
#pragma unroll
      for (int k = 0; k < V; ++k) g[k] = applied_gate<T, acc_t>(gate, c0 + k, has_threshold, threshold);
      for (int64_t r = begin + ty; r < end; r += ty_count) {
        const int64_t off = r * channels + c0;
        const Vec<T, V> gy = load_vec<T, V>(grad_y + off), xv = load_vec<T, V>(x + off);
        Vec<T, V> gx;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const acc_t gyk = static_cast<acc_t>(gy.v[k]);
          gx.v[k] = static_cast<T>(gyk * g[k]);
          acc[k] += gyk * static_cast<acc_t>(xv.v[k]);
        }
        store_vec<T, V>(grad_x + off, gx);
      }
    }
#pragma unroll
    for (int k = 0; k < V; ++k) sums[(ty * tx_count + tx) * V + k] = acc[k];
    __syncthreads();
    if (ty == 0 && cu < vectors) {
      for (int k = 0; k < V; ++k) {
        acc_t total = 0;
        for (int y = 0; y < ty_count; ++y) total += sums[(y * tx_count + tx) * V + k];
        const bool masked = gate_masked(static_cast<double>(gate[c0 + k]), has_threshold, threshold);
        partial[p * channels + c0 + k] = masked ? acc_t(0) : total;
      }
    }
    __syncthreads();  // sums is rewritten by the next group of channels
  }
}

}  // namespace cuda
}  // namespace pyaccel_nas
