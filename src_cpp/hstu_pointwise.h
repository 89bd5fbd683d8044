// Element-wise SiLU attention weights of the HSTU kernels, forward and backward.
//
// A tile holds, for a block of queries and the keys they may see, the raw scores
// s = alpha * q.k, the relative attention bias and a validity mask. The weights are
//   a = valid ? silu(s + bias) / N : 0.
// fp32 tiles use a vectorisable exp and are compiled for several x86 ISA levels (picked at
// load time), since this loop, not the GEMMs, bounds the kernel on CPUs.
#pragma once

#include <cstdint>

namespace torchrec_ascend {

// out[e] = mask[e] ? silu(s[e] + bias[e]) * inv_n : 0 for e < n (out may alias s).
void silu_weights(const float* s, const float* bias, const uint8_t* mask, float* out,
                  int64_t n, float inv_n);
void silu_weights(const double* s, const double* bias, const uint8_t* mask, double* out,
                  int64_t n, double inv_n);

// On entry z holds s and dz holds dL/da; on exit z holds a and dz holds dL/d(s + bias).
void silu_weights_backward(float* z, const float* bias, const uint8_t* mask, float* dz,
                           int64_t n, float inv_n);
void silu_weights_backward(double* z, const double* bias, const uint8_t* mask, double* dz,
                           int64_t n, double inv_n);

}  // namespace torchrec_ascend
