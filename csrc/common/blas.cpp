#include "blas.h"

#include <cstdlib>
#include <cstring>

// The Fortran BLAS interface (LP64: 32-bit integers), as MKL and OpenBLAS export it. Weak: resolved from
// torch's library when it exports them, null otherwise.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

namespace pyaccel_nas {
namespace {

// BLAS is column-major: a row-major M x N product C = op(A) op(B) is the column-major N x M product
// C^T = op(B)^T op(A)^T, where each row-major operand already is the column-major storage of its transpose,
// so the transpose flags carry over unchanged.
template <typename T, typename Fn>
void column_major_call(Fn fn, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
                       const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const char tb = trans_b ? 'T' : 'N', ta = trans_a ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int ib = static_cast<int>(ldb), ia = static_cast<int>(lda), ic = static_cast<int>(ldc);
  const T one = T(1);
  fn(&tb, &ta, &m, &n, &k, &one, B, &ib, A, &ia, &beta, C, &ic);
}

}  // namespace

bool blas_available() {
  static const bool ok = [] {
    const char* env = std::getenv("PYACCEL_NAS_CPU_BASELINE");
    if (env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0) return false;
    return sgemm_ != nullptr && dgemm_ != nullptr;
  }();
  return ok;
}

void blas_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  column_major_call(sgemm_, trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

void blas_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
               const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  column_major_call(dgemm_, trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace pyaccel_nas
