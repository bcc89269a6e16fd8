#include "channel_gate.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/parallel.h"
#include "../common/row_sums.h"

namespace pyaccel_nas {
namespace {

template <typename T>
std::vector<T> effective_gates(const T* gate, int64_t channels, bool has_threshold, double threshold) {
  std::vector<T> g(gate, gate + channels);
  if (has_threshold) {
    for (auto& v : g) {
      if (std::abs(static_cast<double>(v)) < threshold) v = T(0);
    }
  }
  return g;
}

// Elements per parallel task: small enough to spread a 64x36x32x32 tensor over the cores, large enough
// that scheduling costs nothing.
constexpr int64_t kGrain = 1 << 14;

// Channels-last rows summed in T for at most this many rows before being added to the double totals: the
// per-channel sums stay vectorised across channels and lose no more precision than a 256-term float sum.
constexpr int64_t kRowsPerPartial = 256;

}  // namespace

template <typename T>
void channel_gate_forward_cpu(const GateLayout& l, const T* x, const T* gate, bool has_threshold, double threshold,
                              T* y) {
  const std::vector<T> g = effective_gates(gate, l.channels, has_threshold, threshold);
  const T* gp = g.data();
  if (l.channels_last) {
    // channels-last: rows of C contiguous gates, one per (n, s)
    const int64_t rows = l.batch * l.spatial, C = l.channels;
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = x + r * C;
        T* yr = y + r * C;
        for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * gp[c];
      }
    });
  } else {
    // channels-first: rows of S elements sharing one gate, one per (n, c)
    const int64_t rows = l.batch * l.channels, S = l.spatial, C = l.channels;
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(S, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T gv = gp[r % C];
        const T* xr = x + r * S;
        T* yr = y + r * S;
        for (int64_t s = 0; s < S; ++s) yr[s] = xr[s] * gv;
      }
    });
  }
}

template <typename T>
void channel_gate_backward_cpu(const GateLayout& l, const T* grad_y, const T* x, const T* gate, bool has_threshold,
                               double threshold, T* grad_x, T* grad_gate) {
  const std::vector<T> g = effective_gates(gate, l.channels, has_threshold, threshold);
  const T* gp = g.data();
  const int64_t C = l.channels;
  // grad_gate[c] = sum over n, s of grad_y * x: per row (channels-first) or per block of rows (channels-last)
  // in T, then in double per chunk of rows, and the chunks in order (deterministic for a thread count).
  std::vector<double> gate_sum(static_cast<size_t>(C));
  if (l.channels_last) {
    const int64_t rows = l.batch * l.spatial;
    parallel_accumulate<double>(rows, C, gate_sum.data(), [&](int64_t b, int64_t e, double* acc) {
      std::vector<T> partial(static_cast<size_t>(C));
      for (int64_t r0 = b; r0 < e; r0 += kRowsPerPartial) {
        std::fill(partial.begin(), partial.end(), T(0));
        T* pp = partial.data();
        for (int64_t r = r0; r < std::min(e, r0 + kRowsPerPartial); ++r) {
          const T* gyr = grad_y + r * C;
          const T* xr = x + r * C;
          T* gxr = grad_x + r * C;
          for (int64_t c = 0; c < C; ++c) {
            gxr[c] = gyr[c] * gp[c];
            pp[c] += gyr[c] * xr[c];
          }
        }
        for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(pp[c]);
      }
    }, kGrain / std::max<int64_t>(C, 1));
  } else {
    const int64_t rows = l.batch * C, S = l.spatial;
    parallel_accumulate<double>(rows, C, gate_sum.data(), [&](int64_t b, int64_t e, double* acc) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t c = r % C;
        acc[c] += static_cast<double>(scale_and_dot(grad_y + r * S, x + r * S, gp[c], S, grad_x + r * S));
      }
    }, kGrain / std::max<int64_t>(S, 1));
  }
  for (int64_t c = 0; c < C; ++c) {
    // The threshold is a hard mask: a gate it zeroes gets no gradient, as in the reference's torch.where.
    const bool masked = has_threshold && std::abs(static_cast<double>(gate[c])) < threshold;
    grad_gate[c] = masked ? T(0) : static_cast<T>(gate_sum[c]);
  }
}

template void channel_gate_forward_cpu<float>(const GateLayout&, const float*, const float*, bool, double, float*);
template void channel_gate_forward_cpu<double>(const GateLayout&, const double*, const double*, bool, double, double*);
template void channel_gate_backward_cpu<float>(const GateLayout&, const float*, const float*, const float*, bool,
                                               double, float*, float*);
template void channel_gate_backward_cpu<double>(const GateLayout&, const double*, const double*, const double*, bool,
                                                double, double*, double*);

}  // namespace pyaccel_nas
