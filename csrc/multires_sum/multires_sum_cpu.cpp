// CPU kernels of multires_sum. The forward reads every branch once per output row and never materialises
// an upsampled branch. The backward is a gather: each branch element collects the output gradients that
// read it (the transpose of the interpolation, per axis), so threads never write to the same element.
#include "multires_sum.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "../common/parallel.h"

namespace pyaccel_nas {
namespace {

// Interpolation along one axis: output index o reads input `first[o]` with weight `w_first[o]` and input
// `second[o]` with weight `w_second[o]` (nearest: second == first, w_second == 0).
struct AxisTaps {
  std::vector<int64_t> first, second;
  std::vector<double> w_first, w_second;
};

AxisTaps axis_taps(int64_t in, int64_t out, bool linear) {
  const int64_t factor = out / in;  // the wrapper checked out % in == 0
  AxisTaps taps;
  taps.first.resize(out);
  taps.second.resize(out);
  taps.w_first.resize(out);
  taps.w_second.resize(out);
  for (int64_t o = 0; o < out; ++o) {
    if (!linear) {
      taps.first[o] = taps.second[o] = o / factor;
      taps.w_first[o] = 1.0;
      taps.w_second[o] = 0.0;
      continue;
    }
    // align_corners=False, as torch.nn.functional.interpolate
    const double src = std::max((o + 0.5) / static_cast<double>(factor) - 0.5, 0.0);
    const int64_t i0 = std::min(static_cast<int64_t>(src), in - 1);
    const double lambda = std::min(std::max(src - static_cast<double>(i0), 0.0), 1.0);
    taps.first[o] = i0;
    taps.second[o] = i0 < in - 1 ? i0 + 1 : i0;
    taps.w_first[o] = 1.0 - lambda;
    taps.w_second[o] = lambda;
  }
  return taps;
}

// The transpose of AxisTaps: for input index i, the (output index, weight) pairs that read it.
struct AxisGather {
  std::vector<int64_t> begin;  // entries of input i are [begin[i], begin[i + 1])
  std::vector<int64_t> out_index;
  std::vector<double> weight;
};

AxisGather axis_gather(const AxisTaps& taps, int64_t in) {
  std::vector<std::vector<std::pair<int64_t, double>>> lists(static_cast<size_t>(in));
  for (size_t o = 0; o < taps.first.size(); ++o) {
    lists[taps.first[o]].emplace_back(o, taps.w_first[o]);
    if (taps.w_second[o] != 0.0) lists[taps.second[o]].emplace_back(o, taps.w_second[o]);
  }
  AxisGather g;
  g.begin.push_back(0);
  for (const auto& list : lists) {
    for (const auto& [o, w] : list) {
      g.out_index.push_back(o);
      g.weight.push_back(w);
    }
    g.begin.push_back(static_cast<int64_t>(g.out_index.size()));
  }
  return g;
}

struct BranchTaps {
  AxisTaps t, h, w;
};

std::vector<BranchTaps> all_taps(const MultiresShape& s, const std::vector<MultiresBranch>& layout) {
  std::vector<BranchTaps> taps;
  for (const auto& b : layout) {
    taps.push_back({axis_taps(b.t, s.out_t, s.linear), axis_taps(b.h, s.out_h, s.linear),
                    axis_taps(b.w, s.out_w, s.linear)});
  }
  return taps;
}

// Rows of output elements sharing (n, c, t, h); the innermost loop runs along w.
constexpr int64_t kRowGrain = 16;

// Nearest mode on unit-stride rows, the common NCHW case: plain loops the compiler vectorises, instead of
// the index tables (a gather per element) that serve every other layout and mode.
// acc[i * f + j] += scale * src[i] for i < in, j < f: the row src upsampled by f.
template <typename T>
void add_upsampled_row(T* acc, const T* src, T scale, int64_t in, int64_t f) {
  if (f == 1) {
    for (int64_t i = 0; i < in; ++i) acc[i] += scale * src[i];
  } else if (f == 2) {
    for (int64_t i = 0; i < in; ++i) {
      const T v = scale * src[i];
      acc[2 * i] += v;
      acc[2 * i + 1] += v;
    }
  } else {
    for (int64_t i = 0; i < in; ++i) {
      const T v = scale * src[i];
      for (int64_t j = 0; j < f; ++j) acc[i * f + j] += v;
    }
  }
}

// The transpose: acc[i] += scale * sum_{j < f} g[i * f + j] for i < in.
template <typename T>
void add_downsampled_row(T* acc, const T* g, T scale, int64_t in, int64_t f) {
  if (f == 1) {
    for (int64_t i = 0; i < in; ++i) acc[i] += scale * g[i];
  } else if (f == 2) {
    for (int64_t i = 0; i < in; ++i) acc[i] += scale * (g[2 * i] + g[2 * i + 1]);
  } else {
    for (int64_t i = 0; i < in; ++i) {
      T sum = T(0);
      for (int64_t j = 0; j < f; ++j) sum += g[i * f + j];
      acc[i] += scale * sum;
    }
  }
}

}  // namespace

template <typename T>
void multires_sum_forward_cpu(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                              const std::vector<const T*>& branches, const T* weights, T* y, Strides5 ys) {
  const std::vector<BranchTaps> taps = all_taps(s, layout);
  const int64_t rows = s.batch * s.channels * s.out_t * s.out_h, Wo = s.out_w;
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<T> buffer(static_cast<size_t>(Wo));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t oh = row % s.out_h, ot = (row / s.out_h) % s.out_t;
      const int64_t c = (row / (s.out_h * s.out_t)) % s.channels, n = row / (s.out_h * s.out_t * s.channels);
      T* dst = y + n * ys.n + c * ys.c + ot * ys.t + oh * ys.h;
      T* acc = ys.w == 1 ? dst : buffer.data();  // a unit-stride output row accumulates in place
      std::fill(acc, acc + Wo, T(0));
      for (size_t k = 0; k < branches.size(); ++k) {
        const MultiresBranch& b = layout[k];
        const BranchTaps& tk = taps[k];
        const T* base = branches[k] + n * b.strides.n + c * b.strides.c;
        const int64_t sw = b.strides.w;
        // up to 2 x 2 input rows (t, h) contribute to this output row
        const int64_t ts[2] = {tk.t.first[ot], tk.t.second[ot]}, hs[2] = {tk.h.first[oh], tk.h.second[oh]};
        const double tw[2] = {tk.t.w_first[ot], tk.t.w_second[ot]}, hw[2] = {tk.h.w_first[oh], tk.h.w_second[oh]};
        for (int dt = 0; dt < 2; ++dt) {
          for (int dh = 0; dh < 2; ++dh) {
            const double row_weight = tw[dt] * hw[dh];
            if (row_weight == 0.0) continue;
            const T scale = static_cast<T>(row_weight) * weights[k];
            const T* src = base + ts[dt] * b.strides.t + hs[dh] * b.strides.h;
            if (!s.linear && sw == 1) {
              add_upsampled_row(acc, src, scale, b.w, Wo / b.w);
            } else if (!s.linear) {
              for (int64_t ow = 0; ow < Wo; ++ow) acc[ow] += scale * src[tk.w.first[ow] * sw];
            } else {
              for (int64_t ow = 0; ow < Wo; ++ow) {
                acc[ow] += scale * (static_cast<T>(tk.w.w_first[ow]) * src[tk.w.first[ow] * sw] +
                                    static_cast<T>(tk.w.w_second[ow]) * src[tk.w.second[ow] * sw]);
              }
            }
          }
        }
      }
      if (ys.w != 1) {
        for (int64_t ow = 0; ow < Wo; ++ow) dst[ow * ys.w] = acc[ow];
      }
    }
  });
}

template <typename T>
void multires_sum_backward_cpu(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                               const std::vector<const T*>& branches, const T* weights, const T* grad_y,
                               Strides5 gys, const std::vector<T*>& grad_branches,
                               const std::vector<Strides5>& grad_strides, T* grad_weights) {
  const std::vector<BranchTaps> taps = all_taps(s, layout);
  for (size_t k = 0; k < branches.size(); ++k) {
    const MultiresBranch& b = layout[k];
    const AxisGather gt = axis_gather(taps[k].t, b.t), gh = axis_gather(taps[k].h, b.h),
                     gw = axis_gather(taps[k].w, b.w);
    const T wk = weights[k];
    const int64_t rows = s.batch * s.channels * b.t * b.h;
    double dot = 0.0;
    // grad_weights[k] = <grad_y, P_k b_k> = <P_k^T grad_y, b_k>: the gathered gradient G serves both.
    parallel_accumulate<double>(rows, 1, &dot, [&](int64_t begin, int64_t end, double* acc) {
      std::vector<T> gathered(static_cast<size_t>(b.w));
      for (int64_t row = begin; row < end; ++row) {
        const int64_t h = row % b.h, t = (row / b.h) % b.t;
        const int64_t c = (row / (b.h * b.t)) % s.channels, n = row / (b.h * b.t * s.channels);
        std::fill(gathered.begin(), gathered.end(), T(0));
        for (int64_t it = gt.begin[t]; it < gt.begin[t + 1]; ++it) {
          for (int64_t ih = gh.begin[h]; ih < gh.begin[h + 1]; ++ih) {
            const T row_weight = static_cast<T>(gt.weight[it] * gh.weight[ih]);
            const T* g = grad_y + n * gys.n + c * gys.c + gt.out_index[it] * gys.t + gh.out_index[ih] * gys.h;
            if (!s.linear && gys.w == 1) {
              add_downsampled_row(gathered.data(), g, row_weight, b.w, s.out_w / b.w);
              continue;
            }
            for (int64_t w = 0; w < b.w; ++w) {
              T sum = T(0);
              for (int64_t iw = gw.begin[w]; iw < gw.begin[w + 1]; ++iw) {
                sum += static_cast<T>(gw.weight[iw]) * g[gw.out_index[iw] * gys.w];
              }
              gathered[w] += row_weight * sum;
            }
          }
        }
        const Strides5& gs = grad_strides[k];
        const T* src = branches[k] + n * b.strides.n + c * b.strides.c + t * b.strides.t + h * b.strides.h;
        T* dst = grad_branches[k] + n * gs.n + c * gs.c + t * gs.t + h * gs.h;
        T row_dot = T(0);
        for (int64_t w = 0; w < b.w; ++w) {
          dst[w * gs.w] = wk * gathered[w];
          row_dot += gathered[w] * src[w * b.strides.w];
        }
        acc[0] += static_cast<double>(row_dot);
      }
    });
    grad_weights[k] = static_cast<T>(dot);
  }
}

template void multires_sum_forward_cpu<float>(const MultiresShape&, const std::vector<MultiresBranch>&,
                                              const std::vector<const float*>&, const float*, float*, Strides5);
template void multires_sum_forward_cpu<double>(const MultiresShape&, const std::vector<MultiresBranch>&,
                                               const std::vector<const double*>&, const double*, double*, Strides5);
template void multires_sum_backward_cpu<float>(const MultiresShape&, const std::vector<MultiresBranch>&,
                                               const std::vector<const float*>&, const float*, const float*, Strides5,
                                               const std::vector<float*>&, const std::vector<Strides5>&, float*);
template void multires_sum_backward_cpu<double>(const MultiresShape&, const std::vector<MultiresBranch>&,
                                                const std::vector<const double*>&, const double*, const double*,
                                                Strides5, const std::vector<double*>&, const std::vector<Strides5>&,
                                                double*);

}  // namespace pyaccel_nas
