// CPU kernels of pool2d. Channels-first tensors are split by planes across threads (a plane's windows
// overlap, so its gradient is one thread's), channels-last ones by output pixels forward and by images
// backward. The loops (pool2d_loops.inc) are compiled for AVX2+FMA and for the baseline target, chosen at
// run time (cpu_isa.h).
#include "pool2d.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/cpu_isa.h"

namespace pyaccel_nas {
namespace {

// Elements per parallel task: below this a parallel region costs more than it saves.
constexpr int64_t kGrain = 1 << 14;

#if PYACCEL_NAS_X86_AVX2
PYACCEL_NAS_AVX2_BEGIN
namespace pool_avx2 {
#define SIMD_FMA_PS(a, b, c) ((a) * (b) + (c))  // (unused: pooling multiplies nothing it adds)
#define SIMD_FMA_PD(a, b, c) ((a) * (b) + (c))
#include "../common/simd.inc"
#include "pool2d_loops.inc"
#undef SIMD_FMA_PS
#undef SIMD_FMA_PD
}  // namespace pool_avx2
PYACCEL_NAS_AVX2_END
#endif

namespace pool_base {
#define SIMD_FMA_PS(a, b, c) ((a) * (b) + (c))  // (unused: pooling multiplies nothing it adds)
#define SIMD_FMA_PD(a, b, c) ((a) * (b) + (c))
#include "../common/simd.inc"
#include "pool2d_loops.inc"
#undef SIMD_FMA_PS
#undef SIMD_FMA_PD
}  // namespace pool_base

template <typename T>
struct Loops {
  decltype(&pool_base::forward_planes<T>) forward_planes;
  decltype(&pool_base::backward_planes<T>) backward_planes;
  decltype(&pool_base::forward_pixels<T>) forward_pixels;
  decltype(&pool_base::backward_pixels<T>) backward_pixels;
};

template <typename T>
Loops<T> loops() {
#if PYACCEL_NAS_X86_AVX2
  if (use_avx2()) {
    return {&pool_avx2::forward_planes<T>, &pool_avx2::backward_planes<T>, &pool_avx2::forward_pixels<T>,
            &pool_avx2::backward_pixels<T>};
  }
#endif
  return {&pool_base::forward_planes<T>, &pool_base::backward_planes<T>, &pool_base::forward_pixels<T>,
          &pool_base::backward_pixels<T>};
}

int64_t grain(int64_t elements_per_item) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, elements_per_item)); }

}  // namespace

template <typename T>
void pool2d_forward_cpu(const PoolShape& s, const T* x, T* y) {
  const Loops<T> k = loops<T>();
  const int64_t plane = s.in_h * s.in_w;
  if (s.channels_last) {
    const int64_t pixels = s.batch * s.out_h * s.out_w;
    at::parallel_for(0, pixels, grain(s.channels * s.kernel_h * s.kernel_w),
                     [&](int64_t b, int64_t e) { k.forward_pixels(s, x, y, b, e); });
  } else {
    at::parallel_for(0, s.batch * s.channels, grain(plane), [&](int64_t b, int64_t e) { k.forward_planes(s, x, y, b, e); });
  }
}

template <typename T>
void pool2d_backward_cpu(const PoolShape& s, const T* grad_y, int64_t grad_y_image_stride, const T* x, T* grad_x) {
  const Loops<T> k = loops<T>();
  const int64_t plane = s.in_h * s.in_w;
  if (s.channels_last) {
    at::parallel_for(0, s.batch, grain(plane * s.channels),
                     [&](int64_t b, int64_t e) { k.backward_pixels(s, grad_y, x, grad_x, b, e); });
  } else {
    at::parallel_for(0, s.batch * s.channels, grain(plane),
                     [&](int64_t b, int64_t e) { k.backward_planes(s, grad_y, grad_y_image_stride, x, grad_x, b, e); });
  }
}

template void pool2d_forward_cpu<float>(const PoolShape&, const float*, float*);
template void pool2d_forward_cpu<double>(const PoolShape&, const double*, double*);
template void pool2d_backward_cpu<float>(const PoolShape&, const float*, int64_t, const float*, float*);
template void pool2d_backward_cpu<double>(const PoolShape&, const double*, int64_t, const double*, double*);

}  // namespace pyaccel_nas
