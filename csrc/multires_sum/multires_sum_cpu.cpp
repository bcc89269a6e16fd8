// CPU kernels of multires_sum. The forward reads every branch once per output row and never materialises
// an upsampled branch. The backward is a gather: each branch element collects the output gradients that
// read it (the transpose of the interpolation, per axis), so threads never write to the same element.
//
// Along t and h an output row reads at most two input rows per branch (weights per row, from AxisTaps);
// along w, nearest mode repeats each input element f times and linear mode (align_corners=False) is a
// fixed pair of weights per phase j = ow mod f (WPhases), so unit-stride rows need no per-element tables.
#include "multires_sum.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "../common/parallel.h"
#include "../common/row_sums.h"

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

// (n, c, t, h) of consecutive rows, advanced without an integer division per row (a 64-bit division costs
// as much as the rest of a short row's work).
struct RowCursor {
  int64_t C, T, H;
  int64_t n, c, t, h;
  RowCursor(int64_t row, int64_t channels, int64_t t_size, int64_t h_size)
      : C(channels), T(t_size), H(h_size), n(row / (h_size * t_size * channels)), c((row / (h_size * t_size)) % channels),
        t((row / h_size) % t_size), h(row % h_size) {}
  void next() {
    if (++h < H) return;
    h = 0;
    if (++t < T) return;
    t = 0;
    if (++c < C) return;
    c = 0;
    ++n;
  }
};

// Linear interpolation along w by an integer factor f, align_corners=False. Output i * f + j reads the row
// padded by one replicated element at each end, p[1 + i + d] for i < in: phase j < f / 2 (2j + 1 < f) mixes
// p[i] and p[i + 1] (the input's i - 1 and i), the others p[i + 1] and p[i + 2]. The padding reproduces the
// clamping at both edges.
template <typename T>
struct WPhases {
  int64_t f;
  std::vector<T> w_lo, w_hi;    // weights of the lower and the upper input of each phase
  std::vector<int64_t> lo;      // offset of the lower input in the padded row: i + lo[j]
};

template <typename T>
WPhases<T> w_phases(int64_t in, int64_t out) {
  WPhases<T> p{out / in, {}, {}, {}};
  for (int64_t j = 0; j < p.f; ++j) {
    const double frac = (j + 0.5) / static_cast<double>(p.f);
    const bool left = 2 * j + 1 < p.f;
    const double lambda = left ? frac + 0.5 : frac - 0.5;
    p.lo.push_back(left ? 0 : 1);
    p.w_lo.push_back(static_cast<T>(1.0 - lambda));
    p.w_hi.push_back(static_cast<T>(lambda));
  }
  return p;
}

// acc[i * f + j] += w_lo[j] * p[i + lo[j]] + w_hi[j] * p[i + lo[j] + 1], p = the padded row (in + 2 elements).
template <typename T>
void add_linear_upsampled_row(T* acc, const T* p, const WPhases<T>& ph, int64_t in) {
  const int64_t f = ph.f;
  if (f == 2) {
    const T a0 = ph.w_lo[0], b0 = ph.w_hi[0], a1 = ph.w_lo[1], b1 = ph.w_hi[1];
    for (int64_t i = 0; i < in; ++i) {
      acc[2 * i] += a0 * p[i] + b0 * p[i + 1];
      acc[2 * i + 1] += a1 * p[i + 1] + b1 * p[i + 2];
    }
    return;
  }
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t j = 0; j < f; ++j) {
      const T* q = p + i + ph.lo[j];
      acc[i * f + j] += ph.w_lo[j] * q[0] + ph.w_hi[j] * q[1];
    }
  }
}

// The transpose: padded[i + lo[j]] += w_lo[j] * g[i * f + j] and padded[i + lo[j] + 1] += w_hi[j] * g[i * f + j];
// then the two padding elements fold back onto the edges: acc[i] += padded[i + 1] (+ the pads at 0, in - 1).
template <typename T>
void add_linear_downsampled_row(T* acc, const T* g, const WPhases<T>& ph, int64_t in, T* padded) {
  const int64_t f = ph.f;
  std::fill(padded, padded + in + 2, T(0));
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t j = 0; j < f; ++j) {
      const T v = g[i * f + j];
      T* q = padded + i + ph.lo[j];
      q[0] += ph.w_lo[j] * v;
      q[1] += ph.w_hi[j] * v;
    }
  }
  for (int64_t i = 0; i < in; ++i) acc[i] += padded[i + 1];
  acc[0] += padded[0];
  acc[in - 1] += padded[in + 1];
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

// grad_weights[k] summed as the reference sums grad_y * upsample(b_k): every product of a branch element
// with a gradient that reads it, on its own. The backward's <P^T grad_y, b_k> regroups that sum and equals it
// for finite numbers only: an infinite element read by gradients 0, or of both signs, gives NaN (inf * 0,
// inf - inf), where its gathered gradient times it gives +-inf. Rare, so one thread.
template <typename T>
double weight_grad_by_reader(const MultiresShape& s, const MultiresBranch& b, const BranchTaps& taps,
                             const T* branch, const T* grad_y, Strides5 gys) {
  const AxisGather gt = axis_gather(taps.t, b.t), gh = axis_gather(taps.h, b.h), gw = axis_gather(taps.w, b.w);
  const int64_t rows = s.batch * s.channels * b.t * b.h;
  double sum = 0.0;
  RowCursor at(0, s.channels, b.t, b.h);
  for (int64_t row = 0; row < rows; ++row, at.next()) {
    const T* src = branch + at.n * b.strides.n + at.c * b.strides.c + at.t * b.strides.t + at.h * b.strides.h;
    const T* g = grad_y + at.n * gys.n + at.c * gys.c;
    for (int64_t w = 0; w < b.w; ++w) {
      const double x = static_cast<double>(src[w * b.strides.w]);
      for (int64_t it = gt.begin[at.t]; it < gt.begin[at.t + 1]; ++it) {
        for (int64_t ih = gh.begin[at.h]; ih < gh.begin[at.h + 1]; ++ih) {
          for (int64_t iw = gw.begin[w]; iw < gw.begin[w + 1]; ++iw) {
            const T* read = g + gt.out_index[it] * gys.t + gh.out_index[ih] * gys.h + gw.out_index[iw] * gys.w;
            sum += gt.weight[it] * gh.weight[ih] * gw.weight[iw] * static_cast<double>(*read) * x;
          }
        }
      }
    }
  }
  return sum;
}

// Channels innermost in the output and every branch (channels-last), nearest mode: an output pixel reads one
// pixel of each branch, and both hold their channels contiguously, so the sum runs pixel by pixel,
// vectorised along c. The row-wise path would walk w with a stride of C elements, one cache line per element.
bool channels_innermost(const MultiresShape& s, const std::vector<MultiresBranch>& layout, Strides5 ys) {
  if (s.linear || ys.c != 1 || s.channels < 2) return false;
  for (const auto& b : layout) {
    if (b.strides.c != 1) return false;
  }
  return true;
}

template <typename T>
void forward_channels_innermost(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                                const std::vector<BranchTaps>& taps, const std::vector<const T*>& branches,
                                const T* weights, T* y, Strides5 ys) {
  const int64_t C = s.channels, Wo = s.out_w, rows = s.batch * s.out_t * s.out_h;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, Wo * C));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t oh = row % s.out_h, ot = (row / s.out_h) % s.out_t, n = row / (s.out_h * s.out_t);
      T* dst_row = y + n * ys.n + ot * ys.t + oh * ys.h;
      for (size_t k = 0; k < branches.size(); ++k) {
        const MultiresBranch& b = layout[k];
        const BranchTaps& tk = taps[k];
        const T* src_row = branches[k] + n * b.strides.n + tk.t.first[ot] * b.strides.t + tk.h.first[oh] * b.strides.h;
        const T scale = weights[k];
        for (int64_t ow = 0; ow < Wo; ++ow) {
          T* __restrict__ dst = dst_row + ow * ys.w;
          const T* __restrict__ src = src_row + tk.w.first[ow] * b.strides.w;
          if (k == 0) {
            for (int64_t c = 0; c < C; ++c) dst[c] = scale * src[c];
          } else {
            for (int64_t c = 0; c < C; ++c) dst[c] += scale * src[c];
          }
        }
      }
    }
  });
}

// A branch at the output's size, laid out as the output (the wrapper lays every activation out in one
// memory format, densely): it is not resampled, and the op on it is element-wise over the flat buffer. The
// supernet's MixedOp sums seven such branches; walked as rows of 4 to 16 elements they cost up to ten
// times eager's flat ops.
bool flat(const MultiresShape& s, const MultiresBranch& b, Strides5 ys) {
  const Strides5& bs = b.strides;
  return b.t == s.out_t && b.h == s.out_h && b.w == s.out_w && bs.n == ys.n && bs.c == ys.c && bs.t == ys.t &&
         bs.h == ys.h && bs.w == ys.w;
}

int64_t flat_numel(const MultiresShape& s) { return s.batch * s.channels * s.out_t * s.out_h * s.out_w; }

// Flat work goes in blocks of this many elements: a block of y stays in the L1 cache while every branch is
// added into it, and a block's dot product is summed in T (kDotLanes lanes of 256 terms) before the double
// total.
constexpr int64_t kFlatBlock = 4096;

template <typename T>
void forward_flat(const MultiresShape& s, const std::vector<const T*>& branches, const T* weights, T* y) {
  const int64_t total = flat_numel(s), blocks = (total + kFlatBlock - 1) / kFlatBlock;
  at::parallel_for(0, blocks, 4, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t i0 = block * kFlatBlock, n = std::min(kFlatBlock, total - i0);
      T* __restrict__ dst = y + i0;
      for (size_t k = 0; k < branches.size(); ++k) {
        const T* __restrict__ src = branches[k] + i0;
        const T scale = weights[k];
        if (k == 0) {
          for (int64_t i = 0; i < n; ++i) dst[i] = scale * src[i];
        } else {
          for (int64_t i = 0; i < n; ++i) dst[i] += scale * src[i];
        }
      }
    }
  });
}

// grad_branch = weight * grad_y; returns <grad_y, branch>, per block in T, the blocks in double.
template <typename T>
double backward_flat(const MultiresShape& s, const T* branch, T weight, const T* grad_y, T* grad_branch) {
  const int64_t total = flat_numel(s), blocks = (total + kFlatBlock - 1) / kFlatBlock;
  double dot = 0.0;
  parallel_accumulate<double>(blocks, 1, &dot, [&](int64_t begin, int64_t end, double* acc) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t i0 = block * kFlatBlock, n = std::min(kFlatBlock, total - i0);
      acc[0] += static_cast<double>(scale_and_dot(grad_y + i0, branch + i0, weight, n, grad_branch + i0));
    }
  }, 4);
  return dot;
}

}  // namespace

template <typename T>
void multires_sum_forward_cpu(const MultiresShape& s, const std::vector<MultiresBranch>& layout,
                              const std::vector<const T*>& branches, const T* weights, T* y, Strides5 ys) {
  if (std::all_of(layout.begin(), layout.end(), [&](const MultiresBranch& b) { return flat(s, b, ys); })) {
    forward_flat(s, branches, weights, y);
    return;
  }
  const std::vector<BranchTaps> taps = all_taps(s, layout);
  if (!branches.empty() && channels_innermost(s, layout, ys)) {
    forward_channels_innermost(s, layout, taps, branches, weights, y, ys);
    return;
  }
  std::vector<WPhases<T>> phases;
  for (const auto& b : layout) phases.push_back(w_phases<T>(b.w, s.out_w));
  const int64_t rows = s.batch * s.channels * s.out_t * s.out_h, Wo = s.out_w;
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<T> buffer(static_cast<size_t>(Wo));
    std::vector<T> padded(static_cast<size_t>(Wo + 2));  // linear: a branch's row mixed along (t, h), padded
    RowCursor at(begin, s.channels, s.out_t, s.out_h);
    for (int64_t row = begin; row < end; ++row, at.next()) {
      const int64_t n = at.n, c = at.c, ot = at.t, oh = at.h;
      T* dst = y + n * ys.n + c * ys.c + ot * ys.t + oh * ys.h;
      T* acc = ys.w == 1 ? dst : buffer.data();  // a unit-stride output row accumulates in place
      std::fill(acc, acc + Wo, T(0));
      for (size_t k = 0; k < branches.size(); ++k) {
        const MultiresBranch& b = layout[k];
        const BranchTaps& tk = taps[k];
        const T* base = branches[k] + n * b.strides.n + c * b.strides.c;
        const int64_t sw = b.strides.w, f = Wo / b.w;
        // up to 2 x 2 input rows (t, h) contribute to this output row
        const int64_t ts[2] = {tk.t.first[ot], tk.t.second[ot]}, hs[2] = {tk.h.first[oh], tk.h.second[oh]};
        const double tw[2] = {tk.t.w_first[ot], tk.t.w_second[ot]}, hw[2] = {tk.h.w_first[oh], tk.h.w_second[oh]};
        // linear along w and f > 1: the rows are mixed first (in + 2 elements), then upsampled once
        const bool mix = s.linear && f > 1;
        T* mixed = padded.data() + 1;
        if (mix) std::fill(mixed, mixed + b.w, T(0));
        for (int dt = 0; dt < 2; ++dt) {
          for (int dh = 0; dh < 2; ++dh) {
            const double row_weight = tw[dt] * hw[dh];
            if (row_weight == 0.0) continue;
            const T scale = static_cast<T>(row_weight) * weights[k];
            const T* src = base + ts[dt] * b.strides.t + hs[dh] * b.strides.h;
            T* into = mix ? mixed : acc;
            if (sw == 1) {
              add_upsampled_row(into, src, scale, b.w, mix ? 1 : f);
            } else if (mix || f == 1) {
              for (int64_t i = 0; i < b.w; ++i) into[i] += scale * src[i * sw];
            } else {
              for (int64_t ow = 0; ow < Wo; ++ow) acc[ow] += scale * src[tk.w.first[ow] * sw];
            }
          }
        }
        if (mix) {
          padded[0] = mixed[0];
          padded[b.w + 1] = mixed[b.w - 1];
          add_linear_upsampled_row(acc, padded.data(), phases[k], b.w);
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
  const int64_t Wo = s.out_w;
  for (size_t k = 0; k < branches.size(); ++k) {
    const MultiresBranch& b = layout[k];
    const Strides5& gs = grad_strides[k];
    if (flat(s, b, gys) && gs.n == gys.n && gs.c == gys.c && gs.t == gys.t && gs.h == gys.h && gs.w == gys.w) {
      grad_weights[k] = static_cast<T>(backward_flat(s, branches[k], weights[k], grad_y, grad_branches[k]));
      continue;  // each product once, as the reference: no regrouping to undo for infinities
    }
    const AxisGather gt = axis_gather(taps[k].t, b.t), gh = axis_gather(taps[k].h, b.h);
    const WPhases<T> phases = w_phases<T>(b.w, Wo);
    const int64_t f = Wo / b.w;
    const bool unit = gys.w == 1 && b.strides.w == 1 && gs.w == 1;
    const T wk = weights[k];
    const int64_t rows = s.batch * s.channels * b.t * b.h;
    double dot = 0.0;
    // grad_weights[k] = <grad_y, P_k b_k> = <P_k^T grad_y, b_k>: the gathered gradient G serves both.
    parallel_accumulate<double>(rows, 1, &dot, [&](int64_t begin, int64_t end, double* acc) {
      std::vector<T> gathered(static_cast<size_t>(b.w)), out_row(static_cast<size_t>(Wo)),
          padded(static_cast<size_t>(b.w + 2)), src_row(static_cast<size_t>(b.w)), dst_row(static_cast<size_t>(b.w));
      RowCursor at(begin, s.channels, b.t, b.h);
      for (int64_t row = begin; row < end; ++row, at.next()) {
        const int64_t n = at.n, c = at.c, t = at.t, h = at.h;
        std::fill(gathered.begin(), gathered.end(), T(0));
        // Nearest on unit-stride rows: each contributing output row is summed down by f straight into
        // `gathered`. Linear, or strided rows: the rows are mixed at the output width first, then transposed
        // along w once.
        const bool mix = s.linear || gys.w != 1;
        if (mix) std::fill(out_row.begin(), out_row.end(), T(0));
        for (int64_t it = gt.begin[t]; it < gt.begin[t + 1]; ++it) {
          for (int64_t ih = gh.begin[h]; ih < gh.begin[h + 1]; ++ih) {
            const T row_weight = static_cast<T>(gt.weight[it] * gh.weight[ih]);
            const T* g = grad_y + n * gys.n + c * gys.c + gt.out_index[it] * gys.t + gh.out_index[ih] * gys.h;
            if (!mix) {
              add_downsampled_row(gathered.data(), g, row_weight, b.w, f);
            } else {
              for (int64_t ow = 0; ow < Wo; ++ow) out_row[ow] += row_weight * g[ow * gys.w];
            }
          }
        }
        if (mix && s.linear && f > 1) {
          add_linear_downsampled_row(gathered.data(), out_row.data(), phases, b.w, padded.data());
        } else if (mix) {
          add_downsampled_row(gathered.data(), out_row.data(), T(1), b.w, f);
        }
        const T* src = branches[k] + n * b.strides.n + c * b.strides.c + t * b.strides.t + h * b.strides.h;
        T* dst = grad_branches[k] + n * gs.n + c * gs.c + t * gs.t + h * gs.h;
        if (unit) {
          acc[0] += static_cast<double>(scale_and_dot(gathered.data(), src, wk, b.w, dst));
        } else {  // strided (channels-last): through unit-stride copies
          for (int64_t w = 0; w < b.w; ++w) src_row[w] = src[w * b.strides.w];
          acc[0] += static_cast<double>(scale_and_dot(gathered.data(), src_row.data(), wk, b.w, dst_row.data()));
          for (int64_t w = 0; w < b.w; ++w) dst[w * gs.w] = dst_row[w];
        }
      }
    });
    if (!std::isfinite(dot)) dot = weight_grad_by_reader(s, b, taps[k], branches[k], grad_y, gys);
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
