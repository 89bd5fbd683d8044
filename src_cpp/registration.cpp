// Operator schemas (namespace torchrec_ascend) and their CPU kernels.
#include <torch/library.h>

#include "hstu_attention.h"

TORCH_LIBRARY(torchrec_ascend, m) {
  m.def(
      "hstu_attention(Tensor q, Tensor k, Tensor v, Tensor offsets, int max_seq_len, "
      "float alpha, Tensor? pos_bias, Tensor? ts_bias, Tensor? timestamps, "
      "Tensor? query_timestamps, Tensor? num_targets, int contextual_len, "
      "float ts_bucket_divisor) -> Tensor");
  m.def(
      "hstu_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, "
      "Tensor offsets, int max_seq_len, float alpha, Tensor? pos_bias, Tensor? ts_bias, "
      "Tensor? timestamps, Tensor? query_timestamps, Tensor? num_targets, "
      "int contextual_len, float ts_bucket_divisor) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torchrec_ascend, CPU, m) {
  m.impl("hstu_attention", &torchrec_ascend::hstu_attention_forward_cpu);
  m.impl("hstu_attention_backward", &torchrec_ascend::hstu_attention_backward_cpu);
}
