// The SM80-path backward's fp32 dQ accumulator: where each thread adds its part of a query
// block's dQ, and the conversion kernel that reads it back into dq.
//
// A (query block, query head) tile of dq_accum (block_m rows of dq_accum_dim floats, rows
// num_heads_q * dq_accum_dim apart) is kept in the kernel's own order rather than row by row, in
// chunks of kVec fragment elements (acc_dq(kVec j) .. + kVec - 1; a pair is two adjacent
// columns): thread t's chunk j lives at tile position L = kVec (j * kNumThreads + t), row L / D,
// column L % D. One warp's reduction then covers 32 kVec contiguous floats: on sm90+ a vector
// reduction of a pair (256 bytes, 2 cache lines), before sm90 a scalar one (128 bytes, one
// line). In row order a warp's reduction touched 8 rows, 8 lines: ncu counted 16.8M reduction
// requests of 8 sectors against FA2's 33.5M of 4 (FA2 keeps its accumulator in its atomic-add
// copy's order), and a quarter of our MIO-throttle stalls on them (bench/NOTES.md, session 19:
// +6-16% on the H200). The tiles sit at rows row_base + batch * kDqAccumPadRows + m * block_m
// (BwdParams::dq_accum), so that a sequence's last, partial block owns all block_m rows: rows
// past the sequence hold zeros. The conversion kernel is compiled with the main kernel, for the
// same architecture, so both see the same kVec.
#pragma once

#include <cute/tensor.hpp>

#include "common/bwd_params.h"
#include "common/seq_info.hpp"

namespace flashgen::sm80 {

using namespace cute;

// Fire-and-forget fp32 reductions into global memory.
CUTE_DEVICE void red_add_f32(float* dst, float a) {
  asm volatile("red.global.add.f32 [%0], %1;" ::"l"(dst), "f"(a) : "memory");
}
// Two adjacent values, `dst` 8-byte aligned: sm90+ only (DqTile calls it when kVec == 2).
CUTE_DEVICE void red_add_f32x2(float* dst, float a, float b) {
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(dst), "f"(a), "f"(b) : "memory");
}

template <class Traits>
struct DqTile {
  // Floats per reduction: vector reductions exist from sm90. FLASHGEN_SM80_BWD_SCALAR_DQ forces
  // the scalar order on any GPU (to measure the pre-Hopper path on a Hopper one).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(FLASHGEN_SM80_BWD_SCALAR_DQ)
  static constexpr int kVec = 2;
#else
  static constexpr int kVec = 1;
#endif
  static constexpr int kThreads = Traits::kNumThreads;
  static constexpr int kDim = Traits::kPadQK;  // == BwdParams::dq_accum_dim
  static constexpr int kElems = Traits::kBlockM * kDim / kThreads;  // per thread
  static constexpr int kChunks = kElems / kVec;
  static_assert(Traits::kBlockM * kDim % (2 * kThreads) == 0 && Traits::kBlockM <= kDqAccumPadRows);
  // One pass (every thread's chunk j) covers kSpan floats; kGroup passes cover whole rows. A
  // thread's chunks then take kGroup distinct offsets within a group (one when D divides kSpan,
  // as at head dims 64 / 128 / 256), not one per chunk, which ptxas would keep in registers.
  static constexpr int kSpan = kVec * kThreads;
  static constexpr int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }
  static constexpr int kGroup = kDim / gcd(kDim, kSpan);
  static constexpr int kGroupRows = kGroup * kSpan / kDim;
  static_assert(kChunks % kGroup == 0);

  float* tile;         // row 0, column 0 of the tile
  int64_t row_stride;  // floats between rows
  int tid;

  CUTE_DEVICE DqTile(BwdParams const& p, SeqInfo const& seq, int batch, int h, int m, int tid_)
      : row_stride(int64_t(p.num_heads_q) * kDim), tid(tid_) {
    const int64_t row = int64_t(seq.row_base) + int64_t(batch) * kDqAccumPadRows + int64_t(m) * Traits::kBlockM;
    tile = p.dq_accum + row * row_stride + int64_t(h) * kDim;
  }

  // Thread tid's chunk j (j a compile-time index after unrolling): kVec floats, kVec * 4-byte
  // aligned, at tile position kVec (j * kThreads + tid).
  CUTE_DEVICE float* chunk(int j) const {
    const int pos = (j % kGroup) * kSpan + kVec * tid;  // within group j / kGroup
    return tile + (int64_t(j / kGroup) * kGroupRows + pos / kDim) * row_stride + pos % kDim;
  }
  // Where fragment element i lives.
  CUTE_DEVICE float* element(int i) const { return chunk(i / kVec) + i % kVec; }

  // Adds this thread's dQ fragment (the dQ MMA's accumulator) to the tile.
  template <class Fragment>
  CUTE_DEVICE void add(Fragment const& acc) const {
    static_assert(decltype(size(acc))::value == kElems);
    CUTE_UNROLL
    for (int j = 0; j < kChunks; ++j) {
      if constexpr (kVec == 2) {
        red_add_f32x2(chunk(j), acc(2 * j), acc(2 * j + 1));
      } else {
        red_add_f32(chunk(j), acc(j));
      }
    }
  }
};

// dq = softmax_scale * dq_accum in the input dtype: one CTA per (query block, query head, batch
// entry), each thread its own elements of the tile, mapped back to (row, column) through the dQ
// MMA's accumulator layout.
template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads) dq_convert_kernel(const __grid_constant__ BwdParams params) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  const int m = int(blockIdx.x), h = int(blockIdx.y), batch = int(blockIdx.z);
  const int tid = int(threadIdx.x);
  const SeqInfo seq(params, batch);
  if (m * kBlockM >= seq.seqlen_q) { return; }

  typename Traits::TiledMmadQ mma_dq;
  Tensor coords = mma_dq.get_thread_slice(tid).partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<Traits::kPadQK>>{}));
  static_assert(decltype(size(coords))::value == DqTile<Traits>::kElems);
  const DqTile<Traits> tile(params, seq, batch, h, m, tid);
  const int64_t dq_offset = params.cu_seqlens_q != nullptr ? int64_t(seq.row_base) * params.dq_row_stride
                                                           : int64_t(batch) * params.dq_batch_stride;
  Element* dq = static_cast<Element*>(params.dq) + dq_offset + int64_t(h) * params.dq_head_stride;
  CUTE_UNROLL
  for (int i = 0; i < DqTile<Traits>::kElems; i += 2) {
    const int row = m * kBlockM + get<0>(coords(i));
    const int col = get<1>(coords(i));  // and col + 1 (the accumulator's adjacent pair)
    if (row < seq.seqlen_q && col < params.head_dim_qk) {
      const float v0 = *tile.element(i), v1 = *tile.element(i + 1);
      alignas(4) const Element out[2] = {Element(v0 * params.softmax_scale), Element(v1 * params.softmax_scale)};
      *reinterpret_cast<uint32_t*>(dq + int64_t(row) * params.dq_row_stride + col) =
          *reinterpret_cast<const uint32_t*>(out);
    }
  }
}

}  // namespace flashgen::sm80
