// How many splits of the key sequence (flash-decoding) fill the GPU.
#pragma once

#include <cstdint>

namespace flashgen {

// ctas: CTAs without splitting (batch x heads x query blocks); n_blocks: key blocks per
// sequence. Splitting pays when the grid is less than a wave: pick the fewest splits whose
// wave efficiency (work / (waves x SMs)) is within 85% of the best, skipping counts that
// leave the per-split block count unchanged.
inline int choose_num_splits(int64_t ctas, int n_blocks, int num_sms, int max_splits = 128) {
  if (ctas <= 0 || n_blocks <= 1 || num_sms <= 0 || ctas >= int64_t(num_sms) * 8 / 10) { return 1; }
  const int limit = n_blocks < max_splits ? n_blocks : max_splits;
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  auto eligible = [&](int s) { return s == 1 || ceil_div(n_blocks, s) != ceil_div(n_blocks, s - 1); };
  auto efficiency = [&](int s) {
    const int64_t work = ctas * s;
    return double(work) / double(ceil_div(work, num_sms) * num_sms);
  };
  double best = 0.0;
  for (int s = 1; s <= limit; ++s) {
    if (eligible(s) && efficiency(s) > best) { best = efficiency(s); }
  }
  for (int s = 1; s <= limit; ++s) {
    if (eligible(s) && efficiency(s) >= 0.85 * best) { return s; }
  }
  return 1;
}

// Decode: the split count whose busiest SM finishes first: ceil(ctas * s / wave) waves of
// ceil(n_blocks / s) key blocks plus kDecodeSplitOverheadBlocks of fixed cost a CTA (its Q load,
// its partial's round trip, its share of the combine), the fewest splits among equals.
// choose_num_splits' "fewest within 85% of the best wave efficiency" took 14 splits at 1 x 32k
// (GQA 32 / 8, 256 blocks): 19 blocks a CTA against 16's 16, 3.07 against 3.33 TB/s on the H200
// (session 22, tools/decode_splits.py). Without the fixed cost the rule took 37 splits at 8 x 32k
// (18 waves of 7 blocks, 126, against 2 splits' one wave of 128) and lost 8-10% there (4.33 ->
// 4.00 TB/s dense, session 23).
constexpr int kDecodeSplitOverheadBlocks = 2;
inline int choose_decode_splits(int64_t ctas, int n_blocks, int64_t wave, int max_splits = 128) {
  if (ctas <= 0 || n_blocks <= 1 || wave <= 0 || ctas >= wave * 8 / 10) { return 1; }
  const int limit = n_blocks < max_splits ? n_blocks : max_splits;
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  auto cost = [&](int s) { return ceil_div(ctas * s, wave) * (ceil_div(n_blocks, s) + kDecodeSplitOverheadBlocks); };
  int best = 1;
  int64_t best_cost = cost(1);
  for (int s = 2; s <= limit; ++s) {
    if (cost(s) < best_cost) {
      best = s;
      best_cost = cost(s);
    }
  }
  return best;
}

}  // namespace flashgen
