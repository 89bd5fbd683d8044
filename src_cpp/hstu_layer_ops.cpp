// Fused pieces of the HSTU layer around the attention, as single ops:
//
//   hstu_uvqk:        silu(LayerNorm(x) @ W)                       (the UVQK projection)
//   hstu_output_gate: u * LayerNorm(a) [* dropout_mask]             (the gated output)
//
// Each op saves only its inputs and the LayerNorm statistics; the normalised rows and the
// pre-activation are recomputed in the backward, so a layer keeps O(L x D) fewer
// activations alive. They are written with ATen calls only and registered as
// CompositeExplicitAutograd, so the same kernel serves CPU, CUDA and NPU tensors.
// Limitation: the element-wise parts are separate ATen kernels (no single-pass CPU loop yet),
// so the gain is memory, not speed.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "jagged_checks.h"

namespace torchrec_ascend {

namespace {

void check_rows(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 2, op, ": ", name, " must be 2-D (L, D), got shape ", t.sizes());
  TORCH_CHECK(t.is_floating_point(), op, ": ", name, " must be floating point, got ",
              t.scalar_type());
}

// LayerNorm statistics of reduced-precision rows are computed and kept in float32.
at::ScalarType stats_type(const at::Tensor& x) {
  const auto t = x.scalar_type();
  return (t == at::kBFloat16 || t == at::kHalf) ? at::kFloat : t;
}

// Returns (normalised rows in x's dtype, mean (L, 1), rstd (L, 1)).
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm(const at::Tensor& x, double eps) {
  auto [normed, mean, rstd] =
      at::native_layer_norm(x.to(stats_type(x)), {x.size(1)}, {}, {}, eps);
  return {normed.to(x.scalar_type()), mean.reshape({-1, 1}), rstd.reshape({-1, 1})};
}

// (x - mean) * rstd with the saved statistics.
at::Tensor normalise(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd) {
  return ((x.to(mean.scalar_type()) - mean) * rstd).to(x.scalar_type());
}

at::Tensor layer_norm_input_grad(const at::Tensor& grad_normed, const at::Tensor& x,
                                 const at::Tensor& mean, const at::Tensor& rstd) {
  const auto t = stats_type(x);
  const at::Tensor grad = std::get<0>(at::native_layer_norm_backward(
      grad_normed.to(t), x.to(t), {x.size(1)}, mean, rstd, {}, {}, {true, false, false}));
  return grad.to(x.scalar_type());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> hstu_uvqk(const at::Tensor& x,
                                                         const at::Tensor& weight,
                                                         double eps) {
  constexpr const char* op = "hstu_uvqk";
  check_rows(x, op, "x");
  check_shape(weight, {x.size(1), -1}, op, "weight");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight dtype ",
              weight.scalar_type(), " != x dtype ", x.scalar_type());
  auto [normed, mean, rstd] = layer_norm(x, eps);
  return {at::silu(at::mm(normed, weight)), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor> hstu_uvqk_backward(const at::Tensor& grad_out,
                                                      const at::Tensor& x,
                                                      const at::Tensor& weight,
                                                      const at::Tensor& mean,
                                                      const at::Tensor& rstd) {
  const at::Tensor normed = normalise(x, mean, rstd);
  const at::Tensor grad_pre = at::silu_backward(grad_out, at::mm(normed, weight));
  const at::Tensor grad_weight = at::mm(normed.t(), grad_pre);
  const at::Tensor grad_x = layer_norm_input_grad(at::mm(grad_pre, weight.t()), x, mean, rstd);
  return {grad_x, grad_weight};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> hstu_output_gate(
    const at::Tensor& attn, const at::Tensor& u, double eps,
    const c10::optional<at::Tensor>& dropout_mask) {
  constexpr const char* op = "hstu_output_gate";
  check_rows(attn, op, "attn");
  check_shape(u, {attn.size(0), attn.size(1)}, op, "u");
  if (dropout_mask.has_value() && dropout_mask->defined()) {
    check_shape(*dropout_mask, {attn.size(0), attn.size(1)}, op, "dropout_mask");
  }
  auto [normed, mean, rstd] = layer_norm(attn, eps);
  at::Tensor out = u * normed;
  if (dropout_mask.has_value() && dropout_mask->defined()) {
    out = out * *dropout_mask;
  }
  return {out, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor> hstu_output_gate_backward(
    const at::Tensor& grad_out, const at::Tensor& attn, const at::Tensor& u,
    const at::Tensor& mean, const at::Tensor& rstd,
    const c10::optional<at::Tensor>& dropout_mask) {
  at::Tensor grad = grad_out;
  if (dropout_mask.has_value() && dropout_mask->defined()) {
    grad = grad * *dropout_mask;
  }
  const at::Tensor normed = normalise(attn, mean, rstd);
  const at::Tensor grad_u = grad * normed;
  const at::Tensor grad_attn = layer_norm_input_grad(grad * u, attn, mean, rstd);
  return {grad_attn, grad_u};
}

}  // namespace torchrec_ascend

TORCH_LIBRARY_FRAGMENT(torchrec_ascend, m) {
  m.def("hstu_uvqk(Tensor x, Tensor weight, float eps) -> (Tensor, Tensor, Tensor)");
  m.def(
      "hstu_uvqk_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor mean, "
      "Tensor rstd) -> (Tensor, Tensor)");
  m.def(
      "hstu_output_gate(Tensor attn, Tensor u, float eps, Tensor? dropout_mask) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "hstu_output_gate_backward(Tensor grad_out, Tensor attn, Tensor u, Tensor mean, "
      "Tensor rstd, Tensor? dropout_mask) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torchrec_ascend, CompositeExplicitAutograd, m) {
  m.impl("hstu_uvqk", &torchrec_ascend::hstu_uvqk);
  m.impl("hstu_uvqk_backward", &torchrec_ascend::hstu_uvqk_backward);
  m.impl("hstu_output_gate", &torchrec_ascend::hstu_output_gate);
  m.impl("hstu_output_gate_backward", &torchrec_ascend::hstu_output_gate_backward);
}
