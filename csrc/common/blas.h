// Matrix products through the BLAS that torch's CPU library links (MKL's sgemm_ / dgemm_ in torch's x86
// wheels), for the pointwise parts of the CPU kernels once they are wide enough for it to pay: that BLAS
// has kernels for the CPU's widest vectors (AVX-512, AMX-era cores), which the kernels' own AVX2 GEMM
// (common/gemm.inc) does not use. Where torch exports no BLAS the symbols stay unresolved (weak) and the
// kernels keep their own GEMM.
#pragma once

#include <cstdint>

namespace pyaccel_nas {

// Whether a BLAS is linked and PYACCEL_NAS_CPU_BASELINE does not ask for the kernels' own code only.
bool blas_available();

// Row-major C (M x N, leading dimension ldc) = op(A) op(B) + beta * C, where op(A) is A (M x K, lda) or, with
// trans_a, the transpose of A stored K x M; op(B) is B (K x N, ldb) or, with trans_b, the transpose of B stored
// N x K. Requires blas_available() and every size and leading dimension below 2^31 (the BLAS's int).
void blas_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void blas_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
               const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

}  // namespace pyaccel_nas
