// Host check of the backward's tail split (kernels/common/bwd_tail_split.h), run by
// tests/test_tail_split.py. Reads "ctas steps sms" lines; for each prints the plan as "first
// blocks pieces", then "map ok" when the grid's CTAs cover every whole block once and every
// (split block, piece) once, and the pieces' step ranges tile the block's steps, else "map bad".
#include <cstdio>
#include <vector>

#include "common/bwd_tail_split.h"

int main() {
  long long ctas;
  int steps, sms;
  while (std::scanf("%lld %d %d", &ctas, &steps, &sms) == 3) {
    const flashgen::TailSplit plan = flashgen::plan_tail_split(ctas, steps, sms);
    std::printf("%d %d %d ", plan.first, plan.blocks, plan.pieces);
    bool ok = plan.blocks == 0 ? plan.first == ctas : int64_t(plan.first) + plan.blocks == ctas;
    std::vector<int> whole(ctas, 0);
    std::vector<std::vector<int>> covered(plan.blocks, std::vector<int>(steps, 0));
    for (int64_t cta = 0; ok && cta < (plan.blocks > 0 ? plan.grid() : ctas); ++cta) {
      const flashgen::TailPiece p = flashgen::tail_piece(int(cta), plan);
      if (p.piece < 0) {
        ok = p.index >= 0 && p.index < plan.first && ++whole[p.index] == 1;
        continue;
      }
      ok = p.piece < plan.pieces && p.tail >= 0 && p.tail < plan.blocks && p.index == plan.first + p.tail;
      int lo = 0, hi = 0;
      if (ok) { flashgen::tail_piece_steps(steps, plan.pieces, p.piece, lo, hi); }
      ok = ok && 0 <= lo && lo < hi && hi <= steps;
      for (int s = lo; ok && s < hi; ++s) { ok = ++covered[p.tail][s] == 1; }
    }
    for (int64_t i = 0; ok && i < plan.first; ++i) { ok = whole[i] == 1; }
    for (auto const& block : covered) {
      for (int c : block) { ok = ok && c == 1; }
    }
    std::printf("map %s\n", ok ? "ok" : "bad");
  }
  return 0;
}
