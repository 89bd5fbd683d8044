// Jagged HSTU pointwise attention with relative attention bias (RAB), CPU kernels.
//
// For sequence b of length n, head h, query i and key j:
//   z_ij = alpha * <q_i, k_j> + pos_bias[pid(i) - pid(j) + N - 1]
//          + ts_bias[bucket(query_ts_i - ts_j)]
//   a_ij = valid(i, j) ? silu(z_ij) / N : 0,   out_i = sum_j a_ij v_j
// with N = max_seq_len (a static normaliser, so outputs do not depend on the batch).
// valid(i, j): causal (j <= i) inside the history; the last num_targets[b] tokens are
// candidates that see the history and themselves only; the first contextual_len tokens
// see the whole (non-candidate) history and are seen by everyone.
// pid(i) = min(i, n - num_targets[b]) so every candidate sits at the same position.
// dtypes: float32, float64 and bfloat16 (bf16 storage, fp32 accumulation and GEMM output).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace torchrec_ascend {

at::Tensor hstu_attention_forward_cpu(
    const at::Tensor& q,
    const at::Tensor& k,
    const at::Tensor& v,
    const at::Tensor& offsets,
    int64_t max_seq_len,
    double alpha,
    const c10::optional<at::Tensor>& pos_bias,
    const c10::optional<at::Tensor>& ts_bias,
    const c10::optional<at::Tensor>& timestamps,
    const c10::optional<at::Tensor>& query_timestamps,
    const c10::optional<at::Tensor>& num_targets,
    int64_t contextual_len,
    double ts_bucket_divisor);

// Returns (grad_q, grad_k, grad_v, grad_pos_bias, grad_ts_bias); a bias gradient is an
// empty tensor when that bias is absent.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
hstu_attention_backward_cpu(
    const at::Tensor& grad_out,
    const at::Tensor& q,
    const at::Tensor& k,
    const at::Tensor& v,
    const at::Tensor& offsets,
    int64_t max_seq_len,
    double alpha,
    const c10::optional<at::Tensor>& pos_bias,
    const c10::optional<at::Tensor>& ts_bias,
    const c10::optional<at::Tensor>& timestamps,
    const c10::optional<at::Tensor>& query_timestamps,
    const c10::optional<at::Tensor>& num_targets,
    int64_t contextual_len,
    double ts_bucket_divisor);

}  // namespace torchrec_ascend
