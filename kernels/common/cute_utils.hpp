// Small CuTe helpers shared by the attention kernels: fragment layout views,
// conversions and quad reductions.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_conversion.h>

namespace flashgen {

using namespace cute;

// An SM80 m16n8 accumulator fragment ((2 cols, 2 row halves), MMA_M, MMA_N) seen as a
// (rows, cols) matrix: ((2, MMA_M), (2, MMA_N)). Rows are the ones softmax reduces over.
template <class Layout>
CUTE_HOST_DEVICE constexpr auto acc_layout_rowcol(Layout const& acc_layout) {
  static_assert(decltype(rank(acc_layout))::value == 3);
  static_assert(decltype(size<0>(acc_layout))::value == 4);
  auto l = logical_divide(acc_layout, Shape<_2>{});  // ((2, 2), MMA_M, MMA_N)
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<2>(l)));
}

// The same accumulator reused as the A operand of an m16n8k16 MMA: two neighbouring n8
// accumulator tiles form one k16 slice. ((2, 2), MMA_M, MMA_N) -> ((2, 2, 2), MMA_M, MMA_N / 2).
template <class Layout>
CUTE_HOST_DEVICE constexpr auto acc_layout_as_a_operand(Layout const& acc_layout) {
  static_assert(decltype(size<0>(acc_layout))::value == 4);
  static_assert(decltype(size<2>(acc_layout))::value % 2 == 0);
  auto l = logical_divide(acc_layout, Shape<Underscore, Underscore, _2>{});  // ((2,2), M, (2, N/2))
  return make_layout(make_layout(get<0>(l), get<2, 0>(l)), get<1>(l), get<2, 1>(l));
}

// Converts into an existing register fragment whose storage holds the same elements in the
// same order (a re-grouped layout of src's, e.g. an accumulator seen as an MMA A operand):
// one vectorised conversion, no per-element moves.
template <class SrcEngine, class SrcLayout, class DstEngine, class DstLayout>
CUTE_DEVICE void convert_fragment_into(Tensor<SrcEngine, SrcLayout> const& src, Tensor<DstEngine, DstLayout>& dst) {
  using From = typename SrcEngine::value_type;
  using To = typename DstEngine::value_type;
  constexpr int kNumel = decltype(size(src))::value;
  static_assert(decltype(size(dst))::value == kNumel);
  cutlass::NumericArrayConverter<To, From, kNumel> converter;
  *reinterpret_cast<cutlass::Array<To, kNumel>*>(dst.data()) =
      converter(*reinterpret_cast<cutlass::Array<From, kNumel> const*>(src.data()));
}

// Converts a register fragment element-wise into a new one of the same layout (vectorised:
// f32 pairs -> bf16x2 / f16x2).
template <class To, class Engine, class Layout>
CUTE_DEVICE auto convert_fragment(Tensor<Engine, Layout> const& src) {
  Tensor dst = make_tensor<To>(src.layout());
  convert_fragment_into(src, dst);
  return dst;
}

// Reductions over the four lanes that hold one row of an m16n8 accumulator.
CUTE_DEVICE float quad_allreduce_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
  x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
  return x;
}

CUTE_DEVICE float quad_allreduce_sum(float x) {
  x += __shfl_xor_sync(0xffffffff, x, 1);
  x += __shfl_xor_sync(0xffffffff, x, 2);
  return x;
}

CUTE_DEVICE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace flashgen
