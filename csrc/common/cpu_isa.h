// Run-time choice between CPU kernels compiled for AVX2+FMA and for the compiler's baseline target.
//
// Kernel bodies are compiled twice (inside `#pragma GCC target("avx2,fma")` and without), so that a wheel
// built for baseline x86-64 still runs everywhere, and uses AVX2 where the CPU has it.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define PYACCEL_NAS_X86_AVX2 1
#else
#define PYACCEL_NAS_X86_AVX2 0
#endif

// Functions defined between these two (inside #if PYACCEL_NAS_X86_AVX2) are compiled for AVX2+FMA.
#if defined(__clang__)
#define PYACCEL_NAS_AVX2_BEGIN \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define PYACCEL_NAS_AVX2_END _Pragma("clang attribute pop")
#else
#define PYACCEL_NAS_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define PYACCEL_NAS_AVX2_END _Pragma("GCC pop_options")
#endif

namespace pyaccel_nas {

// True when this build has AVX2 kernels, the CPU has AVX2 and FMA, and PYACCEL_NAS_CPU_BASELINE is unset
// (or "0"); PYACCEL_NAS_CPU_BASELINE=1 forces the baseline kernels. Checked once per process.
bool use_avx2();

}  // namespace pyaccel_nas
