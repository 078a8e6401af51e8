// Attention mask policy: which key blocks a query block visits, which of those need the
// element-wise mask, and the element-wise mask itself.
//
// Query row i (of seqlen_q) sees key j (of seqlen_k) iff j < seqlen_k and
//   i + d - window_left <= j <= i + d + window_right,   d = seqlen_k - seqlen_q,
// a negative window bound meaning unbounded. Causal kernels fix window_right = 0 (the
// bottom-right aligned causal mask). The key blocks of a query block split into
//   [n_min, left_end)              masked (left window edge)
//   [left_end, right_begin)        fully visible: no masking code runs for them
//   [right_begin, n_max)           masked (causal diagonal / right window edge / seqlen_k tail)
#pragma once

#include <cmath>

#include "common/cute_utils.hpp"

namespace flashgen {

CUTE_HOST_DEVICE constexpr int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
CUTE_HOST_DEVICE constexpr int ceil_div_signed(int a, int b) { return floor_div(a + b - 1, b); }

struct KeyBlockRange {
  int n_min;
  int n_max;        // exclusive
  int left_end;     // blocks below this need the left-edge mask
  int right_begin;  // blocks at or above this need the right-edge mask

  CUTE_DEVICE bool needs_mask(int n) const { return n < left_end || n >= right_begin; }
};

template <bool kIsCausal, int kBlockM, int kBlockN>
struct AttentionMask {
  int seqlen_q;
  int seqlen_k;
  int window_left;
  int window_right;
  int group;  // tile rows per query row (> 1 when GQA heads are packed into the rows)

  CUTE_DEVICE AttentionMask(int seqlen_q_, int seqlen_k_, int window_left_, int window_right_, int group_)
      : seqlen_q(seqlen_q_),
        seqlen_k(seqlen_k_),
        window_left(window_left_),
        window_right(kIsCausal ? 0 : window_right_),
        group(group_) {}

  CUTE_DEVICE int query_of(int tile_row) const { return group == 1 ? tile_row : tile_row / group; }

  CUTE_DEVICE KeyBlockRange blocks(int m_block) const {
    const int d = seqlen_k - seqlen_q;
    const int first_row = query_of(m_block * kBlockM);
    const int last_row = query_of(min((m_block + 1) * kBlockM, seqlen_q * group) - 1);
    KeyBlockRange r{0, (seqlen_k + kBlockN - 1) / kBlockN, 0, seqlen_k / kBlockN};
    if (window_right >= 0) {
      r.n_max = min(r.n_max, max(0, floor_div(last_row + d + window_right, kBlockN) + 1));
      // Block n is right-visible to every row iff its last key is visible to the first row.
      r.right_begin = min(r.right_begin, floor_div(first_row + d + window_right + 1, kBlockN));
    }
    if (window_left >= 0) {
      r.n_min = max(0, floor_div(first_row + d - window_left, kBlockN));
      // Block n is left-visible to every row iff its first key is visible to the last row.
      r.left_end = max(r.n_min, ceil_div_signed(last_row + d - window_left, kBlockN));
    }
    r.left_end = min(r.left_end, r.n_max);
    r.right_begin = max(r.right_begin, r.left_end);
    return r;
  }

  // scores: (rows, cols) view of the raw score tile; coords: the same view of each element's
  // (row, col) inside the (kBlockM, kBlockN) tile.
  template <class ScoresTensor, class CoordTensor>
  CUTE_DEVICE void apply(ScoresTensor& scores, CoordTensor const& coords, int m_block, int n_block) const {
    int query[decltype(size<0>(scores))::value];
    CUTE_UNROLL
    for (int r = 0; r < size<0>(scores); ++r) { query[r] = query_of(m_block * kBlockM + get<0>(coords(r, 0))); }
    apply_rows(scores, coords, query, n_block);
  }

  // apply() with each score row's query position given: a caller whose rows are packed
  // computes them once per tile instead of dividing by the group in every masked block.
  template <class ScoresTensor, class CoordTensor, int kRows>
  CUTE_DEVICE void apply_rows(ScoresTensor& scores, CoordTensor const& coords, const int (&query)[kRows],
                              int n_block) const {
    static_assert(kRows == decltype(size<0>(scores))::value);
    const int col0 = n_block * kBlockN;
    CUTE_UNROLL
    for (int r = 0; r < size<0>(scores); ++r) {
      // The row's visible key columns [lo, hi) relative to this block, computed once per row
      // so that the per-element test is two branch-free compares.
      const int diag = query[r] + seqlen_k - seqlen_q - col0;
      const int hi = min(seqlen_k - col0, window_right >= 0 ? diag + window_right + 1 : kBlockN);
      const int lo = window_left >= 0 ? diag - window_left : 0;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) {
        const int col = get<1>(coords(r, c));
        scores(r, c) = (col >= hi || col < lo) ? -INFINITY : scores(r, c);
      }
    }
  }
};

}  // namespace flashgen
