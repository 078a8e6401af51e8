// Global<->shared tile copies shared by the kernel families: row guards, zero-filled padding
// columns, and rows addressed one by one (paged KV, packed GQA rows). Columns past kCols are
// skipped when kCols is not a multiple of 32 (the SM80 path pads head dims to 32).
#pragma once

#include <cute/tensor.hpp>

namespace flashgen {

using namespace cute;

// Copies a partitioned (CPY, CPY_M, CPY_K) tile. Rows at or past max_rows (when kGuardRows)
// and columns past kCols (the unpadded head dim) are zero-filled when kZeroFill, else left.
template <bool kGuardRows, bool kZeroFill, int kCols, class TiledCopy, class Src, class Dst, class Coords>
CUTE_DEVICE void copy_tile(TiledCopy const& tiled_copy, Src const& src, Dst&& dst, Coords const& coords, int max_rows) {
  constexpr bool kCheckCols = kCols % 32 != 0;  // head dims are padded to multiples of 32
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    const bool row_ok = !kGuardRows || get<0>(coords(0, m, 0)) < max_rows;
    CUTE_UNROLL
    for (int k = 0; k < size<2>(src); ++k) {
      if (row_ok && (!kCheckCols || get<1>(coords(0, m, k)) < kCols)) {
        copy(tiled_copy, src(_, m, k), dst(_, m, k));
      } else if constexpr (kZeroFill) {
        clear(dst(_, m, k));
      }
    }
  }
}

// Copies rows whose global addresses do not follow one stride (paged KV, packed GQA rows):
// src_cols addresses columns only (row stride 0) and row_offset(tile_row) gives each row's
// element offset, or a negative value for a row to skip (zero-filled when kZeroFill).
template <bool kZeroFill, int kCols, class TiledCopy, class Src, class Dst, class Coords, class RowOffset>
CUTE_DEVICE void copy_rows_indirect(TiledCopy const& tiled_copy, Src const& src_cols, Dst&& dst, Coords const& coords,
                                    RowOffset&& row_offset) {
  constexpr bool kCheckCols = kCols % 32 != 0;
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src_cols); ++m) {
    const int64_t offset = row_offset(get<0>(coords(0, m, 0)));
    const bool row_ok = offset >= 0;
    Tensor src_row = make_tensor(src_cols(_, m, _).data() + (row_ok ? offset : 0), src_cols(_, m, _).layout());
    CUTE_UNROLL
    for (int k = 0; k < size<2>(src_cols); ++k) {
      if (row_ok && (!kCheckCols || get<1>(coords(0, m, k)) < kCols)) {
        copy(tiled_copy, src_row(_, k), dst(_, m, k));
      } else if constexpr (kZeroFill) {
        clear(dst(_, m, k));
      }
    }
  }
}

// The store direction of copy_rows_indirect: dst_cols addresses columns only.
template <int kCols, class TiledCopy, class Src, class Dst, class Coords, class RowOffset>
CUTE_DEVICE void store_rows_indirect(TiledCopy const& tiled_copy, Src const& src, Dst const& dst_cols,
                                     Coords const& coords, RowOffset&& row_offset) {
  constexpr bool kCheckCols = kCols % 32 != 0;
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    const int64_t offset = row_offset(get<0>(coords(0, m, 0)));
    if (offset < 0) { continue; }
    Tensor dst_row = make_tensor(dst_cols(_, m, _).data() + offset, dst_cols(_, m, _).layout());
    CUTE_UNROLL
    for (int k = 0; k < size<2>(src); ++k) {
      if (!kCheckCols || get<1>(coords(0, m, k)) < kCols) { copy(tiled_copy, src(_, m, k), dst_row(_, k)); }
    }
  }
}

}  // namespace flashgen
