// Building blocks of the SM80-path kernels: MMAs over operands staged in shared memory, and the
// shared tile copies (common/tile_copy.hpp).
#pragma once

#include <cute/tensor.hpp>

#include "common/tile_copy.hpp"

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

}  // namespace flashgen::sm80
