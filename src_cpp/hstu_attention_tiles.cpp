#include "hstu_attention_tiles.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace torchrec_ascend {

std::vector<Tile> build_tile_plan(const std::vector<SequenceView>& views) {
  std::vector<Tile> tiles;
  for (int64_t b = 0; b < static_cast<int64_t>(views.size()); ++b) {
    const SequenceView& s = views[b];
    for (int64_t i0 = 0; i0 < s.len; i0 += kBlockQ) {
      const int64_t rows = std::min(kBlockQ, s.len - i0);
      const int64_t kend = key_end(s, i0, i0 + rows);
      // A fixed per-tile term accounts for the bias fill and GEMM call overheads.
      tiles.push_back({b, i0, rows, kend, double(rows) * double(kend) + 4096.0});
    }
  }
  std::stable_sort(tiles.begin(), tiles.end(),
                   [](const Tile& a, const Tile& b) { return a.cost > b.cost; });
  return tiles;
}

int64_t TimeBuckets::slow(int64_t delta, double divisor, int64_t num_buckets) {
  const double d = static_cast<double>(delta < 0 ? -delta : delta);
  const int64_t bucket =
      static_cast<int64_t>(std::floor(std::log(std::max(d, 1.0)) / divisor));
  return std::clamp<int64_t>(bucket, 0, num_buckets - 1);
}

TimeBuckets::TimeBuckets(double divisor, int64_t num_buckets)
    : num_buckets_(num_buckets), threshold_(num_buckets, 0) {
  constexpr int64_t kTop = int64_t(1) << 62;
  first_ = slow(1, divisor, num_buckets);
  for (int64_t b = 1; b < num_buckets; ++b) {
    if (slow(kTop, divisor, num_buckets) < b) {
      threshold_[b] = std::numeric_limits<int64_t>::max();
      continue;
    }
    int64_t lo = 1, hi = kTop;  // slow(hi) >= b
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (slow(mid, divisor, num_buckets) >= b) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    threshold_[b] = lo;
  }
  for (int e = 0; e < 64; ++e) {
    const int64_t p = e < 63 ? (int64_t(1) << e) : std::numeric_limits<int64_t>::max();
    start_[e] = slow(p, divisor, num_buckets);
  }
}

template <typename T, typename Acc>
void fill_bias_tile(const SequenceView& s, const BiasArgs& args, const T* pos, const T* tsb,
                    int64_t i0, int64_t rows, int64_t kend, bool keep_index,
                    BiasTile<Acc>& tile) {
  const int64_t n = rows * kend;
  tile.bias.resize(n);
  tile.mask.resize(n);
  if (keep_index && pos) tile.pos_index.resize(n);
  if (keep_index && tsb) tile.ts_index.resize(n);
  const int64_t he = s.history_end, ctx = s.contextual, nmax = args.max_seq_len;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    Acc* brow = tile.bias.data() + r * kend;
    uint8_t* mrow = tile.mask.data() + r * kend;
    const int64_t tq = tsb ? args.query_timestamps[s.begin + i] : 0;
    const int64_t* tk = tsb ? args.timestamps + s.begin : nullptr;
    const int64_t pi = std::min(i, he);
    for (int64_t j = 0; j < kend; ++j) {
      bool valid;
      if (j >= he) {
        valid = j == i;  // candidates are seen only by themselves
      } else if (i < ctx || j < ctx) {
        valid = true;  // contextual block: fully connected with the history
      } else {
        valid = j <= i;
      }
      mrow[j] = valid;
      Acc b = 0;
      if (keep_index && !valid) {
        // Masked pairs carry a zero gradient; any in-range index will do.
        if (pos) tile.pos_index[r * kend + j] = 0;
        if (tsb) tile.ts_index[r * kend + j] = 0;
      }
      if (valid && pos) {
        const int64_t p = std::clamp<int64_t>(pi - std::min(j, he) + nmax - 1, 0, 2 * nmax - 2);
        b += static_cast<Acc>(pos[p]);
        if (keep_index) tile.pos_index[r * kend + j] = static_cast<int32_t>(p);
      }
      if (valid && tsb) {
        const int64_t t = (*args.buckets)(tq - tk[j]);
        b += static_cast<Acc>(tsb[t]);
        if (keep_index) tile.ts_index[r * kend + j] = static_cast<int32_t>(t);
      }
      brow[j] = b;
    }
  }
}

template void fill_bias_tile<float, float>(const SequenceView&, const BiasArgs&, const float*,
                                           const float*, int64_t, int64_t, int64_t, bool,
                                           BiasTile<float>&);
template void fill_bias_tile<double, double>(const SequenceView&, const BiasArgs&,
                                             const double*, const double*, int64_t, int64_t,
                                             int64_t, bool, BiasTile<double>&);
template void fill_bias_tile<c10::BFloat16, float>(const SequenceView&, const BiasArgs&,
                                                   const c10::BFloat16*, const c10::BFloat16*,
                                                   int64_t, int64_t, int64_t, bool,
                                                   BiasTile<float>&);

}  // namespace torchrec_ascend
