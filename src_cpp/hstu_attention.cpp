#include "hstu_attention.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "blas.h"
#include "blas_bf16.h"
#include "hstu_attention_tiles.h"
#include "hstu_pointwise.h"
#include "jagged_checks.h"

namespace torchrec_ascend {

namespace {

constexpr const char* kOp = "hstu_attention";

// C (Acc) = alpha op(A) op(B) + beta C on storage-type inputs: fp32/fp64 through
// sgemm/dgemm, bf16 through the bf16 x bf16 -> fp32 GEMM.
inline void mm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_rm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void mm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
               const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
               double* c, int64_t ldc) {
  gemm_rm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void mm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
               const c10::BFloat16* a, int64_t lda, const c10::BFloat16* b, int64_t ldb,
               float beta, float* c, int64_t ldc) {
  gemm_rm_bf16(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// The accumulator tile as GEMM input: itself when storage and accumulator types agree,
// else rounded into `buf`.
template <typename T, typename Acc>
const T* as_storage(const Acc* src, int64_t n, std::vector<T>& buf) {
  if constexpr (std::is_same_v<T, Acc>) {
    return src;
  } else {
    buf.resize(n);
    for (int64_t e = 0; e < n; ++e) buf[e] = static_cast<T>(src[e]);
    return buf.data();
  }
}

// dst (rows x cols, leading dim ld) <- src (rows x cols, dense).
template <typename T, typename Acc>
void store_rows(const Acc* src, int64_t rows, int64_t cols, T* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[r * ld + c] = static_cast<T>(src[r * cols + c]);
  }
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

struct Inputs {
  at::Tensor q, k, v;
  std::vector<int64_t> offsets, timestamps, query_timestamps, num_targets;
  std::vector<SequenceView> views;
  int64_t num_heads, dim_qk, dim_v, max_seq_len, num_ts_buckets;
  double alpha, ts_divisor;
};

bool present(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

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
  const auto dtype = q.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16, kOp,
      ": q must be float32, float64 or bfloat16, got ", dtype);
  TORCH_CHECK(
      k.scalar_type() == dtype && v.scalar_type() == dtype, kOp,
      ": q, k, v must share a dtype, got ", dtype, ", ", k.scalar_type(), ", ",
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
  in.num_heads = H;
  in.dim_qk = Dqk;
  in.dim_v = v.size(2);
  in.max_seq_len = max_seq_len;
  in.alpha = alpha;
  in.ts_divisor = ts_bucket_divisor;
  in.num_ts_buckets = 0;
  if (present(pos_bias)) {
    check_shape(*pos_bias, {2 * max_seq_len - 1}, kOp, "pos_bias");
    TORCH_CHECK(pos_bias->scalar_type() == dtype, kOp, ": pos_bias dtype ",
                pos_bias->scalar_type(), " != q dtype ", dtype);
  }
  if (present(ts_bias)) {
    TORCH_CHECK(ts_bias->dim() == 1 && ts_bias->numel() >= 1, kOp,
                ": ts_bias must be 1-D (num_buckets,), got shape ", ts_bias->sizes());
    TORCH_CHECK(ts_bias->scalar_type() == dtype, kOp, ": ts_bias dtype ",
                ts_bias->scalar_type(), " != q dtype ", dtype);
    TORCH_CHECK(present(timestamps) && present(query_timestamps), kOp,
                ": ts_bias needs timestamps and query_timestamps (L,) x int64");
    in.timestamps = checked_int_vector(timestamps, L, kOp, "timestamps");
    in.query_timestamps = checked_int_vector(query_timestamps, L, kOp, "query_timestamps");
    in.num_ts_buckets = ts_bias->numel();
  }
  return in;
}

BiasArgs bias_args(const Inputs& in, const TimeBuckets* buckets) {
  return {in.max_seq_len, in.timestamps.empty() ? nullptr : in.timestamps.data(),
          in.query_timestamps.empty() ? nullptr : in.query_timestamps.data(), buckets};
}

template <typename T, typename Acc>
void forward_kernel(const Inputs& in, at::Tensor& out, const T* pos, const T* tsb) {
  const int64_t H = in.num_heads, Dqk = in.dim_qk, Dv = in.dim_v;
  const T* q = in.q.data_ptr<T>();
  const T* k = in.k.data_ptr<T>();
  const T* v = in.v.data_ptr<T>();
  T* o = out.data_ptr<T>();
  const Acc inv_n = Acc(1) / static_cast<Acc>(in.max_seq_len);
  const Acc alpha = static_cast<Acc>(in.alpha);
  const TimeBuckets buckets(in.ts_divisor, std::max<int64_t>(in.num_ts_buckets, 1));
  const BiasArgs args = bias_args(in, &buckets);
  const std::vector<Tile> tiles = build_tile_plan(in.views);
  const int64_t num_tiles = static_cast<int64_t>(tiles.size());

#pragma omp parallel num_threads(at::get_num_threads())
  {
    BiasTile<Acc> tile;
    std::vector<Acc> scores, obuf;
    std::vector<T> wbuf;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < num_tiles; ++t) {
      const SequenceView& s = in.views[tiles[t].seq];
      const int64_t i0 = tiles[t].row0, rows = tiles[t].rows, kend = tiles[t].kend;
      const int64_t n = rows * kend;
      fill_bias_tile<T, Acc>(s, args, pos, tsb, i0, rows, kend, false, tile);
      scores.resize(n);
      for (int64_t h = 0; h < H; ++h) {
        const T* qb = q + ((s.begin + i0) * H + h) * Dqk;
        const T* kb = k + (s.begin * H + h) * Dqk;
        const T* vb = v + (s.begin * H + h) * Dv;
        T* ob = o + ((s.begin + i0) * H + h) * Dv;
        mm(false, true, rows, kend, Dqk, alpha, qb, H * Dqk, kb, H * Dqk, Acc(0),
           scores.data(), kend);
        silu_weights(scores.data(), tile.bias.data(), tile.mask.data(), scores.data(), n,
                     inv_n);
        const T* w = as_storage<T, Acc>(scores.data(), n, wbuf);
        if constexpr (std::is_same_v<T, Acc>) {
          mm(false, false, rows, Dv, kend, Acc(1), w, kend, vb, H * Dv, Acc(0), ob, H * Dv);
        } else {
          obuf.resize(rows * Dv);
          mm(false, false, rows, Dv, kend, Acc(1), w, kend, vb, H * Dv, Acc(0), obuf.data(),
             Dv);
          store_rows(obuf.data(), rows, Dv, ob, H * Dv);
        }
      }
    }
  }
}

// Backward over the same (sequence, query block) tiles as the forward, so the bias tile is
// built once per block and shared by the heads, and one long sequence still spreads over
// every thread. A tile owns its dQ rows; dK and dV rows are shared by all query blocks of
// a sequence, so each thread accumulates them in its own buffer, summed at the end
// (memory: threads x L x H x (D_qk + D_v), linear in the tokens).
// Limitation: those buffers grow with the thread count; on many-core hosts a per-sequence
// buffer or key-block tasks for dK/dV would bound them better.
template <typename T, typename Acc>
void backward_kernel(const Inputs& in, const at::Tensor& grad_out, at::Tensor& dq,
                     at::Tensor& dk, at::Tensor& dv, at::Tensor& dpos, at::Tensor& dts,
                     const T* pos, const T* tsb) {
  const int64_t L = in.q.size(0), H = in.num_heads, Dqk = in.dim_qk, Dv = in.dim_v;
  const T* q = in.q.data_ptr<T>();
  const T* k = in.k.data_ptr<T>();
  const T* v = in.v.data_ptr<T>();
  const T* go = grad_out.data_ptr<T>();
  T* gq = dq.data_ptr<T>();
  const Acc inv_n = Acc(1) / static_cast<Acc>(in.max_seq_len);
  const Acc alpha = static_cast<Acc>(in.alpha);
  const int64_t n_pos = pos ? 2 * in.max_seq_len - 1 : 0;
  const int64_t n_ts = tsb ? in.num_ts_buckets : 0;
  const TimeBuckets buckets(in.ts_divisor, std::max<int64_t>(in.num_ts_buckets, 1));
  const BiasArgs args = bias_args(in, &buckets);
  const std::vector<Tile> tiles = build_tile_plan(in.views);
  const int64_t num_tiles = static_cast<int64_t>(tiles.size());
  const bool any_bias = n_pos + n_ts > 0;

  const int num_threads =
      std::max(1, std::min<int>(at::get_num_threads(), static_cast<int>(num_tiles)));
  std::vector<std::vector<Acc>> dk_acc(num_threads), dv_acc(num_threads);
  // Bias gradients are tiny; each thread sums into its own copy, reduced at the end.
  std::vector<double> bias_grad(static_cast<size_t>(num_threads) * (n_pos + n_ts), 0.0);

#pragma omp parallel num_threads(num_threads)
  {
    const int me = omp_get_thread_num();
    std::vector<Acc>& my_dk = dk_acc[me];
    std::vector<Acc>& my_dv = dv_acc[me];
    my_dk.assign(L * H * Dqk, Acc(0));
    my_dv.assign(L * H * Dv, Acc(0));
    double* my_grad = bias_grad.data() + me * (n_pos + n_ts);
    BiasTile<Acc> tile;
    std::vector<Acc> z, da, dbias, qbuf;
    std::vector<T> zs, das;
    // Static round-robin over the cost-sorted tiles: each thread always sums the same
    // tiles in the same order, so gradients are bitwise repeatable run to run.
#pragma omp for schedule(static, 1)
    for (int64_t t = 0; t < num_tiles; ++t) {
      const SequenceView& s = in.views[tiles[t].seq];
      const int64_t i0 = tiles[t].row0, rows = tiles[t].rows, kend = tiles[t].kend;
      const int64_t n = rows * kend;
      fill_bias_tile<T, Acc>(s, args, pos, tsb, i0, rows, kend, any_bias, tile);
      z.resize(n);
      da.resize(n);
      if (any_bias) dbias.assign(n, Acc(0));
      for (int64_t h = 0; h < H; ++h) {
        const T* qb = q + ((s.begin + i0) * H + h) * Dqk;
        const T* kb = k + (s.begin * H + h) * Dqk;
        const T* vb = v + (s.begin * H + h) * Dv;
        const T* gob = go + ((s.begin + i0) * H + h) * Dv;
        T* gqb = gq + ((s.begin + i0) * H + h) * Dqk;
        Acc* gkb = my_dk.data() + (s.begin * H + h) * Dqk;
        Acc* gvb = my_dv.data() + (s.begin * H + h) * Dv;

        mm(false, true, rows, kend, Dqk, alpha, qb, H * Dqk, kb, H * Dqk, Acc(0), z.data(),
           kend);
        mm(false, true, rows, kend, Dv, Acc(1), gob, H * Dv, vb, H * Dv, Acc(0), da.data(),
           kend);
        // z <- attention weights a (for dV); da <- dL/dz (for dQ, dK and the biases).
        silu_weights_backward(z.data(), tile.bias.data(), tile.mask.data(), da.data(), n,
                              inv_n);
        if (any_bias) {
          for (int64_t e = 0; e < n; ++e) dbias[e] += da[e];
        }
        const T* a_s = as_storage<T, Acc>(z.data(), n, zs);
        const T* dz_s = as_storage<T, Acc>(da.data(), n, das);
        mm(true, false, kend, Dv, rows, Acc(1), a_s, kend, gob, H * Dv, Acc(1), gvb, H * Dv);
        mm(true, false, kend, Dqk, rows, alpha, dz_s, kend, qb, H * Dqk, Acc(1), gkb,
           H * Dqk);
        if constexpr (std::is_same_v<T, Acc>) {
          mm(false, false, rows, Dqk, kend, alpha, dz_s, kend, kb, H * Dqk, Acc(0), gqb,
             H * Dqk);
        } else {
          qbuf.resize(rows * Dqk);
          mm(false, false, rows, Dqk, kend, alpha, dz_s, kend, kb, H * Dqk, Acc(0),
             qbuf.data(), Dqk);
          store_rows(qbuf.data(), rows, Dqk, gqb, H * Dqk);
        }
      }
      if (n_pos) {
        for (int64_t e = 0; e < n; ++e) my_grad[tile.pos_index[e]] += dbias[e];
      }
      if (n_ts) {
        for (int64_t e = 0; e < n; ++e) my_grad[n_pos + tile.ts_index[e]] += dbias[e];
      }
    }
  }

  T* gk = dk.data_ptr<T>();
  T* gv = dv.data_ptr<T>();
  at::parallel_for(0, L * H, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      for (int64_t c = 0; c < Dqk; ++c) {
        Acc sum = 0;
        for (int th = 0; th < num_threads; ++th) {
          if (!dk_acc[th].empty()) sum += dk_acc[th][r * Dqk + c];
        }
        gk[r * Dqk + c] = static_cast<T>(sum);
      }
      for (int64_t c = 0; c < Dv; ++c) {
        Acc sum = 0;
        for (int th = 0; th < num_threads; ++th) {
          if (!dv_acc[th].empty()) sum += dv_acc[th][r * Dv + c];
        }
        gv[r * Dv + c] = static_cast<T>(sum);
      }
    }
  });
  for (int64_t e = 0; e < n_pos + n_ts; ++e) {
    double sum = 0;
    for (int th = 0; th < num_threads; ++th) sum += bias_grad[th * (n_pos + n_ts) + e];
    if (e < n_pos) {
      dpos.data_ptr<T>()[e] = static_cast<T>(sum);
    } else {
      dts.data_ptr<T>()[e - n_pos] = static_cast<T>(sum);
    }
  }
}

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
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
  at::Tensor pos = present(pos_bias) ? pos_bias->contiguous() : at::Tensor();
  at::Tensor tsb = present(ts_bias) ? ts_bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "hstu_attention_forward_cpu",
                                 [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, c10::BFloat16>, float, scalar_t>;
    forward_kernel<scalar_t, acc_t>(in, out, data_or_null<scalar_t>(pos),
                                    data_or_null<scalar_t>(tsb));
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
  at::Tensor dk = at::empty_like(in.k);
  at::Tensor dv = at::empty_like(in.v);
  at::Tensor dpos = at::zeros({present(pos_bias) ? pos_bias->numel() : 0}, q.options());
  at::Tensor dts = at::zeros({present(ts_bias) ? ts_bias->numel() : 0}, q.options());
  at::Tensor pos = present(pos_bias) ? pos_bias->contiguous() : at::Tensor();
  at::Tensor tsb = present(ts_bias) ? ts_bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "hstu_attention_backward_cpu",
                                 [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, c10::BFloat16>, float, scalar_t>;
    backward_kernel<scalar_t, acc_t>(in, go, dq, dk, dv, dpos, dts,
                                     data_or_null<scalar_t>(pos), data_or_null<scalar_t>(tsb));
  });
  return {dq, dk, dv, dpos, dts};
}

}  // namespace torchrec_ascend
