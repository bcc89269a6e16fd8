// Row loops with a reduction, shared by the CPU kernels.
#pragma once

#include <cstdint>

namespace pyaccel_nas {

// Independent partial sums in a row's dot product. A float sum in one variable is a serial chain the
// compiler may not reorder (one add per 4 cycles); kDotLanes fixed-size lanes vectorise into several
// independent vector chains, which makes a backward pass memory-bound instead of latency-bound.
constexpr int64_t kDotLanes = 16;

// out[i] = g[i] * scale for i < n (unit stride); returns sum_i g[i] * x[i].
template <typename T>
inline T scale_and_dot(const T* __restrict__ g, const T* __restrict__ x, T scale, int64_t n, T* __restrict__ out) {
  T lane[kDotLanes] = {};
  int64_t i = 0;
  for (; i + kDotLanes <= n; i += kDotLanes) {
    for (int64_t l = 0; l < kDotLanes; ++l) {
      out[i + l] = g[i + l] * scale;
      lane[l] += g[i + l] * x[i + l];
    }
  }
  T dot = T(0);
  for (; i < n; ++i) {
    out[i] = g[i] * scale;
    dot += g[i] * x[i];
  }
  for (int64_t l = 0; l < kDotLanes; ++l) dot += lane[l];
  return dot;
}

}  // namespace pyaccel_nas
