// Jagged utilities the HSTU model needs: jagged <-> padded, concat/split of two jagged
// tensors sequence by sequence, and selecting whole sequences.
//
// values are (L, *feature) rows and offsets (B+1,) int32/int64. Each op builds a row index
// on the host from the validated offsets and moves data with one ATen gather/scatter, so
// the same kernel serves every device (registered as CompositeExplicitAutograd). Output
// offsets keep the dtype of the input offsets.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "jagged_checks.h"

namespace torchrec_ascend {

namespace {

at::Tensor index_tensor(const std::vector<int64_t>& index, const at::Tensor& like) {
  return at::tensor(index, at::TensorOptions().dtype(at::kLong)).to(like.device());
}

at::Tensor offsets_tensor(const std::vector<int64_t>& offsets, const at::Tensor& like) {
  return at::tensor(offsets, at::TensorOptions().dtype(at::kLong))
      .to(like.device(), like.scalar_type());
}

void check_values(const at::Tensor& values, const char* op, const char* name) {
  TORCH_CHECK(values.dim() >= 1, op, ": ", name, " must be (L, *feature), got shape ",
              values.sizes());
}

// Flattened padded slot b * max_len + t of every jagged row.
std::vector<int64_t> padded_slots(const std::vector<int64_t>& offsets, int64_t max_len,
                                  const char* op) {
  std::vector<int64_t> slots;
  slots.reserve(offsets.back());
  for (size_t b = 0; b + 1 < offsets.size(); ++b) {
    const int64_t len = offsets[b + 1] - offsets[b];
    TORCH_CHECK(len <= max_len, op, ": sequence ", b, " has length ", len, " > max_len=",
                max_len);
    for (int64_t t = 0; t < len; ++t) slots.push_back(static_cast<int64_t>(b) * max_len + t);
  }
  return slots;
}

std::vector<int64_t> feature_shape(const at::Tensor& t, int64_t skip) {
  return std::vector<int64_t>(t.sizes().begin() + skip, t.sizes().end());
}

}  // namespace

at::Tensor jagged_to_padded(const at::Tensor& values, const at::Tensor& offsets,
                            int64_t max_len, double padding_value) {
  constexpr const char* op = "jagged_to_padded";
  check_values(values, op, "values");
  TORCH_CHECK(max_len >= 0, op, ": max_len must be >= 0, got ", max_len);
  const auto off = checked_offsets(offsets, values.size(0), op, "offsets");
  const int64_t batch = static_cast<int64_t>(off.size()) - 1;
  const at::Tensor slots = index_tensor(padded_slots(off, max_len, op), values);
  std::vector<int64_t> shape = {batch * max_len};
  for (int64_t s : feature_shape(values, 1)) shape.push_back(s);
  at::Tensor padded = at::full(shape, padding_value, values.options());
  padded.index_copy_(0, slots, values);
  shape[0] = max_len;
  shape.insert(shape.begin(), batch);
  return padded.view(shape);
}

at::Tensor padded_to_jagged(const at::Tensor& padded, const at::Tensor& offsets) {
  constexpr const char* op = "padded_to_jagged";
  TORCH_CHECK(padded.dim() >= 2, op, ": padded must be (B, N, *feature), got shape ",
              padded.sizes());
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 1, op,
              ": offsets must be 1-D (B+1,), got shape ", offsets.sizes());
  const int64_t total = offsets[-1].item<int64_t>();
  const auto off = checked_offsets(offsets, total, op, "offsets");
  TORCH_CHECK(static_cast<int64_t>(off.size()) - 1 == padded.size(0), op, ": offsets has ",
              off.size() - 1, " sequences but padded has ", padded.size(0));
  const int64_t max_len = padded.size(1);
  const at::Tensor slots = index_tensor(padded_slots(off, max_len, op), padded);
  return padded.flatten(0, 1).index_select(0, slots);
}

std::tuple<at::Tensor, at::Tensor> jagged_concat(const at::Tensor& a, const at::Tensor& a_offsets,
                                                 const at::Tensor& b,
                                                 const at::Tensor& b_offsets) {
  constexpr const char* op = "jagged_concat";
  check_values(a, op, "a");
  check_values(b, op, "b");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": a and b must share a dtype, got ",
              a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(feature_shape(a, 1) == feature_shape(b, 1), op,
              ": a and b must share the feature shape, got ", a.sizes(), " and ", b.sizes());
  const auto oa = checked_offsets(a_offsets, a.size(0), op, "a_offsets");
  const auto ob = checked_offsets(b_offsets, b.size(0), op, "b_offsets");
  TORCH_CHECK(oa.size() == ob.size(), op, ": a_offsets has ", oa.size() - 1,
              " sequences, b_offsets ", ob.size() - 1);
  // Rows of cat([a, b]) in output order: sequence by sequence, a's rows then b's.
  std::vector<int64_t> order, out_offsets = {0};
  order.reserve(a.size(0) + b.size(0));
  for (size_t s = 0; s + 1 < oa.size(); ++s) {
    for (int64_t r = oa[s]; r < oa[s + 1]; ++r) order.push_back(r);
    for (int64_t r = ob[s]; r < ob[s + 1]; ++r) order.push_back(a.size(0) + r);
    out_offsets.push_back(static_cast<int64_t>(order.size()));
  }
  const at::Tensor values = at::cat({a, b}).index_select(0, index_tensor(order, a));
  return {values, offsets_tensor(out_offsets, a_offsets)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> jagged_split(
    const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& first_lengths) {
  constexpr const char* op = "jagged_split";
  check_values(values, op, "values");
  const auto off = checked_offsets(offsets, values.size(0), op, "offsets");
  const int64_t batch = static_cast<int64_t>(off.size()) - 1;
  const auto first = checked_int_vector(first_lengths, batch, op, "first_lengths");
  TORCH_CHECK(!first.empty() || batch == 0, op, ": first_lengths is required");
  std::vector<int64_t> head, tail, head_offsets = {0}, tail_offsets = {0};
  for (int64_t s = 0; s < batch; ++s) {
    const int64_t len = off[s + 1] - off[s];
    TORCH_CHECK(first[s] >= 0 && first[s] <= len, op, ": first_lengths[", s, "]=", first[s],
                " must be in [0, ", len, "]");
    for (int64_t t = 0; t < len; ++t) (t < first[s] ? head : tail).push_back(off[s] + t);
    head_offsets.push_back(static_cast<int64_t>(head.size()));
    tail_offsets.push_back(static_cast<int64_t>(tail.size()));
  }
  return {values.index_select(0, index_tensor(head, values)), offsets_tensor(head_offsets, offsets),
          values.index_select(0, index_tensor(tail, values)), offsets_tensor(tail_offsets, offsets)};
}

namespace {

// Rows of the selected sequences, in selection order.
std::vector<int64_t> selected_rows(const std::vector<int64_t>& off, const at::Tensor& indices,
                                   std::vector<int64_t>* out_offsets, const char* op) {
  const int64_t batch = static_cast<int64_t>(off.size()) - 1;
  TORCH_CHECK(indices.dim() == 1, op, ": indices must be 1-D, got shape ", indices.sizes());
  const auto idx = checked_int_vector(indices, indices.numel(), op, "indices");
  std::vector<int64_t> rows;
  if (out_offsets) out_offsets->assign(1, 0);
  for (size_t i = 0; i < idx.size(); ++i) {
    TORCH_CHECK(idx[i] >= 0 && idx[i] < batch, op, ": indices[", i, "]=", idx[i],
                " out of range for ", batch, " sequences");
    for (int64_t r = off[idx[i]]; r < off[idx[i] + 1]; ++r) rows.push_back(r);
    if (out_offsets) out_offsets->push_back(static_cast<int64_t>(rows.size()));
  }
  return rows;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> jagged_index_select(const at::Tensor& values,
                                                       const at::Tensor& offsets,
                                                       const at::Tensor& indices) {
  constexpr const char* op = "jagged_index_select";
  check_values(values, op, "values");
  const auto off = checked_offsets(offsets, values.size(0), op, "offsets");
  std::vector<int64_t> out_offsets;
  const auto rows = selected_rows(off, indices, &out_offsets, op);
  return {values.index_select(0, index_tensor(rows, values)),
          offsets_tensor(out_offsets, offsets)};
}

// Gradient of jagged_index_select: selected rows summed back (a sequence may be picked
// more than once).
at::Tensor jagged_index_select_backward(const at::Tensor& grad, const at::Tensor& offsets,
                                        const at::Tensor& indices, int64_t num_rows) {
  constexpr const char* op = "jagged_index_select_backward";
  const auto off = checked_offsets(offsets, num_rows, op, "offsets");
  const auto rows = selected_rows(off, indices, nullptr, op);
  std::vector<int64_t> shape = {num_rows};
  for (int64_t s : feature_shape(grad, 1)) shape.push_back(s);
  return at::zeros(shape, grad.options()).index_add_(0, index_tensor(rows, grad), grad);
}

}  // namespace torchrec_ascend

TORCH_LIBRARY_FRAGMENT(torchrec_ascend, m) {
  m.def("jagged_to_padded(Tensor values, Tensor offsets, int max_len, float padding_value) "
        "-> Tensor");
  m.def("padded_to_jagged(Tensor padded, Tensor offsets) -> Tensor");
  m.def("jagged_concat(Tensor a, Tensor a_offsets, Tensor b, Tensor b_offsets) "
        "-> (Tensor, Tensor)");
  m.def("jagged_split(Tensor values, Tensor offsets, Tensor first_lengths) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("jagged_index_select(Tensor values, Tensor offsets, Tensor indices) "
        "-> (Tensor, Tensor)");
  m.def("jagged_index_select_backward(Tensor grad, Tensor offsets, Tensor indices, "
        "int num_rows) -> Tensor");
}

TORCH_LIBRARY_IMPL(torchrec_ascend, CompositeExplicitAutograd, m) {
  m.impl("jagged_to_padded", &torchrec_ascend::jagged_to_padded);
  m.impl("padded_to_jagged", &torchrec_ascend::padded_to_jagged);
  m.impl("jagged_concat", &torchrec_ascend::jagged_concat);
  m.impl("jagged_split", &torchrec_ascend::jagged_split);
  m.impl("jagged_index_select", &torchrec_ascend::jagged_index_select);
  m.impl("jagged_index_select_backward", &torchrec_ascend::jagged_index_select_backward);
}
