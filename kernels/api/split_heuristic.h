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

// Decode: the split count whose busiest SM does the least, ceil(ctas * s / wave) waves of
// ceil(n_blocks / s) key blocks, the fewest splits among equals (each split adds a partial's
// round trip and combine work). choose_num_splits' "fewest within 85% of the best wave
// efficiency" took 14 splits at 1 x 32k (GQA 32 / 8, 256 blocks): 19 blocks a CTA against 16's
// 16, 3.07 against 3.33 TB/s on the H200 (session 22, tools/decode_splits.py); at the other
// measured shapes (1 x 4k, 4 x 16k, 8 x 8k, 16 x 8k) both rules pick the measured best.
inline int choose_decode_splits(int64_t ctas, int n_blocks, int64_t wave, int max_splits = 128) {
  if (ctas <= 0 || n_blocks <= 1 || wave <= 0 || ctas >= wave * 8 / 10) { return 1; }
  const int limit = n_blocks < max_splits ? n_blocks : max_splits;
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  int best = 1;
  int64_t best_cost = ceil_div(ctas, wave) * n_blocks;
  for (int s = 2; s <= limit; ++s) {
    const int64_t cost = ceil_div(ctas * s, wave) * ceil_div(n_blocks, s);
    if (cost < best_cost) {
      best = s;
      best_cost = cost;
    }
  }
  return best;
}

}  // namespace flashgen
