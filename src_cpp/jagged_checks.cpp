#include "jagged_checks.h"

#include <sstream>

namespace torchrec_ascend {

namespace {
std::string shape_str(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}
}  // namespace

std::vector<int64_t> checked_offsets(
    const at::Tensor& offsets, int64_t total, const char* op, const char* name) {
  TORCH_CHECK(
      offsets.dim() == 1,
      op, ": ", name, " must be 1-D (B+1,), got shape ", shape_str(offsets));
  TORCH_CHECK(
      offsets.scalar_type() == at::kLong || offsets.scalar_type() == at::kInt,
      op, ": ", name, " must be int32 or int64, got ", offsets.scalar_type());
  TORCH_CHECK(
      offsets.numel() >= 1,
      op, ": ", name, " must have at least one element (B+1 with B >= 0)");
  at::Tensor host = offsets.to(at::kCPU, at::kLong).contiguous();
  const int64_t* p = host.data_ptr<int64_t>();
  const int64_t n = host.numel();
  TORCH_CHECK(p[0] == 0, op, ": ", name, "[0] must be 0, got ", p[0]);
  for (int64_t b = 0; b + 1 < n; ++b) {
    TORCH_CHECK(
        p[b + 1] >= p[b],
        op, ": ", name, " must be non-decreasing, but ", name, "[", b + 1, "]=", p[b + 1],
        " < ", name, "[", b, "]=", p[b]);
  }
  TORCH_CHECK(
      p[n - 1] == total,
      op, ": ", name, "[-1]=", p[n - 1], " must equal the number of jagged rows ", total);
  return std::vector<int64_t>(p, p + n);
}

void check_max_len(
    const std::vector<int64_t>& offsets, int64_t max_seq_len, const char* op) {
  TORCH_CHECK(max_seq_len > 0, op, ": max_seq_len must be positive, got ", max_seq_len);
  for (size_t b = 0; b + 1 < offsets.size(); ++b) {
    const int64_t len = offsets[b + 1] - offsets[b];
    TORCH_CHECK(
        len <= max_seq_len,
        op, ": sequence ", b, " has length ", len, " > max_seq_len=", max_seq_len,
        "; truncate histories to max_seq_len before the op");
  }
}

void check_shape(
    const at::Tensor& t,
    const std::vector<int64_t>& sizes,
    const char* op,
    const char* name) {
  bool ok = t.dim() == static_cast<int64_t>(sizes.size());
  for (size_t i = 0; ok && i < sizes.size(); ++i) {
    ok = sizes[i] < 0 || t.size(i) == sizes[i];
  }
  if (!ok) {
    std::ostringstream want;
    want << "(";
    for (size_t i = 0; i < sizes.size(); ++i) {
      want << (i ? ", " : "");
      if (sizes[i] < 0) {
        want << "*";
      } else {
        want << sizes[i];
      }
    }
    want << ")";
    TORCH_CHECK(
        false, op, ": ", name, " must have shape ", want.str(), ", got ", shape_str(t));
  }
}

std::vector<int64_t> checked_int_vector(
    const c10::optional<at::Tensor>& t, int64_t expected_len, const char* op,
    const char* name) {
  if (!t.has_value() || !t->defined()) {
    return {};
  }
  TORCH_CHECK(
      t->scalar_type() == at::kLong || t->scalar_type() == at::kInt,
      op, ": ", name, " must be int32 or int64, got ", t->scalar_type());
  check_shape(*t, {expected_len}, op, name);
  at::Tensor host = t->to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + expected_len);
}

}  // namespace torchrec_ascend
