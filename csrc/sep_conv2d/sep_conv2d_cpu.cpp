// CPU kernels of sep_conv2d. Work is done one output row (n, ho) at a time: the depthwise result of the
// row lives in a small [W_out][C] buffer and feeds the pointwise product straight away, so no
// (N, C, H_out, W_out) intermediate is ever allocated, in the forward or in the backward (which recomputes
// the row instead of loading it).
#include "sep_conv2d.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../common/parallel.h"

namespace pyaccel_nas {
namespace {

// Depthwise weights transposed to [kh*kw][C] so the innermost loop (over channels) is unit-stride.
template <typename T>
std::vector<T> depthwise_by_tap(const SepConv2dShape& s, const T* dw) {
  const int64_t C = s.channels, taps = s.kernel_h * s.kernel_w;
  std::vector<T> out(static_cast<size_t>(taps * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < taps; ++k) out[k * C + c] = dw[c * taps + k];
  return out;
}

// Calls visit(tap, wo, hi, wi) for every in-bounds (tap, output column) of output row `ho`, where
// (hi, wi) is the input pixel the tap reads.
template <typename Visit>
inline void for_each_tap(const SepConv2dShape& s, int64_t ho, const Visit& visit) {
  for (int64_t ki = 0; ki < s.kernel_h; ++ki) {
    const int64_t hi = ho * s.stride_h - s.pad_h + ki * s.dilation_h;
    if (hi < 0 || hi >= s.in_h) continue;
    for (int64_t kj = 0; kj < s.kernel_w; ++kj) {
      const int64_t col_offset = kj * s.dilation_w - s.pad_w;
      // output columns whose input column wo*stride + col_offset lies in [0, W)
      const int64_t wo_begin = col_offset >= 0 ? 0 : (-col_offset + s.stride_w - 1) / s.stride_w;
      const int64_t last_in = s.in_w - 1 - col_offset;
      const int64_t wo_end = last_in < 0 ? 0 : std::min(s.out_w, last_in / s.stride_w + 1);
      for (int64_t wo = wo_begin; wo < wo_end; ++wo) {
        visit(ki * s.kernel_w + kj, wo, hi, wo * s.stride_w + col_offset);
      }
    }
  }
}

// d[wo][c] = sum over taps of act(x[n, c, hi, wi]) * dw[c, tap] for one output row.
template <typename T>
void depthwise_row(const SepConv2dShape& s, const T* x_img, Strides4 xs, const T* dw_by_tap, int64_t ho, T* d) {
  const int64_t C = s.channels, xc = xs.c;
  std::fill(d, d + s.out_w * C, T(0));
  for_each_tap(s, ho, [&](int64_t tap, int64_t wo, int64_t hi, int64_t wi) {
    const T* xp = x_img + hi * xs.h + wi * xs.w;
    const T* wk = dw_by_tap + tap * C;
    T* dp = d + wo * C;
    if (s.pre_relu) {
      for (int64_t c = 0; c < C; ++c) dp[c] += std::max(xp[c * xc], T(0)) * wk[c];
    } else {
      for (int64_t c = 0; c < C; ++c) dp[c] += xp[c * xc] * wk[c];
    }
  });
}

}  // namespace

template <typename T>
void sep_conv2d_forward_cpu(const SepConv2dShape& s, const T* x, Strides4 xs, const T* dw, const T* pw, const T* bias,
                            T* y, Strides4 ys) {
  const int64_t C = s.channels, Co = s.out_channels, Wo = s.out_w;
  const std::vector<T> dw_by_tap = depthwise_by_tap(s, dw);
  // pointwise weights as [C][C_out]: the innermost loop runs over output channels
  std::vector<T> pw_t(static_cast<size_t>(C * Co));
  for (int64_t co = 0; co < Co; ++co)
    for (int64_t c = 0; c < C; ++c) pw_t[c * Co + co] = pw[co * C + c];

  at::parallel_for(0, s.batch * s.out_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> d(static_cast<size_t>(Wo * C)), out(static_cast<size_t>(Wo * Co));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.out_h, ho = row % s.out_h;
      depthwise_row(s, x + n * xs.n, xs, dw_by_tap.data(), ho, d.data());
      for (int64_t wo = 0; wo < Wo; ++wo) {
        T* o = out.data() + wo * Co;
        for (int64_t co = 0; co < Co; ++co) o[co] = bias ? bias[co] : T(0);
        for (int64_t c = 0; c < C; ++c) {
          const T a = d[wo * C + c];
          const T* wrow = pw_t.data() + c * Co;
          for (int64_t co = 0; co < Co; ++co) o[co] += a * wrow[co];
        }
      }
      T* y_row = y + n * ys.n + ho * ys.h;
      for (int64_t wo = 0; wo < Wo; ++wo)
        for (int64_t co = 0; co < Co; ++co) y_row[co * ys.c + wo * ys.w] = out[wo * Co + co];
    }
  });
}

template <typename T>
void sep_conv2d_backward_cpu(const SepConv2dShape& s, const T* grad_y, Strides4 gys, const T* x, Strides4 xs,
                             const T* dw, const T* pw, T* grad_x, Strides4 gxs, T* grad_dw, T* grad_pw,
                             T* grad_bias) {
  const int64_t C = s.channels, Co = s.out_channels, Wo = s.out_w, taps = s.kernel_h * s.kernel_w;
  const std::vector<T> dw_by_tap = depthwise_by_tap(s, dw);
  // Weight gradients: one accumulator vector [grad_pw (Co*C) | grad_dw by tap (taps*C) | grad_bias (Co)],
  // summed in T within an image and in double across images and chunks.
  const int64_t pw_size = Co * C, dw_size = taps * C, width = pw_size + dw_size + Co;
  std::vector<double> total(static_cast<size_t>(width));

  parallel_accumulate<double>(s.batch, width, total.data(), [&](int64_t n_begin, int64_t n_end, double* acc) {
    std::vector<T> d(static_cast<size_t>(Wo * C)), gd(static_cast<size_t>(Wo * C)), gy(static_cast<size_t>(Wo * Co));
    std::vector<T> image_acc(static_cast<size_t>(width));
    T* acc_pw = image_acc.data();
    T* acc_dw = acc_pw + pw_size;
    T* acc_bias = acc_dw + dw_size;
    for (int64_t n = n_begin; n < n_end; ++n) {
      std::fill(image_acc.begin(), image_acc.end(), T(0));
      const T* x_img = x + n * xs.n;
      T* gx_img = grad_x + n * gxs.n;
      for (int64_t ho = 0; ho < s.out_h; ++ho) {
        depthwise_row(s, x_img, xs, dw_by_tap.data(), ho, d.data());
        const T* gy_row = grad_y + n * gys.n + ho * gys.h;
        for (int64_t wo = 0; wo < Wo; ++wo)
          for (int64_t co = 0; co < Co; ++co) gy[wo * Co + co] = gy_row[co * gys.c + wo * gys.w];

        // pointwise: grad_pw += gy^T d, grad_bias += sum gy, gd = gy pw
        std::fill(gd.begin(), gd.end(), T(0));
        for (int64_t wo = 0; wo < Wo; ++wo) {
          const T* drow = d.data() + wo * C;
          T* gdrow = gd.data() + wo * C;
          for (int64_t co = 0; co < Co; ++co) {
            const T g = gy[wo * Co + co];
            acc_bias[co] += g;
            T* apw = acc_pw + co * C;
            const T* pwrow = pw + co * C;
            for (int64_t c = 0; c < C; ++c) {
              apw[c] += g * drow[c];
              gdrow[c] += g * pwrow[c];
            }
          }
        }

        // depthwise: grad_dw += gd * act(x), grad_x += gd * dw * act'(x)
        for_each_tap(s, ho, [&](int64_t tap, int64_t wo, int64_t hi, int64_t wi) {
          const T* xp = x_img + hi * xs.h + wi * xs.w;
          T* gxp = gx_img + hi * gxs.h + wi * gxs.w;
          const T* wk = dw_by_tap.data() + tap * C;
          const T* gdrow = gd.data() + wo * C;
          T* adw = acc_dw + tap * C;
          const int64_t xc = xs.c, gxc = gxs.c;
          if (s.pre_relu) {
            for (int64_t c = 0; c < C; ++c) {
              const T v = xp[c * xc];
              if (v > T(0)) {
                adw[c] += gdrow[c] * v;
                gxp[c * gxc] += gdrow[c] * wk[c];
              }
            }
          } else {
            for (int64_t c = 0; c < C; ++c) {
              adw[c] += gdrow[c] * xp[c * xc];
              gxp[c * gxc] += gdrow[c] * wk[c];
            }
          }
        });
      }
      for (int64_t i = 0; i < width; ++i) acc[i] += static_cast<double>(image_acc[i]);
    }
  });

  for (int64_t i = 0; i < pw_size; ++i) grad_pw[i] = static_cast<T>(total[i]);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t tap = 0; tap < taps; ++tap) grad_dw[c * taps + tap] = static_cast<T>(total[pw_size + tap * C + c]);
  for (int64_t co = 0; co < Co; ++co) grad_bias[co] = static_cast<T>(total[pw_size + dw_size + co]);
}

template void sep_conv2d_forward_cpu<float>(const SepConv2dShape&, const float*, Strides4, const float*, const float*,
                                            const float*, float*, Strides4);
template void sep_conv2d_forward_cpu<double>(const SepConv2dShape&, const double*, Strides4, const double*,
                                             const double*, const double*, double*, Strides4);
template void sep_conv2d_backward_cpu<float>(const SepConv2dShape&, const float*, Strides4, const float*, Strides4,
                                             const float*, const float*, float*, Strides4, float*, float*, float*);
template void sep_conv2d_backward_cpu<double>(const SepConv2dShape&, const double*, Strides4, const double*, Strides4,
                                              const double*, const double*, double*, Strides4, double*, double*,
                                              double*);

}  // namespace pyaccel_nas
