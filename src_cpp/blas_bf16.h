// bf16 x bf16 -> fp32 GEMM for the mixed-precision CPU kernels.
//
// libtorch_cpu bundles MKL and exports `cblas_gemm_bf16bf16f32`, which runs on the CPU's
// matrix/dot-product units (AMX, AVX512-BF16) where present. It is bound weakly, like the
// sgemm/dgemm of blas.cpp; without it a plain loop keeps the op correct.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

namespace torchrec_ascend {

// C (m x n, fp32) = alpha * op(A) op(B) + beta * C; A and B are row-major bf16.
void gemm_rm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const c10::BFloat16* a, int64_t lda, const c10::BFloat16* b, int64_t ldb,
                  float beta, float* c, int64_t ldc);

// True when MKL's bf16 GEMM was found in the running process.
bool have_bf16_blas();

}  // namespace torchrec_ascend
