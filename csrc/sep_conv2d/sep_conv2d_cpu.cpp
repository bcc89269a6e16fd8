// CPU kernels of sep_conv2d, on dense NCHW tensors.
//
// Forward, per (image, band of output rows), parallel over both: for each channel, the activated input rows
// of the band are copied into a small zero-padded plane split by column phase (so a stride-2 tap reads a
// unit-stride run), the depthwise result of the band is computed into a [C][rows * W_out] buffer with
// vectors along the width, and the pointwise 1x1 is a small GEMM (C_out x C) x (C x pixels) whose output
// rows are contiguous runs of the NCHW output planes. No (N, C, H_out, W_out) intermediate is allocated.
// Small planes (< 64 output pixels) are processed several whole images per unit, their pixels side by side
// in one GEMM.
//
// Backward, per image or unit of small images (parallel over units in fixed chunks, weight gradients summed
// per chunk and then in chunk order, in double: deterministic for a given thread count): the depthwise
// result of the unit is recomputed, grad_pw += grad_y D^T and grad_D = pw^T grad_y are two small GEMMs, and the depthwise
// backward runs one channel at a time on the same phase-split planes, kept from the recomputation where they fit
// (grad_dw as dot products, grad_x as a transposed convolution into a padded plane, then written once with the
// ReLU mask).
//
// A 1x1 depthwise kernel without padding (the cell-input preprocessing: ReLU -> 1x1 conv, run with a depthwise
// part of ones) takes a pointwise path: its depthwise part only scales each channel, so the input is read
// straight into the GEMM's [C][pixels] buffer, and the backward writes grad_x in one pass over each plane.
//
// Output rows narrower than two vectors (8x8 and smaller planes; see use_channels_inner) take a
// channels-innermost path instead: each image is transposed to [pixel][channel] (register-tile transposes
// straight into a zero-padded image), the depthwise part and its backward run over vectors of channels, the
// pointwise GEMMs take the [pixel][channel] results as transposed operands (on the BLAS; gemm.inc's need
// them transposed to [channel][pixel] first), and grad_x goes back to NCHW through the same transposes.
//
// The kernel bodies (sep_conv2d_kernels.inc, on the vectors and GEMMs of common/simd.inc and gemm.inc) are
// compiled twice: for AVX2+FMA and for the compiler's baseline target; the AVX2 version is used when the
// CPU has it (checked once at run time), so a wheel built on any x86-64 runs everywhere.
// PYACCEL_NAS_CPU_BASELINE=1 in the environment forces the baseline.
#include "sep_conv2d.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/blas.h"
#include "../common/cpu_isa.h"
#include "../common/parallel.h"

#if PYACCEL_NAS_X86_AVX2
#include <immintrin.h>
#endif

namespace pyaccel_nas {
namespace {

// Whether the pointwise path runs: the depthwise part is a per-channel scale (see sep_conv2d_kernels.inc) and
// an image has 64 output pixels or more. Below, its loops over each (image, channel) plane cost more than the
// channels-innermost path's transposes (fwd+bwd, interleaved: 96x72x2x2 -> 36 358 us against 195, 96x72x4x4
// -> 18 439 against 381, 96x18x6x6 412 against 372; from 8x8 it wins: 96x36x8x8 -> 9 561 against 751).
bool is_pointwise(const SepConv2dShape& s) {
  return s.kernel_h == 1 && s.kernel_w == 1 && s.pad_h == 0 && s.pad_w == 0 && s.out_h * s.out_w >= 64;
}

// Geometry of the phase-split plane buffers (see build_plane in sep_conv2d_kernels.inc).
struct PlaneGeom {
  int64_t span_h, span_w;  // dilated kernel extent
  int64_t WoP;             // W_out rounded up to whole vectors
  int64_t RP;              // row pitch of one phase
  int64_t rows;            // rows held (the most a band needs)
  int64_t qsize;           // rows * RP: one phase
  int64_t plane_size;      // stride_w * qsize
  const int64_t* off;      // kernel_w offsets of the column taps inside the buffer
  int64_t kept_planes;     // backward: planes kept from the depthwise recomputation (see keep_planes)
};

PlaneGeom plane_geom(const SepConv2dShape& s, int64_t rows, int64_t lanes, std::vector<int64_t>& off) {
  PlaneGeom g{};
  g.span_h = s.dilation_h * (s.kernel_h - 1) + 1;
  g.span_w = s.dilation_w * (s.kernel_w - 1) + 1;
  g.WoP = (s.out_w + lanes - 1) / lanes * lanes;
  const int64_t Wp = s.in_w + 2 * s.pad_w;
  const int64_t Wq = (Wp + s.stride_w - 1) / s.stride_w;
  g.RP = std::max(Wq, g.WoP + (g.span_w - 1) / s.stride_w);
  g.rows = rows;
  g.qsize = rows * g.RP;
  g.plane_size = s.stride_w * g.qsize;
  off.resize(static_cast<size_t>(s.kernel_w));
  for (int64_t kj = 0; kj < s.kernel_w; ++kj) {
    const int64_t o = kj * s.dilation_w;
    off[kj] = (o % s.stride_w) * g.qsize + o / s.stride_w;
  }
  g.off = off.data();
  return g;
}

// Geometry of the channels-innermost path, used for narrow output planes (see use_channels_inner): one
// image's activated input, zero-padded, as [padded_h * padded_w][pitch] with the channels innermost (pitch:
// C rounded up to whole vectors), so every vector op runs over channels instead of a few columns of one
// plane. pitch == 0: the path is not used.
struct InnerGeom {
  int64_t pitch, padded_h, padded_w;
  int64_t image;            // padded_h * padded_w * pitch
  const int64_t* tap_off;   // element offset of each kernel tap from the tap (0, 0) of an output pixel
  const int64_t* pixel_at;  // element offset of input pixel hi * in_w + wi inside the padded image
};

// Workspace elements in front of the depthwise result: the phase-split plane, or the channels-innermost
// image and the depthwise result of out_pixels pixels in that layout.
int64_t forward_scratch(const PlaneGeom& g, const InnerGeom& ig, int64_t out_pixels) {
  return ig.pitch ? ig.image + out_pixels * ig.pitch : g.plane_size;
}

// The same for the backward of `group` images: the plane, its gradient, one padded row-block of the
// result's gradient and the kept planes; or each image's channels-innermost input and depthwise result, one
// image's input gradient, the depthwise weight-gradient accumulators and the unit's grad_pw (C_out rows of pitch).
int64_t backward_scratch(const SepConv2dShape& s, const PlaneGeom& g, const InnerGeom& ig, int64_t group) {
  if (!ig.pitch) return (2 + g.kept_planes) * g.plane_size + s.out_h * g.WoP;
  const int64_t results = group * s.out_h * s.out_w, taps = s.kernel_h * s.kernel_w;
  return (group + 1) * ig.image + (results + taps + s.out_channels) * ig.pitch;
}

// The phase-split backward builds each (channel, image) plane of its unit twice, for the depthwise result
// it recomputes and for that part's backward, unless it keeps them: it does when all of them fit in 256 KiB
// (with the unit's result and its gradient they stay within L2), and builds them again otherwise.
int64_t keep_planes(const SepConv2dShape& s, const PlaneGeom& g, int64_t group, int64_t element_size) {
  const int64_t planes = s.channels * group;
  return planes * g.plane_size * element_size <= (int64_t(256) << 10) ? planes : 0;
}

}  // namespace

#if PYACCEL_NAS_X86_AVX2
PYACCEL_NAS_AVX2_BEGIN
namespace sepconv_avx2 {
#define SIMD_FMA_PS(a, b, c) ((VT<float>::V)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define SIMD_FMA_PD(a, b, c) ((VT<double>::V)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#include "../common/simd.inc"
#include "../common/gemm.inc"
#include "sep_conv2d_kernels.inc"
#undef SIMD_FMA_PS
#undef SIMD_FMA_PD
}  // namespace sepconv_avx2
PYACCEL_NAS_AVX2_END
#endif

namespace sepconv_base {
#define SIMD_FMA_PS(a, b, c) ((a) * (b) + (c))
#define SIMD_FMA_PD(a, b, c) ((a) * (b) + (c))
#include "../common/simd.inc"
#include "../common/gemm.inc"
#include "sep_conv2d_kernels.inc"
#undef SIMD_FMA_PS
#undef SIMD_FMA_PD
}  // namespace sepconv_base

namespace {

template <typename T>
struct Kernels {
  decltype(&sepconv_base::forward_unit<T>) forward_unit;
  decltype(&sepconv_base::backward_images<T>) backward_images;
};

template <typename T>
Kernels<T> kernels() {
#if PYACCEL_NAS_X86_AVX2
  if (use_avx2()) return {&sepconv_avx2::forward_unit<T>, &sepconv_avx2::backward_images<T>};
#endif
  return {&sepconv_base::forward_unit<T>, &sepconv_base::backward_images<T>};
}

// The channels-innermost path for output rows narrower than two vectors (the 8x8 and 4x4 planes of a r4
// proxy's deeper cells, 16x16 at stride 2): along a row there are too few columns to fill vectors, and the
// per-row and per-plane bookkeeping of the phase-split path costs more than the arithmetic. From two
// vectors up the phase-split path is faster (measured: rows of 16-39 pixels took 1.2-1.8x longer
// channels-innermost; benchmarks/NOTES.md, sep_conv2d version 3).
bool use_channels_inner(const SepConv2dShape& s, int64_t lanes) { return !is_pointwise(s) && s.out_w < 2 * lanes; }

InnerGeom inner_geom(const SepConv2dShape& s, int64_t lanes, std::vector<int64_t>& tap_off,
                     std::vector<int64_t>& pixel_at) {
  if (!use_channels_inner(s, lanes)) return InnerGeom{};
  InnerGeom ig{};
  ig.pitch = (s.channels + lanes - 1) / lanes * lanes;
  ig.padded_h = s.in_h + 2 * s.pad_h;
  ig.padded_w = s.in_w + 2 * s.pad_w;
  ig.image = ig.padded_h * ig.padded_w * ig.pitch;
  tap_off.resize(static_cast<size_t>(s.kernel_h * s.kernel_w));
  for (int64_t ki = 0; ki < s.kernel_h; ++ki)
    for (int64_t kj = 0; kj < s.kernel_w; ++kj)
      tap_off[ki * s.kernel_w + kj] = (ki * s.dilation_h * ig.padded_w + kj * s.dilation_w) * ig.pitch;
  ig.tap_off = tap_off.data();
  pixel_at.resize(static_cast<size_t>(s.in_h * s.in_w));
  for (int64_t hi = 0; hi < s.in_h; ++hi)
    for (int64_t wi = 0; wi < s.in_w; ++wi)
      pixel_at[hi * s.in_w + wi] = ((hi + s.pad_h) * ig.padded_w + wi + s.pad_w) * ig.pitch;
  ig.pixel_at = pixel_at.data();
  return ig;
}

// The depthwise filters as [taps][pitch] (zero past C), the layout the channels-innermost path reads.
template <typename T>
std::vector<T> filters_by_tap(const SepConv2dShape& s, const InnerGeom& ig, const T* dw) {
  const int64_t taps = s.kernel_h * s.kernel_w;
  std::vector<T> out(static_cast<size_t>(taps * ig.pitch), T(0));
  for (int64_t c = 0; c < s.channels; ++c)
    for (int64_t t = 0; t < taps; ++t) out[t * ig.pitch + c] = dw[c * taps + t];
  return out;
}

// Zeroed scratch memory starting on a cache line (malloc only promises 16 bytes), so that 32-byte vector
// accesses at whole-vector offsets never straddle two lines.
template <typename T>
class Workspace {
 public:
  explicit Workspace(int64_t size) : storage_(static_cast<size_t>(size) + kLine / sizeof(T), T(0)) {}
  T* data() {
    const auto p = reinterpret_cast<std::uintptr_t>(storage_.data());
    return reinterpret_cast<T*>((p + kLine - 1) & ~std::uintptr_t(kLine - 1));
  }

 private:
  static constexpr std::uintptr_t kLine = 64;
  std::vector<T> storage_;
};

// Images per work unit. An image with few output pixels makes a pointwise GEMM of mostly vector tails and
// call overhead, so several whole images share one: until it has 64 pixels on the phase-split path and 256 on
// the channels-innermost one, whose per-unit costs (BLAS calls, the unit's weight-gradient sums) are larger
// (fwd+bwd, 2 threads: 144x8x8 4.63 -> 4.17 ms, 96x6x6 1.86 -> 1.58, 64x8x8 1.64 -> 1.47, no shape slower;
// benchmarks/NOTES.md, session 15). At least 8 units, so small batches still spread over the threads. Depends
// on the shape only, so results do not depend on the thread count.
int64_t images_per_unit(const SepConv2dShape& s, int64_t lanes) {
  const int64_t gemm_pixels = use_channels_inner(s, lanes) ? 256 : 64;
  const int64_t P = std::max<int64_t>(1, s.out_h * s.out_w);
  const int64_t most = std::max<int64_t>(1, s.batch / 8);
  return std::max<int64_t>(1, std::min<int64_t>(most, gemm_pixels / P));
}


}  // namespace

template <typename T>
void sep_conv2d_forward_cpu(const SepConv2dShape& s, const T* x, const T* dw, const T* pw, const T* bias, T* y) {
  const Kernels<T> k = kernels<T>();
  const int64_t lanes = 32 / static_cast<int64_t>(sizeof(T));
  const int64_t C = s.channels, Co = s.out_channels, Ho = s.out_h, Wo = s.out_w;
  const int64_t group = images_per_unit(s, lanes);
  // One image: bands of output rows, so the depthwise buffer of a band (C x rows x W_out) stays within
  // ~256 KiB (L2) and there are enough (image, band) units to keep every thread busy. Several images: whole
  // planes (they are small).
  int64_t band = Ho;
  if (group == 1) {
    const int64_t row_bytes = C * Wo * static_cast<int64_t>(sizeof(T));
    band = std::max<int64_t>(1, std::min<int64_t>(Ho, (int64_t(256) << 10) / std::max<int64_t>(1, row_bytes)));
    const int64_t threads = std::max(1, at::get_num_threads());
    while (band > 1 && s.batch * ((Ho + band - 1) / band) < 4 * threads) band = (band + 1) / 2;
  }
  const int64_t bands = (Ho + band - 1) / band, groups = (s.batch + group - 1) / group;
  std::vector<int64_t> off, tap_off, pixel_at;
  const int64_t rows = (band - 1) * s.stride_h + s.dilation_h * (s.kernel_h - 1) + 1;
  const PlaneGeom g = plane_geom(s, rows, lanes, off);
  const InnerGeom ig = inner_geom(s, lanes, tap_off, pixel_at);
  const std::vector<T> dw_t = ig.pitch ? filters_by_tap(s, ig, dw) : std::vector<T>();
  const int64_t pixels = group * band * Wo;
  const int64_t ws_size = forward_scratch(g, ig, pixels) + C * pixels + lanes + (group > 1 ? Co * pixels : 0);
  at::parallel_for(0, groups * bands, 1, [&](int64_t begin, int64_t end) {
    Workspace<T> ws(ws_size);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n0 = (u / bands) * group, n1 = std::min(s.batch, n0 + group), b = u % bands;
      const int64_t ho0 = b * band, ho1 = std::min(Ho, ho0 + band);
      k.forward_unit(s, g, ig, n0, n1, ho0, ho1, x, dw, dw_t.data(), pw, bias, y, ws.data());
    }
  });
}

template <typename T>
void sep_conv2d_backward_cpu(const SepConv2dShape& s, const T* grad_y, const T* x, const T* dw, const T* pw,
                             T* grad_x, T* grad_dw, T* grad_pw, T* grad_bias) {
  const Kernels<T> k = kernels<T>();
  const int64_t lanes = 32 / static_cast<int64_t>(sizeof(T));
  const int64_t C = s.channels, Co = s.out_channels, Ho = s.out_h, Wo = s.out_w, taps = s.kernel_h * s.kernel_w;
  std::vector<int64_t> off, tap_off, pixel_at;
  const int64_t rows = (Ho - 1) * s.stride_h + s.dilation_h * (s.kernel_h - 1) + 1;
  PlaneGeom g = plane_geom(s, rows, lanes, off);
  const InnerGeom ig = inner_geom(s, lanes, tap_off, pixel_at);
  const std::vector<T> dw_t = ig.pitch ? filters_by_tap(s, ig, dw) : std::vector<T>();
  const int64_t group = images_per_unit(s, lanes), groups = (s.batch + group - 1) / group;
  if (!ig.pitch && !is_pointwise(s)) g.kept_planes = keep_planes(s, g, group, sizeof(T));
  const int64_t pixels = group * Ho * Wo;
  const int64_t ws_size =
      backward_scratch(s, g, ig, group) + 2 * C * pixels + lanes + (group > 1 ? Co * pixels : 0);
  // pointwise weights transposed to (C, C_out), for grad_D = pw^T grad_y
  std::vector<T> pw_t(static_cast<size_t>(C * Co));
  for (int64_t co = 0; co < Co; ++co)
    for (int64_t c = 0; c < C; ++c) pw_t[c * Co + co] = pw[co * C + c];

  // Weight gradients: one accumulator vector [grad_pw (Co*C) | grad_dw (C*taps) | grad_bias (Co)], summed in
  // T within a unit of images and in double across units and chunks.
  const int64_t pw_size = Co * C, dw_size = C * taps, width = pw_size + dw_size + Co;
  std::vector<double> total(static_cast<size_t>(width));
  parallel_accumulate<double>(groups, width, total.data(), [&](int64_t first, int64_t last, double* acc) {
    Workspace<T> ws(ws_size);
    std::vector<T> unit_acc(static_cast<size_t>(width));
    for (int64_t u = first; u < last; ++u) {
      std::fill(unit_acc.begin(), unit_acc.end(), T(0));
      const int64_t n0 = u * group, n1 = std::min(s.batch, n0 + group);
      k.backward_images(s, g, ig, n0, n1, grad_y, x, dw, dw_t.data(), pw_t.data(), grad_x, unit_acc.data(), unit_acc.data() + pw_size,
                        unit_acc.data() + pw_size + dw_size, ws.data());
      for (int64_t i = 0; i < width; ++i) acc[i] += static_cast<double>(unit_acc[i]);
    }
  });
  for (int64_t i = 0; i < pw_size; ++i) grad_pw[i] = static_cast<T>(total[i]);
  for (int64_t i = 0; i < dw_size; ++i) grad_dw[i] = static_cast<T>(total[pw_size + i]);
  for (int64_t co = 0; co < Co; ++co) grad_bias[co] = static_cast<T>(total[pw_size + dw_size + co]);
}

template void sep_conv2d_forward_cpu<float>(const SepConv2dShape&, const float*, const float*, const float*,
                                            const float*, float*);
template void sep_conv2d_forward_cpu<double>(const SepConv2dShape&, const double*, const double*, const double*,
                                             const double*, double*);
template void sep_conv2d_backward_cpu<float>(const SepConv2dShape&, const float*, const float*, const float*,
                                             const float*, float*, float*, float*, float*);
template void sep_conv2d_backward_cpu<double>(const SepConv2dShape&, const double*, const double*, const double*,
                                              const double*, double*, double*, double*, double*);

}  // namespace pyaccel_nas
