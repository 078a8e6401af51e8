// Attention mask policy: which key blocks a query block visits, which of those need the
// element-wise mask, and the element-wise mask itself. The kernel's main loop is split at
// n_block_masked_min() so that fully visible blocks carry no masking code.
#pragma once

#include <cmath>

#include "common/cute_utils.hpp"

namespace flashgen {

template <bool kIsCausal, int kBlockM, int kBlockN>
struct AttentionMask {
  int seqlen_q;
  int seqlen_k;

  // Exclusive upper bound on the key blocks that query block m_block attends to.
  CUTE_DEVICE int n_block_max(int m_block) const {
    int n_max = (seqlen_k + kBlockN - 1) / kBlockN;
    if constexpr (kIsCausal) {
      // Causal is aligned bottom-right: row i sees columns j <= i + seqlen_k - seqlen_q.
      const int last_row = min((m_block + 1) * kBlockM, seqlen_q) - 1;
      const int last_visible_col = last_row + seqlen_k - seqlen_q;
      n_max = min(n_max, last_visible_col < 0 ? 0 : last_visible_col / kBlockN + 1);
    }
    return n_max;
  }

  // Key blocks with index >= this value need the element-wise mask.
  CUTE_DEVICE int n_block_masked_min(int m_block) const {
    int n_min = seqlen_k / kBlockN;  // a partial last block reaches past seqlen_k
    if constexpr (kIsCausal) {
      // Block n is visible to every row of the tile iff its last column is visible to the
      // tile's first row.
      const int first_row_limit = m_block * kBlockM + seqlen_k - seqlen_q;
      const int fully_visible = first_row_limit + 1 <= 0 ? 0 : (first_row_limit + 1) / kBlockN;
      n_min = min(n_min, fully_visible);
    }
    return n_min;
  }

  // scores: (rows, cols) view of the score tile; coords: the same view of its (row, col)
  // coordinates inside the (kBlockM, kBlockN) tile.
  template <class ScoresTensor, class CoordTensor>
  CUTE_DEVICE void apply(ScoresTensor& scores, CoordTensor const& coords, int m_block, int n_block) const {
    const int row0 = m_block * kBlockM;
    const int col0 = n_block * kBlockN;
    const int diagonal_offset = seqlen_k - seqlen_q;
    CUTE_UNROLL
    for (int r = 0; r < size<0>(scores); ++r) {
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) {
        const int row = row0 + get<0>(coords(r, c));
        const int col = col0 + get<1>(coords(r, c));
        bool masked = col >= seqlen_k;
        if constexpr (kIsCausal) { masked = masked || col > row + diagonal_offset; }
        if (masked) { scores(r, c) = -INFINITY; }
      }
    }
  }
};

}  // namespace flashgen
