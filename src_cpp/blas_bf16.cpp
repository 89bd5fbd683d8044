#include "blas_bf16.h"

#include <climits>

extern "C" {
// MKL CBLAS (LP64). Layout 101 = row-major; transpose 111 = no, 112 = yes.
void cblas_gemm_bf16bf16f32(int layout, int transa, int transb, int m, int n, int k,
                            float alpha, const uint16_t* a, int lda, const uint16_t* b,
                            int ldb, float beta, float* c, int ldc) __attribute__((weak));
}

namespace torchrec_ascend {

namespace {

void gemm_bf16_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                         float alpha, const c10::BFloat16* a, int64_t lda,
                         const c10::BFloat16* b, int64_t ldb, float beta, float* c,
                         int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* crow = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.f;
      for (int64_t p = 0; p < k; ++p) {
        const float av = static_cast<float>(trans_a ? a[p * lda + i] : a[i * lda + p]);
        const float bv = static_cast<float>(trans_b ? b[j * ldb + p] : b[p * ldb + j]);
        acc += av * bv;
      }
      crow[j] = alpha * acc + (beta == 0.f ? 0.f : beta * crow[j]);
    }
  }
}

bool fits_int(int64_t x) { return x <= INT_MAX; }

}  // namespace

void gemm_rm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const c10::BFloat16* a, int64_t lda, const c10::BFloat16* b, int64_t ldb,
                  float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const bool fast = cblas_gemm_bf16bf16f32 != nullptr && k > 0 && fits_int(m) &&
                    fits_int(n) && fits_int(k) && fits_int(lda) && fits_int(ldb) &&
                    fits_int(ldc);
  if (!fast) {
    gemm_bf16_reference(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  cblas_gemm_bf16bf16f32(101, trans_a ? 112 : 111, trans_b ? 112 : 111, static_cast<int>(m),
                         static_cast<int>(n), static_cast<int>(k), alpha,
                         reinterpret_cast<const uint16_t*>(a), static_cast<int>(lda),
                         reinterpret_cast<const uint16_t*>(b), static_cast<int>(ldb), beta, c,
                         static_cast<int>(ldc));
}

bool have_bf16_blas() { return cblas_gemm_bf16bf16f32 != nullptr; }

}  // namespace torchrec_ascend
