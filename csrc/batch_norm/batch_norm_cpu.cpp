// CPU kernels of batch_norm in training mode, on dense channels-first or channels-last tensors.
//
// Every pass is parallel over images (or channels-last rows), split as the ops before and after split
// them (sep_conv2d, torch's convolutions): each core then reads back the part of the tensor it wrote
// itself, from its own cache. Split by channel instead, half of every read crossed to the other core, and
// a call inside a network took 3x its time on a warm tensor. The channel sums of the chunks are added in
// chunk order, so results are deterministic for a thread count.
//
// Two shapes of loop: planes of at least kDotLanes elements (channels-first) reduce plane by plane into
// per-channel lanes; smaller planes, 1x1 planes and channels-last tensors are rows of columns (a whole
// image of C * S values, or one pixel of C channels) summed column-wise, then folded into channels. The
// loops (batch_norm_loops.inc) are compiled for AVX2+FMA and for the baseline target, chosen at run time
// (cpu_isa.h).
#include "batch_norm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/cpu_isa.h"
#include "../common/parallel.h"
#include "../common/row_sums.h"

namespace pyaccel_nas {
namespace {

// Sum terms per T lane before they are added to the double totals.
constexpr int64_t kTermsPerPartial = 256;

// Elements per parallel task of the channels-last row loops.
constexpr int64_t kGrain = 1 << 14;

#if PYACCEL_NAS_X86_AVX2
PYACCEL_NAS_AVX2_BEGIN
namespace norm_avx2 {
#include "batch_norm_loops.inc"
}  // namespace norm_avx2
PYACCEL_NAS_AVX2_END
#endif

namespace norm_base {
#include "batch_norm_loops.inc"
}  // namespace norm_base

template <typename T>
struct Loops {
  decltype(&norm_base::planes_sum<T>) planes_sum;
  decltype(&norm_base::planes_gradient_sums<T>) planes_gradient_sums;
  decltype(&norm_base::planes_normalize<T>) planes_normalize;
  decltype(&norm_base::planes_input_gradient<T>) planes_input_gradient;
  decltype(&norm_base::rows_sum<T>) rows_sum;
  decltype(&norm_base::rows_gradient_sums<T>) rows_gradient_sums;
  decltype(&norm_base::rows_normalize<T>) rows_normalize;
  decltype(&norm_base::rows_input_gradient<T>) rows_input_gradient;
};

template <typename T>
Loops<T> loops() {
#if PYACCEL_NAS_X86_AVX2
  if (use_avx2()) {
    return {&norm_avx2::planes_sum<T>,          &norm_avx2::planes_gradient_sums<T>, &norm_avx2::planes_normalize<T>,
            &norm_avx2::planes_input_gradient<T>, &norm_avx2::rows_sum<T>,             &norm_avx2::rows_gradient_sums<T>,
            &norm_avx2::rows_normalize<T>,      &norm_avx2::rows_input_gradient<T>};
  }
#endif
  return {&norm_base::planes_sum<T>,          &norm_base::planes_gradient_sums<T>, &norm_base::planes_normalize<T>,
          &norm_base::planes_input_gradient<T>, &norm_base::rows_sum<T>,             &norm_base::rows_gradient_sums<T>,
          &norm_base::rows_normalize<T>,      &norm_base::rows_input_gradient<T>};
}

// How a tensor is walked: planes (channels-first, planes of at least kDotLanes elements), or `rows` rows
// of `width` columns, column j belonging to channel j / `repeat`.
struct Walk {
  bool planes;
  int64_t rows, width, repeat;
};

Walk walk_of(const NormLayout& l) {
  if (l.channels_last || l.spatial == 1) return {false, l.batch * l.spatial, l.channels, 1};
  if (l.spatial >= kDotLanes) return {true, l.batch, l.channels, 1};
  return {false, l.batch, l.channels * l.spatial, l.spatial};
}

// Chunks of fewer elements than this run on one thread: a parallel region costs more than it saves.
int64_t min_rows_per_chunk(const Walk& w, int64_t spatial) {
  const int64_t per_row = w.planes ? w.width * spatial : w.width;
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(per_row, 1));
}

// Per-channel values repeated for each of a channel's columns.
template <typename T>
std::vector<T> per_column(const T* per_channel, int64_t C, int64_t repeat) {
  std::vector<T> out(static_cast<size_t>(C * repeat));
  for (int64_t j = 0; j < C * repeat; ++j) out[j] = per_channel[j / repeat];
  return out;
}

// Column sums added into per-channel sums (`out`, C entries, zeroed here).
void fold_columns(const std::vector<double>& columns, int64_t C, int64_t repeat, double* out) {
  std::fill(out, out + C, 0.0);
  for (int64_t j = 0; j < C * repeat; ++j) out[j / repeat] += columns[j];
}

// Sums over the tensor, per channel, into `out` (C entries): of x, or with `mean` of (x - mean)^2.
template <typename T>
void channel_sums(const Loops<T>& k, const NormLayout& l, const Walk& w, const T* x, const T* mean, double* out) {
  const int64_t C = l.channels;
  if (w.planes) {
    parallel_accumulate<double>(w.rows, C, out, [&](int64_t b, int64_t e, double* acc) {
      k.planes_sum(x, mean, C, l.spatial, b, e, acc);
    }, min_rows_per_chunk(w, l.spatial));
    return;
  }
  const std::vector<T> mean_col = mean ? per_column(mean, C, w.repeat) : std::vector<T>();
  std::vector<double> columns(static_cast<size_t>(w.width));
  parallel_accumulate<double>(w.rows, w.width, columns.data(), [&](int64_t b, int64_t e, double* acc) {
    k.rows_sum(x, mean ? mean_col.data() : nullptr, w.width, b, e, acc);
  }, min_rows_per_chunk(w, l.spatial));
  fold_columns(columns, C, w.repeat, out);
}

}  // namespace

template <typename T>
void batch_norm_forward_cpu(const NormLayout& l, const T* x, const T* weight, const T* bias, T* running_mean,
                            T* running_var, double momentum, double eps, T* y, T* save_mean, T* save_invstd) {
  const Loops<T> k = loops<T>();
  const Walk w = walk_of(l);
  const int64_t C = l.channels;
  const double M = static_cast<double>(l.batch) * static_cast<double>(l.spatial);
  // two passes, as torch's: the variance from deviations, not E[x^2] - E[x]^2, which cancels
  std::vector<double> sums(static_cast<size_t>(C)), var(static_cast<size_t>(C));
  channel_sums(k, l, w, x, static_cast<const T*>(nullptr), sums.data());
  for (int64_t c = 0; c < C; ++c) save_mean[c] = static_cast<T>(sums[c] / M);
  channel_sums(k, l, w, x, static_cast<const T*>(save_mean), var.data());
  std::vector<T> scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    var[c] /= M;
    save_invstd[c] = static_cast<T>(1.0 / std::sqrt(var[c] + eps));
    scale[c] = (weight ? weight[c] : T(1)) * save_invstd[c];
    shift[c] = bias ? bias[c] : T(0);
  }
  const int64_t grain = min_rows_per_chunk(w, l.spatial);
  if (w.planes) {
    at::parallel_for(0, l.batch * C, grain * C, [&](int64_t b, int64_t e) {
      k.planes_normalize(x, save_mean, scale.data(), shift.data(), C, l.spatial, b, e, y);
    });
  } else {
    const auto mean_col = per_column(save_mean, C, w.repeat), scale_col = per_column(scale.data(), C, w.repeat),
               shift_col = per_column(shift.data(), C, w.repeat);
    at::parallel_for(0, w.rows, grain, [&](int64_t b, int64_t e) {
      k.rows_normalize(x, mean_col.data(), scale_col.data(), shift_col.data(), w.width, b, e, y);
    });
  }
  // the running variance is unbiased, as torch's; M >= 2 (the wrapper checks)
  for (int64_t c = 0; c < C; ++c) {
    if (running_mean) {
      running_mean[c] = static_cast<T>((1.0 - momentum) * running_mean[c] + momentum * save_mean[c]);
    }
    if (running_var) {
      running_var[c] = static_cast<T>((1.0 - momentum) * running_var[c] + momentum * var[c] * M / (M - 1.0));
    }
  }
}

template <typename T>
void batch_norm_backward_cpu(const NormLayout& l, const T* grad_y, int64_t grad_y_image_stride, const T* x,
                             const T* weight, const T* mean, const T* invstd, T* grad_x, T* grad_weight,
                             T* grad_bias) {
  const Loops<T> k = loops<T>();
  const Walk w = walk_of(l);
  // grad_y's rows: images, but for the pixels of a channels-last layout (which the caller passes dense)
  const int64_t gs = l.channels_last && l.spatial > 1 ? l.channels : grad_y_image_stride;
  const int64_t C = l.channels;
  const double M = static_cast<double>(l.batch) * static_cast<double>(l.spatial);
  const int64_t grain = min_rows_per_chunk(w, l.spatial);
  std::vector<double> sums(static_cast<size_t>(2 * C));  // sum g, then sum g * (x - mean)
  std::vector<T> mean_col;
  if (w.planes) {
    parallel_accumulate<double>(w.rows, 2 * C, sums.data(), [&](int64_t b, int64_t e, double* acc) {
      k.planes_gradient_sums(grad_y, gs, x, mean, C, l.spatial, b, e, acc);
    }, grain);
  } else {
    mean_col = per_column(mean, C, w.repeat);
    std::vector<double> columns(static_cast<size_t>(2 * w.width));
    parallel_accumulate<double>(w.rows, 2 * w.width, columns.data(), [&](int64_t b, int64_t e, double* acc) {
      k.rows_gradient_sums(grad_y, gs, x, mean_col.data(), w.width, b, e, acc);
    }, grain);
    fold_columns(std::vector<double>(columns.begin(), columns.begin() + w.width), C, w.repeat, sums.data());
    fold_columns(std::vector<double>(columns.begin() + w.width, columns.end()), C, w.repeat, sums.data() + C);
  }
  std::vector<T> mean_g(static_cast<size_t>(C)), projection(static_cast<size_t>(C)), scale(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    grad_bias[c] = static_cast<T>(sums[c]);
    grad_weight[c] = static_cast<T>(sums[C + c] * invstd[c]);
    mean_g[c] = static_cast<T>(sums[c] / M);
    projection[c] = static_cast<T>(sums[C + c] / M * invstd[c] * invstd[c]);
    scale[c] = (weight ? weight[c] : T(1)) * invstd[c];
  }
  if (w.planes) {
    at::parallel_for(0, l.batch * C, grain * C, [&](int64_t b, int64_t e) {
      k.planes_input_gradient(grad_y, gs, x, mean, mean_g.data(), projection.data(), scale.data(), C, l.spatial, b, e,
                              grad_x);
    });
  } else {
    const auto mean_g_col = per_column(mean_g.data(), C, w.repeat),
               projection_col = per_column(projection.data(), C, w.repeat),
               scale_col = per_column(scale.data(), C, w.repeat);
    at::parallel_for(0, w.rows, grain, [&](int64_t b, int64_t e) {
      k.rows_input_gradient(grad_y, gs, x, mean_col.data(), mean_g_col.data(), projection_col.data(), scale_col.data(),
                            w.width, b, e, grad_x);
    });
  }
}

template void batch_norm_forward_cpu<float>(const NormLayout&, const float*, const float*, const float*, float*,
                                            float*, double, double, float*, float*, float*);
template void batch_norm_forward_cpu<double>(const NormLayout&, const double*, const double*, const double*, double*,
                                             double*, double, double, double*, double*, double*);
template void batch_norm_backward_cpu<float>(const NormLayout&, const float*, int64_t, const float*, const float*,
                                             const float*, const float*, float*, float*, float*);
template void batch_norm_backward_cpu<double>(const NormLayout&, const double*, int64_t, const double*, const double*,
                                              const double*, const double*, double*, double*, double*);

}  // namespace pyaccel_nas
