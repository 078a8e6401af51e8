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

}  // namespace flashgen
