// Boundary validation shared by every jagged op: offsets, shapes, dtypes.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace torchrec_ascend {

// Checks that `offsets` is a 1-D int32/int64 CPU-readable tensor that starts at 0, never
// decreases and ends at `total`; returns it as int64 values on the host. `op` and `name`
// appear in error messages so a user can tell which argument of which op was wrong.
std::vector<int64_t> checked_offsets(
    const at::Tensor& offsets, int64_t total, const char* op, const char* name);

// Checks that every sequence fits under `max_seq_len`.
void check_max_len(
    const std::vector<int64_t>& offsets, int64_t max_seq_len, const char* op);

// Checks `t` has `dim` dimensions and, where `sizes[i] >= 0`, that size.
void check_shape(
    const at::Tensor& t,
    const std::vector<int64_t>& sizes,
    const char* op,
    const char* name);

// Returns an optional jagged side tensor (timestamps, num_targets) as contiguous int64
// values of the expected length, or an empty vector when the tensor is absent.
std::vector<int64_t> checked_int_vector(
    const c10::optional<at::Tensor>& t, int64_t expected_len, const char* op,
    const char* name);

}  // namespace torchrec_ascend
