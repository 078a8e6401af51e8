// Register-fragment views and the wgmma issue helper of the Hopper kernels.
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cutlass/numeric_conversion.h>

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

// FP8: the fp32 accumulator seen in the register order of the A operand of a k32 e4m3 wgmma,
// whose thread holds, per 64-row atom and 32-column slice, (4 consecutive columns, 2 row
// halves, 2 column halves) while the accumulator holds (2 columns, 2 row halves, 8-column
// groups). Taking the accumulator's values in the order (column c0, group bit j0, row half,
// group bit j1) keeps every value in its row, so no value leaves its thread; the price is that
// A column 4q + 2 j0 + c0 + 16 j1 of a slice carries score column 2q + c0 + 8 j0 + 16 j1, a fixed
// permutation within each 16 columns that V's PV layout (flashgen.h) applies to the keys.
// ((2, 2, N/8), MMA_M, MMA_N) -> (((2, 2), 2, 2), MMA_M, (N/32, MMA_N)).
template <class AccLayout>
CUTE_HOST_DEVICE constexpr auto acc_layout_as_fp8_a_operand(AccLayout const& acc) {
  constexpr int kGroups = decltype(size<0, 2>(acc))::value;
  static_assert(kGroups % 4 == 0, "FP8 k slices are 32 columns: four 8-column groups");
  auto const group_stride = get<0, 2>(acc.stride());
  auto j0 = make_layout(_2{}, group_stride);
  auto j1 = make_layout(_2{}, group_stride * _2{});
  auto slices = make_layout(Int<kGroups / 4>{}, group_stride * _4{});
  return make_layout(make_layout(make_layout(layout<0, 0>(acc), j0), layout<0, 1>(acc), j1), layout<1>(acc),
                     make_layout(slices, layout<2>(acc)));
}

// The compact e4m3 register fragment of that A operand: ((4, 2, 2), MMA_M, N/32 * MMA_N).
template <class AccLayout>
CUTE_HOST_DEVICE constexpr auto fp8_a_operand_layout(AccLayout const& acc) {
  return make_layout(make_shape(make_shape(_4{}, _2{}, _2{}), size<1>(acc), size<0, 2>(acc) / _4{} * size<2>(acc)));
}

// Converts the fp32 scores (probabilities) of acc into the e4m3 A operand p, four at a time
// (two cvt.rn.satfinite.e4m3x2.f32 and one register each).
template <class Acc, class FragP>
CUTE_DEVICE void convert_to_fp8_a_operand(Acc const& acc, FragP& p) {
  Tensor src = make_tensor(acc.data(), acc_layout_as_fp8_a_operand(acc.layout()));
  static_assert(decltype(size(src))::value == decltype(size(p))::value);
  using Quad = cutlass::Array<typename FragP::value_type, 4>;
  cutlass::NumericArrayConverter<typename FragP::value_type, float, 4, cutlass::FloatRoundStyle::round_to_nearest> cvt;
  Tensor p4 = recast<Quad>(p);
  CUTE_UNROLL
  for (int i = 0; i < size(p4); ++i) {
    cutlass::Array<float, 4> in;
    CUTE_UNROLL
    for (int j = 0; j < 4; ++j) { in[j] = src(4 * i + j); }
    p4(i) = cvt(in);
  }
}

// A basic-block boundary before a wgmma wait. ptxas schedules a WARPGROUP.DEPBAR at the top of
// its basic block: in the forward's key loop the wait for O += P V (placed after the softmax of
// the next block, which it is meant to overlap) went above the whole softmax, so the warpgroup
// sat idle while its P V ran (ncu: 17% of the consumers' samples on that wait). A branch on a
// run-time condition that is never true (warp-uniform: one untaken branch per call) ends the
// block. Its body must store all of frag (P, which the wgmma still reads): that keeps P's
// registers live up to the branch, otherwise ptxas hands them to the softmax's temporaries and
// has to wait for the wgmma before the softmax again (checked in SASS with one word stored).
template <class Frag>
CUTE_DEVICE void end_block_before_wait(Frag& frag, bool never) {
  if (never) {
    Tensor words = recast<uint32_t>(frag);
    CUTE_UNROLL
    for (int i = 0; i < size(words); ++i) {
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(0), "r"(words(i)) : "memory");
    }
  }
}

// Loads a (16-byte vector, K) slice of a shared-memory tile into registers with ld.shared.v4.
// CuTe's copy through the swizzled shared-memory tensor compiled to generic loads (LD.E.128)
// with 64-bit addresses: the compiler did not see that the pointer is a shared-memory one.
template <class Src, class Dst>
CUTE_DEVICE void load_shared_vec16(Src const& src, Dst&& dst) {
  static_assert(sizeof(typename std::remove_reference_t<Dst>::value_type) * decltype(size<0>(src))::value == 16);
  Tensor words = recast<uint32_t>(dst);
  CUTE_UNROLL
  for (int k = 0; k < size<1>(src); ++k) {
    const uint32_t addr = cast_smem_ptr_to_uint(raw_pointer_cast(&src(0, k)));
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(words(4 * k)), "=r"(words(4 * k + 1)), "=r"(words(4 * k + 2)), "=r"(words(4 * k + 3))
                 : "r"(addr));
  }
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
