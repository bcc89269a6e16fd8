#include "cpu_isa.h"

#include <cstdlib>
#include <cstring>

namespace pyaccel_nas {

bool use_avx2() {
#if PYACCEL_NAS_X86_AVX2
  static const bool ok = [] {
    const char* env = std::getenv("PYACCEL_NAS_CPU_BASELINE");
    if (env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

}  // namespace pyaccel_nas
