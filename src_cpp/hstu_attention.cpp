#include "hstu_attention.h"

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "blas.h"
#include "jagged_checks.h"

namespace torchrec_ascend {

namespace {

constexpr const char* kOp = "hstu_attention";
// Query rows per tile: scratch per task is kBlockQ x (keys seen), linear in the longest
// sequence rather than quadratic.
constexpr int64_t kBlockQ = 64;

// Everything a tile needs to know about one sequence's mask and bias.
struct SequenceView {
  int64_t begin;        // first jagged row
  int64_t len;          // n
  int64_t history_end;  // n - num_targets
  int64_t contextual;   // number of contextual prefix tokens
};

struct AttentionArgs {
  int64_t num_heads, dim_qk, dim_v, max_seq_len;
  double alpha, ts_divisor;
  const void* pos_bias;  // (2N-1,) or null
  const void* ts_bias;   // (num_buckets,) or null
  int64_t num_ts_buckets;
  const int64_t* timestamps;        // (L,) or null
  const int64_t* query_timestamps;  // (L,) or null
};

inline bool is_valid(const SequenceView& s, int64_t i, int64_t j) {
  if (j >= s.history_end) {
    return j == i;  // candidates are seen only by themselves
  }
  if (i < s.contextual || j < s.contextual) {
    return true;  // contextual block: fully connected with the history
  }
  return j <= i;
}

// One past the last key any query in [i0, i1) can see.
inline int64_t key_end(const SequenceView& s, int64_t i0, int64_t i1) {
  int64_t end = std::min(i1, s.len);
  if (i0 < s.contextual) {
    end = std::max(end, s.history_end);
  }
  return end;
}

inline int64_t position_index(const SequenceView& s, int64_t i, int64_t j, int64_t n_max) {
  const int64_t pi = std::min(i, s.history_end);
  const int64_t pj = std::min(j, s.history_end);
  return std::clamp<int64_t>(pi - pj + n_max - 1, 0, 2 * n_max - 2);
}

inline int64_t time_bucket(int64_t delta, double divisor, int64_t num_buckets) {
  const double d = static_cast<double>(delta < 0 ? -delta : delta);
  const int64_t bucket = static_cast<int64_t>(std::floor(std::log(std::max(d, 1.0)) / divisor));
  return std::clamp<int64_t>(bucket, 0, num_buckets - 1);
}

// Fills bias (rows x kend) with the RAB terms and mask (rows x kend) with validity for
// queries [i0, i0 + rows) of sequence s.
template <typename T>
void fill_bias_tile(
    const SequenceView& s, const AttentionArgs& args, int64_t i0, int64_t rows,
    int64_t kend, T* bias, uint8_t* mask) {
  const T* pos = static_cast<const T*>(args.pos_bias);
  const T* tsb = static_cast<const T*>(args.ts_bias);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    T* brow = bias + r * kend;
    uint8_t* mrow = mask + r * kend;
    const int64_t tq = args.query_timestamps ? args.query_timestamps[s.begin + i] : 0;
    for (int64_t j = 0; j < kend; ++j) {
      const bool valid = is_valid(s, i, j);
      mrow[j] = valid;
      T b = 0;
      if (valid) {
        if (pos) {
          b += pos[position_index(s, i, j, args.max_seq_len)];
        }
        if (tsb) {
          b += tsb[time_bucket(
              tq - args.timestamps[s.begin + j], args.ts_divisor, args.num_ts_buckets)];
        }
      }
      brow[j] = b;
    }
  }
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

std::vector<SequenceView> make_views(
    const std::vector<int64_t>& offsets, const std::vector<int64_t>& num_targets,
    int64_t contextual_len) {
  std::vector<SequenceView> views(offsets.size() - 1);
  for (size_t b = 0; b < views.size(); ++b) {
    SequenceView& s = views[b];
    s.begin = offsets[b];
    s.len = offsets[b + 1] - offsets[b];
    s.contextual = std::min(contextual_len, s.len);
    const int64_t targets = num_targets.empty() ? 0 : num_targets[b];
    TORCH_CHECK(
        targets >= 0 && targets <= s.len - s.contextual,
        kOp, ": num_targets[", b, "]=", targets, " must be in [0, ", s.len - s.contextual,
        "] for a sequence of length ", s.len, " with ", s.contextual, " contextual tokens");
    s.history_end = s.len - targets;
  }
  return views;
}

struct Task {
  int64_t seq, part;  // part: query block (forward) or head (backward)
  double cost;
};

// Longest tasks first with dynamic scheduling: a greedy LPT plan that keeps the one long
// sequence of a heavy-tailed batch from finishing last on a single thread.
void sort_by_cost(std::vector<Task>& tasks) {
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) {
    return a.cost > b.cost;
  });
}

struct Inputs {
  at::Tensor q, k, v;
  std::vector<int64_t> offsets, timestamps, query_timestamps, num_targets;
  std::vector<SequenceView> views;
  AttentionArgs args;
};

Inputs prepare(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& offsets, int64_t max_seq_len, double alpha,
    const c10::optional<at::Tensor>& pos_bias, const c10::optional<at::Tensor>& ts_bias,
    const c10::optional<at::Tensor>& timestamps,
    const c10::optional<at::Tensor>& query_timestamps,
    const c10::optional<at::Tensor>& num_targets, int64_t contextual_len,
    double ts_bucket_divisor) {
  TORCH_CHECK(q.dim() == 3, kOp, ": q must be (L, H, D_qk), got shape ", q.sizes());
  const int64_t L = q.size(0), H = q.size(1), Dqk = q.size(2);
  check_shape(k, {L, H, Dqk}, kOp, "k");
  check_shape(v, {L, H, -1}, kOp, "v");
  TORCH_CHECK(
      k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), kOp,
      ": q, k, v must share a dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
      v.scalar_type());
  TORCH_CHECK(contextual_len >= 0, kOp, ": contextual_len must be >= 0");
  TORCH_CHECK(ts_bucket_divisor > 0, kOp, ": ts_bucket_divisor must be positive");

  Inputs in;
  in.q = q.contiguous();
  in.k = k.contiguous();
  in.v = v.contiguous();
  in.offsets = checked_offsets(offsets, L, kOp, "offsets");
  check_max_len(in.offsets, max_seq_len, kOp);
  const int64_t B = static_cast<int64_t>(in.offsets.size()) - 1;
  in.num_targets = checked_int_vector(num_targets, B, kOp, "num_targets");
  in.views = make_views(in.offsets, in.num_targets, contextual_len);

  AttentionArgs& a = in.args;
  a.num_heads = H;
  a.dim_qk = Dqk;
  a.dim_v = v.size(2);
  a.max_seq_len = max_seq_len;
  a.alpha = alpha;
  a.ts_divisor = ts_bucket_divisor;
  a.pos_bias = nullptr;
  a.ts_bias = nullptr;
  a.num_ts_buckets = 0;
  a.timestamps = nullptr;
  a.query_timestamps = nullptr;
  if (pos_bias.has_value() && pos_bias->defined()) {
    check_shape(*pos_bias, {2 * max_seq_len - 1}, kOp, "pos_bias");
    TORCH_CHECK(pos_bias->scalar_type() == q.scalar_type(), kOp, ": pos_bias dtype ",
                pos_bias->scalar_type(), " != q dtype ", q.scalar_type());
  }
  if (ts_bias.has_value() && ts_bias->defined()) {
    TORCH_CHECK(ts_bias->dim() == 1 && ts_bias->numel() >= 1, kOp,
                ": ts_bias must be 1-D (num_buckets,), got shape ", ts_bias->sizes());
    TORCH_CHECK(ts_bias->scalar_type() == q.scalar_type(), kOp, ": ts_bias dtype ",
                ts_bias->scalar_type(), " != q dtype ", q.scalar_type());
    TORCH_CHECK(timestamps.has_value() && timestamps->defined() &&
                    query_timestamps.has_value() && query_timestamps->defined(),
                kOp, ": ts_bias needs timestamps and query_timestamps (L,) x int64");
    in.timestamps = checked_int_vector(timestamps, L, kOp, "timestamps");
    in.query_timestamps = checked_int_vector(query_timestamps, L, kOp, "query_timestamps");
    a.num_ts_buckets = ts_bias->numel();
    a.timestamps = in.timestamps.data();
    a.query_timestamps = in.query_timestamps.data();
  }
  return in;
}

template <typename T>
void forward_kernel(Inputs& in, at::Tensor& out, const T* pos, const T* tsb) {
  AttentionArgs args = in.args;
  args.pos_bias = pos;
  args.ts_bias = tsb;
  const int64_t H = args.num_heads, Dqk = args.dim_qk, Dv = args.dim_v;
  const T* q = in.q.data_ptr<T>();
  const T* k = in.k.data_ptr<T>();
  const T* v = in.v.data_ptr<T>();
  T* o = out.data_ptr<T>();
  const T inv_n = T(1) / static_cast<T>(args.max_seq_len);
  const T alpha = static_cast<T>(args.alpha);

  std::vector<Task> tasks;
  for (int64_t b = 0; b < static_cast<int64_t>(in.views.size()); ++b) {
    const SequenceView& s = in.views[b];
    for (int64_t i0 = 0; i0 < s.len; i0 += kBlockQ) {
      const int64_t rows = std::min(kBlockQ, s.len - i0);
      tasks.push_back({b, i0, double(rows) * double(key_end(s, i0, i0 + rows)) * H});
    }
  }
  sort_by_cost(tasks);

  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel num_threads(at::get_num_threads())
  {
    std::vector<T> bias, scores;
    std::vector<uint8_t> mask;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < num_tasks; ++t) {
      const SequenceView& s = in.views[tasks[t].seq];
      const int64_t i0 = tasks[t].part;
      const int64_t rows = std::min(kBlockQ, s.len - i0);
      const int64_t kend = key_end(s, i0, i0 + rows);
      bias.resize(rows * kend);
      scores.resize(rows * kend);
      mask.resize(rows * kend);
      fill_bias_tile<T>(s, args, i0, rows, kend, bias.data(), mask.data());
      for (int64_t h = 0; h < H; ++h) {
        const T* qb = q + ((s.begin + i0) * H + h) * Dqk;
        const T* kb = k + (s.begin * H + h) * Dqk;
        const T* vb = v + (s.begin * H + h) * Dv;
        T* ob = o + ((s.begin + i0) * H + h) * Dv;
        gemm_rm(false, true, rows, kend, Dqk, alpha, qb, H * Dqk, kb, H * Dqk, T(0),
                   scores.data(), kend);
        for (int64_t e = 0; e < rows * kend; ++e) {
          const T z = scores[e] + bias[e];
          scores[e] = mask[e] ? z * sigmoid(z) * inv_n : T(0);
        }
        gemm_rm(false, false, rows, Dv, kend, T(1), scores.data(), kend, vb, H * Dv,
                   T(0), ob, H * Dv);
      }
    }
  }
}

template <typename T>
void backward_kernel(
    Inputs& in, const at::Tensor& grad_out, at::Tensor& dq, at::Tensor& dk,
    at::Tensor& dv, at::Tensor& dpos, at::Tensor& dts, const T* pos, const T* tsb) {
  AttentionArgs args = in.args;
  args.pos_bias = pos;
  args.ts_bias = tsb;
  const int64_t H = args.num_heads, Dqk = args.dim_qk, Dv = args.dim_v;
  const T* q = in.q.data_ptr<T>();
  const T* k = in.k.data_ptr<T>();
  const T* v = in.v.data_ptr<T>();
  const T* go = grad_out.data_ptr<T>();
  T* gq = dq.data_ptr<T>();
  T* gk = dk.data_ptr<T>();
  T* gv = dv.data_ptr<T>();
  const T inv_n = T(1) / static_cast<T>(args.max_seq_len);
  const T alpha = static_cast<T>(args.alpha);
  const int64_t n_pos = pos ? 2 * args.max_seq_len - 1 : 0;
  const int64_t n_ts = tsb ? args.num_ts_buckets : 0;

  // Backward tasks are (sequence, head): dK and dV of a head accumulate over all of its
  // query blocks, so one task owns them and no two threads write the same rows.
  std::vector<Task> tasks;
  for (int64_t b = 0; b < static_cast<int64_t>(in.views.size()); ++b) {
    const SequenceView& s = in.views[b];
    for (int64_t h = 0; h < H && s.len > 0; ++h) {
      tasks.push_back({b, h, double(s.len) * double(s.len)});
    }
  }
  sort_by_cost(tasks);

  const int num_threads = at::get_num_threads();
  // Bias gradients are tiny; each thread sums into its own copy, reduced at the end.
  std::vector<double> bias_grad(static_cast<size_t>(num_threads) * (n_pos + n_ts), 0.0);
  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<T> bias, z, da;
    std::vector<uint8_t> mask;
    double* my_grad = bias_grad.data() + omp_get_thread_num() * (n_pos + n_ts);
    // Static round-robin over the cost-sorted tasks: each thread always sums the same
    // tasks in the same order, so bias gradients are bitwise repeatable run to run.
#pragma omp for schedule(static, 1)
    for (int64_t t = 0; t < num_tasks; ++t) {
      const SequenceView& s = in.views[tasks[t].seq];
      const int64_t h = tasks[t].part;
      const T* kb = k + (s.begin * H + h) * Dqk;
      const T* vb = v + (s.begin * H + h) * Dv;
      T* gkb = gk + (s.begin * H + h) * Dqk;
      T* gvb = gv + (s.begin * H + h) * Dv;
      for (int64_t i0 = 0; i0 < s.len; i0 += kBlockQ) {
        const int64_t rows = std::min(kBlockQ, s.len - i0);
        const int64_t kend = key_end(s, i0, i0 + rows);
        bias.resize(rows * kend);
        z.resize(rows * kend);
        da.resize(rows * kend);
        mask.resize(rows * kend);
        fill_bias_tile<T>(s, args, i0, rows, kend, bias.data(), mask.data());
        const T* qb = q + ((s.begin + i0) * H + h) * Dqk;
        const T* gob = go + ((s.begin + i0) * H + h) * Dv;
        T* gqb = gq + ((s.begin + i0) * H + h) * Dqk;

        gemm_rm(false, true, rows, kend, Dqk, alpha, qb, H * Dqk, kb, H * Dqk, T(0),
                   z.data(), kend);
        gemm_rm(false, true, rows, kend, Dv, T(1), gob, H * Dv, vb, H * Dv, T(0),
                   da.data(), kend);
        // z <- attention weights a (for dV); da <- dL/dz (for dQ, dK and the biases).
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < kend; ++j) {
            const int64_t e = r * kend + j;
            if (!mask[e]) {
              z[e] = T(0);
              da[e] = T(0);
              continue;
            }
            const T x = z[e] + bias[e];
            const T sg = sigmoid(x);
            z[e] = x * sg * inv_n;
            da[e] = da[e] * sg * (T(1) + x * (T(1) - sg)) * inv_n;
            if (n_pos) {
              my_grad[position_index(s, i0 + r, j, args.max_seq_len)] += da[e];
            }
            if (n_ts) {
              const int64_t delta = args.query_timestamps[s.begin + i0 + r] -
                                    args.timestamps[s.begin + j];
              my_grad[n_pos + time_bucket(delta, args.ts_divisor, n_ts)] += da[e];
            }
          }
        }
        gemm_rm(true, false, kend, Dv, rows, T(1), z.data(), kend, gob, H * Dv, T(1),
                   gvb, H * Dv);
        gemm_rm(false, false, rows, Dqk, kend, alpha, da.data(), kend, kb, H * Dqk,
                   T(0), gqb, H * Dqk);
        gemm_rm(true, false, kend, Dqk, rows, alpha, da.data(), kend, qb, H * Dqk, T(1),
                   gkb, H * Dqk);
      }
    }
  }

  for (int th = 0; th < num_threads; ++th) {
    const double* g = bias_grad.data() + th * (n_pos + n_ts);
    if (n_pos) {
      T* p = dpos.data_ptr<T>();
      for (int64_t e = 0; e < n_pos; ++e) p[e] += static_cast<T>(g[e]);
    }
    if (n_ts) {
      T* p = dts.data_ptr<T>();
      for (int64_t e = 0; e < n_ts; ++e) p[e] += static_cast<T>(g[n_pos + e]);
    }
  }
}

bool present(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined();
}

}  // namespace

at::Tensor hstu_attention_forward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& offsets, int64_t max_seq_len, double alpha,
    const c10::optional<at::Tensor>& pos_bias, const c10::optional<at::Tensor>& ts_bias,
    const c10::optional<at::Tensor>& timestamps,
    const c10::optional<at::Tensor>& query_timestamps,
    const c10::optional<at::Tensor>& num_targets, int64_t contextual_len,
    double ts_bucket_divisor) {
  Inputs in = prepare(q, k, v, offsets, max_seq_len, alpha, pos_bias, ts_bias, timestamps,
                      query_timestamps, num_targets, contextual_len, ts_bucket_divisor);
  at::Tensor out = at::zeros({q.size(0), q.size(1), v.size(2)}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "hstu_attention_forward_cpu", [&] {
    at::Tensor pos = present(pos_bias) ? pos_bias->contiguous() : at::Tensor();
    at::Tensor tsb = present(ts_bias) ? ts_bias->contiguous() : at::Tensor();
    forward_kernel<scalar_t>(
        in, out, pos.defined() ? pos.data_ptr<scalar_t>() : nullptr,
        tsb.defined() ? tsb.data_ptr<scalar_t>() : nullptr);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
hstu_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& offsets, int64_t max_seq_len, double alpha,
    const c10::optional<at::Tensor>& pos_bias, const c10::optional<at::Tensor>& ts_bias,
    const c10::optional<at::Tensor>& timestamps,
    const c10::optional<at::Tensor>& query_timestamps,
    const c10::optional<at::Tensor>& num_targets, int64_t contextual_len,
    double ts_bucket_divisor) {
  Inputs in = prepare(q, k, v, offsets, max_seq_len, alpha, pos_bias, ts_bias, timestamps,
                      query_timestamps, num_targets, contextual_len, ts_bucket_divisor);
  check_shape(grad_out, {q.size(0), q.size(1), v.size(2)}, kOp, "grad_out");
  at::Tensor go = grad_out.to(q.scalar_type()).contiguous();
  at::Tensor dq = at::zeros_like(in.q);
  at::Tensor dk = at::zeros_like(in.k);
  at::Tensor dv = at::zeros_like(in.v);
  at::Tensor dpos = present(pos_bias) ? at::zeros_like(*pos_bias) : at::empty({0}, q.options());
  at::Tensor dts = present(ts_bias) ? at::zeros_like(*ts_bias) : at::empty({0}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "hstu_attention_backward_cpu", [&] {
    at::Tensor pos = present(pos_bias) ? pos_bias->contiguous() : at::Tensor();
    at::Tensor tsb = present(ts_bias) ? ts_bias->contiguous() : at::Tensor();
    backward_kernel<scalar_t>(
        in, go, dq, dk, dv, dpos, dts, pos.defined() ? pos.data_ptr<scalar_t>() : nullptr,
        tsb.defined() ? tsb.data_ptr<scalar_t>() : nullptr);
  });
  return {dq, dk, dv, dpos, dts};
}

}  // namespace torchrec_ascend
