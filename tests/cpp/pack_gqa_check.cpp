// Host check of the Hopper forward's packing rule (kernels/sm90/sm90_fwd_tile.h, fwd_pack_gqa),
// run by tests/test_pack_gqa_rule.py: reads "group seqlen_q block_m" lines, prints 0 or 1 each.
#include <cstdio>

#include "sm90/sm90_fwd_tile.h"

int main() {
  int group = 0, seqlen_q = 0, block_m = 0;
  while (std::scanf("%d %d %d", &group, &seqlen_q, &block_m) == 3) {
    std::printf("%d\n", flashgen::sm90::fwd_pack_gqa(group, seqlen_q, block_m) ? 1 : 0);
  }
  return 0;
}
