// Row-major GEMM for the CPU kernels.
//
// ATen's own cpublas entry points are not exported from libtorch_cpu, but the BLAS it
// bundles is (MKL on x86-64 wheels). We bind the Fortran symbols weakly: when the
// loaded torch exports them we call them, otherwise (e.g. a torch build with another
// BLAS) a plain blocked loop keeps the op correct.
#pragma once

#include <cstdint>

namespace torchrec_ascend {

// C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C, all row-major with
// leading dimensions lda/ldb/ldc in elements.
void gemm_rm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
             float* c, int64_t ldc);
void gemm_rm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
             const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
             double* c, int64_t ldc);

// True when an optimised BLAS was found in the running process.
bool have_fast_blas();

}  // namespace torchrec_ascend
