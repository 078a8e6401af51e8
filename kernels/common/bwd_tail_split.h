// The backward's tail split: the last key blocks of the grid run as several CTAs each.
//
// With one CTA per (key block, KV head, batch entry) and every CTA equally long (fixed lengths,
// no mask that shortens key blocks), the grid runs in waves of one CTA per SM, and a partial last
// wave leaves SMs idle: the standard sweep's grids are powers of two (2048 or 4096 CTAs), 15.52
// or 31.03 waves on 132 SMs, run as 16 or 32 (bench/NOTES.md, session 22). Here the last
// `blocks` key blocks of the grid's order are each cut into `pieces` CTAs over consecutive
// ranges of the block's steps ((query head, query block) pairs); the pieces add their fp32 dK /
// dV into a zeroed workspace slot, and the one that finishes last reads the sums back and
// writes dK / dV. Shared by the host (plan, grid size) and the kernel (CTA -> block, piece).
#pragma once

#include <cstdint>

#include <cute/config.hpp>

namespace flashgen {

struct TailSplit {
  int first = 0;   // CTAs 0..first-1 run whole key blocks: grid indices 0..first-1
  int blocks = 0;  // key blocks first..first+blocks-1 run as `pieces` CTAs each (0: no split)
  int pieces = 1;

  CUTE_HOST_DEVICE int64_t grid() const { return int64_t(first) + int64_t(blocks) * pieces; }
};

// Overhead of one piece in steps: its K / V load ahead of the first step, and the epilogue's
// exchange through the workspace (the last piece reads the sums back).
constexpr int kTailPieceOverheadSteps = 2;

// The makespan (in steps) of `ctas` equal CTAs of `steps` steps on `sms` SMs when the last
// `blocks` of them (ctas - blocks a multiple of sms) run as `pieces` pieces each: the whole
// blocks in full waves, then the pieces in rounds of sms.
constexpr int64_t tail_split_makespan(int64_t ctas, int steps, int sms, int64_t blocks, int pieces) {
  const int64_t whole_waves = (ctas - blocks) / sms;
  const int64_t rounds = (blocks * pieces + sms - 1) / sms;
  const int piece_steps = pieces == 1 ? steps : (steps + pieces - 1) / pieces + kTailPieceOverheadSteps;
  return whole_waves * steps + rounds * piece_steps;
}

// The plan with the least makespan for `ctas` equal CTAs of `steps` steps on `sms` SMs: split the
// partial last wave's blocks, or those and one full wave before them, into 2..steps pieces (the
// fewest pieces among equals), or nothing when no split beats whole blocks.
inline TailSplit plan_tail_split(int64_t ctas, int steps, int sms, int max_pieces = 64) {
  TailSplit none;
  none.first = int(ctas);
  if (sms <= 0 || ctas <= 0 || steps < 2 || ctas % sms == 0 || ctas > INT32_MAX / 2) { return none; }
  int64_t best = (ctas / sms + 1) * steps;  // whole blocks: the partial wave takes a full one
  TailSplit plan = none;
  for (int waves = 0; waves < 2; ++waves) {
    const int64_t blocks = ctas % sms + int64_t(waves) * sms;
    if (blocks > ctas) { break; }
    for (int pieces = 2; pieces <= steps && pieces <= max_pieces; ++pieces) {
      const int64_t span = tail_split_makespan(ctas, steps, sms, blocks, pieces);
      if (span < best) {
        best = span;
        plan.first = int(ctas - blocks);
        plan.blocks = int(blocks);
        plan.pieces = pieces;
      }
    }
  }
  return plan;
}

// What grid CTA `cta` runs: `index` in the key-block order, and `piece` of it (-1: the whole
// block). A block's pieces are adjacent in the grid, so that they start and finish together.
struct TailPiece {
  int index;
  int piece;
  int tail;  // the block's slot among the split ones (piece >= 0)
};
CUTE_HOST_DEVICE TailPiece tail_piece(int cta, TailSplit const& split) {
  if (split.blocks == 0 || cta < split.first) { return {cta, -1, 0}; }
  const int j = cta - split.first;
  const int tail = j / split.pieces;
  return {split.first + tail, j - tail * split.pieces, tail};
}

// Steps [lo, hi) of piece `piece` of `pieces` over `steps` steps (the first steps % pieces
// pieces take one more).
CUTE_HOST_DEVICE void tail_piece_steps(int steps, int pieces, int piece, int& lo, int& hi) {
  const int small = steps / pieces, extra = steps - small * pieces;
  lo = piece * small + (piece < extra ? piece : extra);
  hi = lo + small + (piece < extra ? 1 : 0);
}

}  // namespace flashgen
