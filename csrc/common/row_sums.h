// Row loops with a reduction, shared by the CPU kernels.
#pragma once

#include <cstdint>

namespace pyaccel_nas {

// Independent partial sums in a row's dot product. A float sum in one variable is a serial chain the
// compiler may not reorder (one add per 4 cycles); kDotLanes fixed-size lanes vectorise into several
// independent vector chains, which makes a backward pass memory-bound instead of latency-bound.
constexpr int64_t kDotLanes = 16;

// out[i] = g[i] * scale for i < n (unit stride), and the products g[i] * x[i] added to the kDotLanes
// partial sums `lanes`. The lanes stay unreduced, so that rows sharing a sum need one horizontal reduction
// in all, not one each: a serial 16-term add chain per row cost as much as a 64-element row.
// Always inlined: in a kernel compiled for AVX2 (cpu_isa.h) the loop is then vectorised for AVX2 too.
template <typename T>
inline __attribute__((always_inline)) void scale_and_accumulate(const T* __restrict__ g, const T* __restrict__ x, T scale, int64_t n,
                                 T* __restrict__ out, T* __restrict__ lanes) {
  T lane[kDotLanes];
  for (int64_t l = 0; l < kDotLanes; ++l) lane[l] = lanes[l];
  int64_t i = 0;
  for (; i + kDotLanes <= n; i += kDotLanes) {
    for (int64_t l = 0; l < kDotLanes; ++l) {
      out[i + l] = g[i + l] * scale;
      lane[l] += g[i + l] * x[i + l];
    }
  }
  if (i < n) {
    // The tail through zero-padded copies, so that the lanes are only ever indexed by constants: a variable
    // index kept them in memory and took them apart element by element for every row.
    T g_tail[kDotLanes] = {}, x_tail[kDotLanes] = {};
    for (int64_t l = 0; i + l < n; ++l) {
      g_tail[l] = g[i + l];
      x_tail[l] = x[i + l];
      out[i + l] = g[i + l] * scale;
    }
    for (int64_t l = 0; l < kDotLanes; ++l) lane[l] += g_tail[l] * x_tail[l];
  }
  for (int64_t l = 0; l < kDotLanes; ++l) lanes[l] = lane[l];
}

// out[i] = g[i] * scale for i < n (unit stride); returns sum_i g[i] * x[i].
template <typename T>
inline T scale_and_dot(const T* __restrict__ g, const T* __restrict__ x, T scale, int64_t n, T* __restrict__ out) {
  T lanes[kDotLanes] = {};
  scale_and_accumulate(g, x, scale, n, out, lanes);
  T dot = T(0);
  for (T lane : lanes) dot += lane;
  return dot;
}

}  // namespace pyaccel_nas
