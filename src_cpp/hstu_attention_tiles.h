// Tile-level helpers of the jagged HSTU attention kernels: per-sequence mask geometry,
// the host-side tile plan and the relative attention bias (RAB) of a query block.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace torchrec_ascend {

// Query rows per tile: scratch per task is kBlockQ x (keys seen), linear in the longest
// sequence rather than quadratic.
constexpr int64_t kBlockQ = 64;

// Everything a tile needs to know about one sequence's mask.
struct SequenceView {
  int64_t begin;        // first jagged row
  int64_t len;          // n
  int64_t history_end;  // n - num_targets
  int64_t contextual;   // number of contextual prefix tokens
};

// One past the last key any query in [i0, i1) can see.
inline int64_t key_end(const SequenceView& s, int64_t i0, int64_t i1) {
  int64_t end = i1 < s.len ? i1 : s.len;
  if (i0 < s.contextual && end < s.history_end) {
    end = s.history_end;
  }
  return end;
}

// One (sequence, query block) unit of work with its estimated cost.
struct Tile {
  int64_t seq, row0, rows, kend;
  double cost;
};

// Every (sequence, query block) tile of the batch, costliest first: with dynamic
// scheduling this is a greedy longest-processing-time plan, so the blocks of one long
// sequence spread over all threads instead of finishing last on one.
std::vector<Tile> build_tile_plan(const std::vector<SequenceView>& views);

// log-bucketed time gap: clamp(floor(ln(max(|d|, 1)) / divisor), 0, num_buckets - 1).
// Exact (it calls the same formula to place its thresholds) but needs no log per pair:
// the bucket of d lies between the buckets of the powers of two around it.
class TimeBuckets {
 public:
  TimeBuckets(double divisor, int64_t num_buckets);
  int64_t operator()(int64_t delta) const {
    const uint64_t d = static_cast<uint64_t>(delta < 0 ? -delta : delta);
    if (d <= 1) return first_;
    int64_t b = start_[63 - __builtin_clzll(d)];
    while (b + 1 < num_buckets_ && static_cast<int64_t>(d) >= threshold_[b + 1]) ++b;
    return b;
  }
  static int64_t slow(int64_t delta, double divisor, int64_t num_buckets);

 private:
  int64_t num_buckets_ = 1, first_ = 0;
  std::vector<int64_t> threshold_;  // smallest gap of each bucket (INT64_MAX: unreachable)
  int64_t start_[64] = {};          // bucket of 2^e
};

// Relative attention bias of one query block, computed once and shared by all heads.
template <typename Acc>
struct BiasTile {
  std::vector<Acc> bias;          // rows x kend, 0 where masked
  std::vector<uint8_t> mask;      // rows x kend validity
  std::vector<int32_t> pos_index; // rows x kend, when a position bias is present
  std::vector<int32_t> ts_index;  // rows x kend, when a time bias is present
};

struct BiasArgs {
  int64_t max_seq_len;
  const int64_t* timestamps;        // (L,) or null
  const int64_t* query_timestamps;  // (L,) or null
  const TimeBuckets* buckets;       // null without a time bias
};

// Fills `tile` for queries [i0, i0 + rows) x keys [0, kend) of sequence s. `pos` and
// `tsb` are the bias tables (null when absent); `keep_index` stores the table index of
// every pair for the backward scatter.
template <typename T, typename Acc>
void fill_bias_tile(const SequenceView& s, const BiasArgs& args, const T* pos, const T* tsb,
                    int64_t i0, int64_t rows, int64_t kend, bool keep_index,
                    BiasTile<Acc>& tile);

}  // namespace torchrec_ascend
