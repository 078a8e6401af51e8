// Dropout on attention probabilities, keyed by element coordinates.
//
// The scores of one (batch, head) are cut into 16x16 blocks; inside a block, the element
// (r, c) belongs to lane group g = (r % 8) * 4 + (c % 8) / 2, and one Philox call per
// (block, g) yields 8 16-bit uniforms, one for each element of the group (rows r and r + 8,
// columns c, c + 1, c + 8, c + 9). That is exactly the set of elements one thread holds in an
// m16n8k16 accumulator pair, so each thread draws one Philox call per 16x16 block, and
// dropout_keep() below recomputes any single element (the mask kernel, the backward pass).
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/cute_utils.hpp"

#include "common/philox.hpp"

namespace flashgen {

struct DropoutKey {
  uint32_t seed_lo, seed_hi;
  uint32_t offset_lo, offset_hi;
  uint32_t batch_head;
  uint32_t threshold;  // 16-bit uniforms below it are dropped

  CUTE_HOST_DEVICE DropoutKey(uint64_t seed, uint64_t offset, int batch, int num_heads, int head, uint32_t threshold_)
      : seed_lo(uint32_t(seed)),
        seed_hi(uint32_t(seed >> 32)),
        offset_lo(uint32_t(offset)),
        offset_hi(uint32_t(offset >> 32)),
        batch_head(uint32_t(batch) * uint32_t(num_heads) + uint32_t(head)),
        threshold(threshold_) {}

  // The 8 uniforms of the group holding element (row, col).
  CUTE_HOST_DEVICE Philox4x32 group_bits(int row, int col) const {
    const uint32_t block_col = uint32_t(col) / 16;
    const uint32_t group = (uint32_t(row) / 16) * 32 + (uint32_t(row) % 8) * 4 + (uint32_t(col) % 8) / 2;
    return philox4x32_10(block_col, group, batch_head, offset_lo, seed_lo, seed_hi ^ offset_hi);
  }

  // Slot of (row, col) among its group's 8 uniforms.
  CUTE_HOST_DEVICE static int slot(int row, int col) {
    return ((row % 16) / 8) * 4 + ((col % 16) / 8) * 2 + (col % 2);
  }

  CUTE_HOST_DEVICE static uint32_t uniform16(Philox4x32 const& bits, int slot_index) {
    return (bits.x[slot_index / 2] >> (16 * (slot_index % 2))) & 0xFFFFu;
  }

  CUTE_HOST_DEVICE bool keep(int row, int col) const {
    return uniform16(group_bits(row, col), slot(row, col)) >= threshold;
  }
};

// Drops elements of a thread's (rows, cols) register view of a score tile in place: row index
// h + 2 m (h: the +8 row half) and column index cl + 2 t (cl: the column pair, t: the n8 tile),
// as in both the mma.sync and the wgmma accumulators, where a thread holds whole Philox groups.
// coords: the same view of each element's (row, col) in the tile; row0/col0: the tile's origin
// in the (batch, head)'s score matrix.
template <class Scores, class Coords>
CUTE_DEVICE void apply_dropout(Scores& scores, Coords const& coords, DropoutKey const& key, int row0, int col0) {
  CUTE_UNROLL
  for (int m = 0; m < size<0>(scores) / 2; ++m) {
    CUTE_UNROLL
    for (int j = 0; j < size<1>(scores) / 4; ++j) {
      auto coord = coords(2 * m, 4 * j);
      const Philox4x32 bits = key.group_bits(row0 + get<0>(coord), col0 + get<1>(coord));
      CUTE_UNROLL
      for (int h = 0; h < 2; ++h) {
        CUTE_UNROLL
        for (int ch = 0; ch < 2; ++ch) {
          CUTE_UNROLL
          for (int cl = 0; cl < 2; ++cl) {
            float& p = scores(h + 2 * m, cl + 2 * (2 * j + ch));
            p = DropoutKey::uniform16(bits, h * 4 + ch * 2 + cl) >= key.threshold ? p : 0.f;
          }
        }
      }
    }
  }
}

}  // namespace flashgen
