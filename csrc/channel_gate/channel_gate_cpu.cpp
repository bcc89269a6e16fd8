// CPU kernels of channel_gate on dense channels-first or channels-last tensors: one pass over the data
// forward (y = x * g') and one backward (grad_x = grad_y * g' and grad_gate = sum grad_y * x together),
// parallel over rows. The row loops (channel_gate_rows.inc) are compiled for AVX2+FMA and for the baseline
// target, chosen at run time (cpu_isa.h).
#include "channel_gate.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/cpu_isa.h"
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

// Gate-gradient partial sums in T take at most this many terms per lane before being added to the double
// totals: the sums stay vectorised and lose no more precision than a 256-term float sum.
constexpr int64_t kTermsPerPartial = 256;

#if PYACCEL_NAS_X86_AVX2
PYACCEL_NAS_AVX2_BEGIN
namespace gate_avx2 {
#include "channel_gate_rows.inc"
}  // namespace gate_avx2
PYACCEL_NAS_AVX2_END
#endif

namespace gate_base {
#include "channel_gate_rows.inc"
}  // namespace gate_base

template <typename T>
struct RowKernels {
  decltype(&gate_base::forward_rows_channels_first<T>) forward_channels_first;
  decltype(&gate_base::forward_rows_channels_last<T>) forward_channels_last;
  decltype(&gate_base::backward_rows_channels_first<T>) backward_channels_first;
  decltype(&gate_base::backward_rows_channels_last<T>) backward_channels_last;
};

template <typename T>
RowKernels<T> row_kernels() {
#if PYACCEL_NAS_X86_AVX2
  if (use_avx2()) {
    return {&gate_avx2::forward_rows_channels_first<T>, &gate_avx2::forward_rows_channels_last<T>,
            &gate_avx2::backward_rows_channels_first<T>, &gate_avx2::backward_rows_channels_last<T>};
  }
#endif
  return {&gate_base::forward_rows_channels_first<T>, &gate_base::forward_rows_channels_last<T>,
          &gate_base::backward_rows_channels_first<T>, &gate_base::backward_rows_channels_last<T>};
}

}  // namespace

template <typename T>
void channel_gate_forward_cpu(const GateLayout& l, const T* x, const T* gate, bool has_threshold, double threshold,
                              T* y) {
  const std::vector<T> g = effective_gates(gate, l.channels, has_threshold, threshold);
  const T* gp = g.data();
  const RowKernels<T> k = row_kernels<T>();
  const int64_t C = l.channels, S = l.spatial;
  if (l.channels_last) {
    at::parallel_for(0, l.batch * S, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)),
                     [&](int64_t b, int64_t e) { k.forward_channels_last(x, gp, C, b, e, y); });
  } else {
    at::parallel_for(0, l.batch * C, std::max<int64_t>(1, kGrain / std::max<int64_t>(S, 1)),
                     [&](int64_t b, int64_t e) { k.forward_channels_first(x, gp, C, S, b, e, y); });
  }
}

template <typename T>
void channel_gate_backward_cpu(const GateLayout& l, const T* grad_y, const T* x, const T* gate, bool has_threshold,
                               double threshold, T* grad_x, T* grad_gate) {
  const std::vector<T> g = effective_gates(gate, l.channels, has_threshold, threshold);
  const T* gp = g.data();
  const RowKernels<T> k = row_kernels<T>();
  const int64_t C = l.channels, S = l.spatial;
  // grad_gate[c] = sum over n, s of grad_y * x: per chunk of rows in T lanes, then in double per chunk, and
  // the chunks in order (deterministic for a thread count).
  std::vector<double> gate_sum(static_cast<size_t>(C));
  if (l.channels_last) {
    parallel_accumulate<double>(l.batch * S, C, gate_sum.data(), [&](int64_t b, int64_t e, double* acc) {
      k.backward_channels_last(grad_y, x, gp, C, b, e, grad_x, acc);
    }, kGrain / std::max<int64_t>(C, 1));
  } else {
    parallel_accumulate<double>(l.batch * C, C, gate_sum.data(), [&](int64_t b, int64_t e, double* acc) {
      k.backward_channels_first(grad_y, x, gp, C, S, b, e, grad_x, acc);
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
