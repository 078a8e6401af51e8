// Building blocks of the SM80-path kernels: MMAs over operands staged in shared memory, and
// global<->shared tile copies with row guards, zero-filled padding and indirect row addresses.
#pragma once

#include <cute/tensor.hpp>

namespace flashgen::sm80 {

using namespace cute;

// acc += A B with both operands read from shared memory one k16 slice ahead of the MMAs.
template <class TiledMma, class Acc, class FragA, class FragB, class SmemA, class SmemB, class CopyA,
          class CopyB, class ThrCopyA, class ThrCopyB>
CUTE_DEVICE void gemm_smem_smem(TiledMma& tiled_mma, Acc& acc, FragA& frag_a, FragB& frag_b,
                                SmemA const& smem_a, SmemB const& smem_b, CopyA const& copy_a,
                                CopyB const& copy_b, ThrCopyA const& thr_copy_a,
                                ThrCopyB const& thr_copy_b) {
  Tensor frag_a_view = thr_copy_a.retile_D(frag_a);
  Tensor frag_b_view = thr_copy_b.retile_D(frag_b);
  constexpr int kSlices = decltype(size<2>(frag_a))::value;
  copy(copy_a, smem_a(_, _, 0), frag_a_view(_, _, 0));
  copy(copy_b, smem_b(_, _, 0), frag_b_view(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < kSlices; ++k) {
    if (k + 1 < kSlices) {
      copy(copy_a, smem_a(_, _, k + 1), frag_a_view(_, _, k + 1));
      copy(copy_b, smem_b(_, _, k + 1), frag_b_view(_, _, k + 1));
    }
    gemm(tiled_mma, frag_a(_, _, k), frag_b(_, _, k), acc);
  }
}

// acc += A B with A already in registers and B read from shared memory one slice ahead.
template <class TiledMma, class Acc, class FragA, class FragB, class SmemB, class CopyB, class ThrCopyB>
CUTE_DEVICE void gemm_reg_smem(TiledMma& tiled_mma, Acc& acc, FragA const& frag_a, FragB& frag_b,
                               SmemB const& smem_b, CopyB const& copy_b, ThrCopyB const& thr_copy_b) {
  Tensor frag_b_view = thr_copy_b.retile_D(frag_b);
  constexpr int kSlices = decltype(size<2>(frag_a))::value;
  copy(copy_b, smem_b(_, _, 0), frag_b_view(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < kSlices; ++k) {
    if (k + 1 < kSlices) { copy(copy_b, smem_b(_, _, k + 1), frag_b_view(_, _, k + 1)); }
    gemm(tiled_mma, frag_a(_, _, k), frag_b(_, _, k), acc);
  }
}

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

}  // namespace flashgen::sm80
