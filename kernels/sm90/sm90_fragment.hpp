// Register-fragment views and the wgmma issue helper of the Hopper kernels.
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/mma_sm90.hpp>

namespace flashgen::sm90 {

using namespace cute;

// A wgmma accumulator fragment ((2 cols, 2 row halves, N/8 col groups), MMA_M, MMA_N) seen as a
// (rows, cols) matrix: ((2, MMA_M), (2, N/8, MMA_N)). Each thread holds two rows of every
// 64-row atom, each row shared with the three other lanes of its quad, as with mma.sync.
template <class AccLayout>
CUTE_HOST_DEVICE constexpr auto acc_layout_rowcol(AccLayout const& acc) {
  static_assert(decltype(rank(acc))::value == 3);
  static_assert(decltype(rank<0>(acc))::value == 3);
  return make_layout(make_layout(layout<0, 1>(acc), layout<1>(acc)),
                     make_layout(layout<0, 0>(acc), layout<0, 2>(acc), layout<2>(acc)));
}

// The same fp32 accumulator (converted to 16 bits) as the register A operand of a k16 wgmma:
// two neighbouring 8-column groups form one k16 slice, the register order matching exactly.
// ((2, 2, N/8), MMA_M, MMA_N) -> ((2, 2, 2), MMA_M, (N/16, MMA_N)).
template <class AccLayout>
CUTE_HOST_DEVICE constexpr auto acc_layout_as_a_operand(AccLayout const& acc) {
  static_assert(decltype(size<0, 2>(acc))::value % 2 == 0);
  auto groups = logical_divide(layout<0, 2>(acc), Layout<_2>{});  // (2, N/16)
  return make_layout(make_layout(layout<0, 0>(acc), layout<0, 1>(acc), layout<0>(groups)), layout<1>(acc),
                     make_layout(layout<1>(groups), layout<2>(acc)));
}

// Issues acc (+)= A B as one wgmma batch over all k slices and commits it; the caller waits
// with warpgroup_wait<N>(). kZeroInit overwrites acc instead of accumulating.
template <bool kZeroInit, class TiledMma, class FragA, class FragB, class Acc>
CUTE_DEVICE void wgmma(TiledMma& tiled_mma, FragA& frag_a, FragB const& frag_b, Acc& acc) {
  // A is either registers (values of the MMA's A type) or shared-memory descriptors.
  constexpr bool kARegs = is_same_v<typename FragA::value_type, typename TiledMma::ValTypeA>;
  if constexpr (kARegs) { warpgroup_fence_operand(frag_a); }
  warpgroup_fence_operand(acc);
  warpgroup_arrive();
  tiled_mma.accumulate_ = kZeroInit ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(frag_a); ++k) {
    cute::gemm(tiled_mma, frag_a(_, _, k), frag_b(_, _, k), acc);
    tiled_mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_fence_operand(acc);
  if constexpr (kARegs) { warpgroup_fence_operand(frag_a); }
}

}  // namespace flashgen::sm90
