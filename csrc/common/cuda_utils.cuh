// Device-side helpers shared by the CUDA kernels: 16-byte vectors, deterministic reductions. Host-side
// launch helpers are in cuda_launch.cuh; this header needs no CUDA runtime header of its own.
//
// Determinism: no kernel adds floats with atomics. A gradient that sums over many elements is computed in
// two passes: blocks write partial sums into a workspace (each block reduces in a fixed tree order), then
// `sum_partials` adds the partials of each output in index order. The number of partials depends only on the
// shapes, so results are bitwise reproducible run to run on a given GPU.
#pragma once

#include <ATen/OpMathType.h>

#include <cstdint>

namespace pyaccel_nas {
namespace cuda {

// Threads per block of every 1-D kernel: a multiple of the warp size (block_sum relies on full warps).
constexpr int kThreads = 256;
// Partial sums per gradient entry at most (the first reduction pass's blocks along the reduced axis).
constexpr int64_t kMaxParts = 1024;

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Elements per 16-byte vector.
template <typename T>
constexpr int vec_width() {
  return static_cast<int>(16 / sizeof(T));
}

// V elements loaded or stored with one instruction; the address must be aligned to the whole vector.
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Vec<T, V> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, V>*>(p);
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, V>& v) {
  *reinterpret_cast<Vec<T, V>*>(p) = v;
}

// Sum of `v` over the block, returned to thread 0 (other threads get a partial value). Every thread of
// the block must call it; blockDim.x must be a multiple of 32. The order of additions is fixed.
template <typename acc_t>
__device__ acc_t block_sum(acc_t v) {
  __shared__ acc_t warp_sums[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < warps ? warp_sums[threadIdx.x] : acc_t(0);
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  __syncthreads();  // warp_sums may be reused by the next call
  return v;
}

// out[i] = sum over p in [0, parts) of partial[p * width + i], in order of p.
template <typename T, typename acc_t>
__global__ void sum_partials_kernel(const acc_t* __restrict__ partial, int64_t parts, int64_t width,
                                    T* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc_t sum = 0;
    for (int64_t p = 0; p < parts; ++p) sum += partial[p * width + i];
    out[i] = static_cast<T>(sum);
  }
}

}  // namespace cuda
}  // namespace pyaccel_nas
