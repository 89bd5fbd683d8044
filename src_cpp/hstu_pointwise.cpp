#include "hstu_pointwise.h"

#include <cmath>
#include <cstring>

namespace torchrec_ascend {

namespace {

// exp(x) by range reduction x = n ln2 + r and a degree-6 polynomial on |r| <= ln2 / 2
// (Cephes single-precision coefficients), relative error ~1e-7. Written branch-free so
// the loops below vectorise.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // Adding 1.5 * 2^23 rounds to the nearest integer without a floor() call.
  const float fn = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// Limitation: GCC 12 vectorises these loops only in the x86-64-v4 (AVX-512) clone; the
// v3 and baseline clones stay scalar (its if-conversion gives up on the loop), so CPUs
// without AVX-512 run the element-wise part several times slower.

}  // namespace

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void silu_weights(const float* s, const float* bias, const uint8_t* mask, float* out,
                  int64_t n, float inv_n) {
#pragma omp simd
  for (int64_t e = 0; e < n; ++e) {
    const float z = s[e] + bias[e];
    const float a = z * sigmoid_approx(z) * inv_n;
    out[e] = a * static_cast<float>(mask[e]);
  }
}

void silu_weights(const double* s, const double* bias, const uint8_t* mask, double* out,
                  int64_t n, double inv_n) {
  for (int64_t e = 0; e < n; ++e) {
    const double z = s[e] + bias[e];
    out[e] = mask[e] ? z / (1.0 + std::exp(-z)) * inv_n : 0.0;
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void silu_weights_backward(float* z, const float* bias, const uint8_t* mask, float* dz,
                           int64_t n, float inv_n) {
#pragma omp simd
  for (int64_t e = 0; e < n; ++e) {
    const float x = z[e] + bias[e];
    const float sg = sigmoid_approx(x);
    const float a = x * sg * inv_n;
    const float g = dz[e] * sg * (1.0f + x * (1.0f - sg)) * inv_n;
    const float m = static_cast<float>(mask[e]);
    z[e] = a * m;
    dz[e] = g * m;
  }
}

void silu_weights_backward(double* z, const double* bias, const uint8_t* mask, double* dz,
                           int64_t n, double inv_n) {
  for (int64_t e = 0; e < n; ++e) {
    const double x = z[e] + bias[e];
    const double sg = 1.0 / (1.0 + std::exp(-x));
    const double a = x * sg * inv_n;
    const double g = dz[e] * sg * (1.0 + x * (1.0 - sg)) * inv_n;
    z[e] = mask[e] ? a : 0.0;
    dz[e] = mask[e] ? g : 0.0;
  }
}

}  // namespace torchrec_ascend
