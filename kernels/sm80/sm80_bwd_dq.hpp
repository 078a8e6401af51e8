// The SM80-path backward's fp32 dQ accumulator: where each thread adds its part of a query block's
// dQ, and the conversion kernel that reads it back into dq.
//
// A (query block, query head) tile of dq_accum (block_m rows of dq_accum_dim floats, rows
// num_heads_q * dq_accum_dim apart) is kept in the kernel's own order rather than row by row, in
// chunks of kVec fragment elements (acc_dq(kVec j) .. + kVec - 1, adjacent columns in pairs):
// thread t's chunk j lives at tile position L = kVec (j * kNumThreads + t), row L / D, column L %
// D. One warp's reduction then covers 32 kVec contiguous floats: on sm90+ a vector reduction of
// four (512 bytes, 4 cache lines; pairs before session 22: +2-4% causal, bench/NOTES.md), before
// sm90 a scalar one (128 bytes, one line). In row order a warp's reduction touched 8 rows, 8 lines:
// ncu counted 16.8M reduction requests of 8 sectors against FA2's 33.5M of 4 (FA2 keeps its
// accumulator in its atomic-add copy's order), and a quarter of our MIO-throttle stalls on them
// (bench/NOTES.md, session 19: +6-16% on the H200). The tiles sit at rows row_base + batch *
// kDqAccumPadRows + m * block_m (BwdParams::dq_accum), so that a sequence's last, partial block
// owns all block_m rows: rows past the sequence hold zeros. The conversion kernel is compiled with
// the main kernel, for the same architecture, so both see the same kVec.
#pragma once

#include <cute/tensor.hpp>

#include "common/bwd_params.h"
#include "common/cute_utils.hpp"
#include "common/seq_info.hpp"
#include "common/tile_copy.hpp"

namespace flashgen::sm80 {

using namespace cute;

// Fire-and-forget fp32 reductions into global memory.
CUTE_DEVICE void red_add_f32(float* dst, float a) {
  asm volatile("red.global.add.f32 [%0], %1;" ::"l"(dst), "f"(a) : "memory");
}
// Four adjacent values, `dst` 16-byte aligned: sm90+ only (kVec == 4).
CUTE_DEVICE void red_add_f32x4(float* dst, float a, float b, float c, float d) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "f"(a), "f"(b), "f"(c), "f"(d)
               : "memory");
}

template <class Traits>
struct DqTile {
  // Floats per reduction: vector reductions exist from sm90. FLASHGEN_SM80_BWD_SCALAR_DQ forces
  // the scalar order on any GPU (to measure the pre-Hopper path on a Hopper one).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(FLASHGEN_SM80_BWD_SCALAR_DQ)
  static constexpr int kVec = 4;
#else
  static constexpr int kVec = 1;
#endif
  static constexpr int kThreads = Traits::kNumThreads;
  static constexpr int kDim = Traits::kPadQK;  // == BwdParams::dq_accum_dim
  static constexpr int kElems = Traits::kBlockM * kDim / kThreads;  // per thread
  static constexpr int kChunks = kElems / kVec;
  static_assert(Traits::kBlockM * kDim % (kVec * kThreads) == 0 && kDim % kVec == 0 &&
                Traits::kBlockM <= kDqAccumPadRows);
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
  // Adds this thread's dQ fragment (the dQ MMA's accumulator) to the tile.
  template <class Fragment>
  CUTE_DEVICE void add(Fragment const& acc) const {
    static_assert(decltype(size(acc))::value == kElems);
    CUTE_UNROLL
    for (int j = 0; j < kChunks; ++j) {
      if constexpr (kVec == 4) {
        red_add_f32x4(chunk(j), acc(4 * j), acc(4 * j + 1), acc(4 * j + 2), acc(4 * j + 3));
      } else {
        red_add_f32(chunk(j), acc(j));
      }
    }
  }
};

// dq = softmax_scale * dq_accum in the input dtype: one CTA per (query block, query head, batch
// entry). Each thread reads its own chunks of the tile (the same vector width and order as the
// reductions, all loads in flight at once), converts them in the dQ MMA's accumulator layout
// and stages the block in shared memory, from which rows leave in 16-byte stores, as the main
// kernel's dK / dV epilogue does. (The first version read element by element and stored pairs
// straight from the accumulator layout, 8 rows per warp store: 115-137 us against FA2's 62 at
// the standard 2k shapes, bench/NOTES.md, session 20.)
template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads) dq_convert_kernel(const __grid_constant__ BwdParams params) {
  using Element = typename Traits::Element;
  using Tile = DqTile<Traits>;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kPadQK = Traits::kPadQK;
  using SmemLayoutdQ = typename Traits::SmemLayoutQ;  // one stage of Q: (block_m, padded head_dim_qk)
  __shared__ __align__(128) Element smem[cosize_v<SmemLayoutdQ>];
  const int m = int(blockIdx.x), h = int(blockIdx.y), batch = int(blockIdx.z);
  const int tid = int(threadIdx.x);
  const SeqInfo seq(params, batch);
  if (m * kBlockM >= seq.seqlen_q) { return; }

  typename Traits::TiledMmadQ mma_dq;
  Tensor acc = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kPadQK>>{});
  static_assert(decltype(size(acc))::value == Tile::kElems);
  const Tile tile(params, seq, batch, h, m, tid);
  CUTE_UNROLL
  for (int j = 0; j < Tile::kChunks; ++j) {
    if constexpr (Tile::kVec == 4) {
      const float4 v = *reinterpret_cast<const float4*>(tile.chunk(j));
      acc(4 * j) = v.x * params.softmax_scale;
      acc(4 * j + 1) = v.y * params.softmax_scale;
      acc(4 * j + 2) = v.z * params.softmax_scale;
      acc(4 * j + 3) = v.w * params.softmax_scale;
    } else {
      acc(j) = *tile.chunk(j) * params.softmax_scale;
    }
  }
  Tensor rdQ = convert_fragment<Element>(acc);
  Tensor sdQ = make_tensor(make_smem_ptr(smem), SmemLayoutdQ{});
  auto copy_c = make_tiled_copy_C(typename Traits::SmemCopyAtomStore{}, mma_dq);
  auto thr_c = copy_c.get_thread_slice(tid);
  copy(copy_c, thr_c.retile_S(rdQ), thr_c.partition_D(sdQ));
  __syncthreads();

  typename Traits::IOQK::CopyStore store;
  auto thr_store = store.get_thread_slice(tid);
  Tensor tdQsdQ = thr_store.partition_S(sdQ);
  Tensor tdQrdQ = make_fragment_like<Element>(tdQsdQ);
  copy(store, tdQsdQ, tdQrdQ);
  const int64_t dq_offset = params.cu_seqlens_q != nullptr ? int64_t(seq.row_base) * params.dq_row_stride
                                                           : int64_t(batch) * params.dq_batch_stride;
  Element* dq = static_cast<Element*>(params.dq) + dq_offset + int64_t(h) * params.dq_head_stride;
  Tensor gdQ = local_tile(make_tensor(make_gmem_ptr(dq), make_shape(seq.seqlen_q, Int<kPadQK>{}),
                                     make_stride(params.dq_row_stride, _1{})),
                          Shape<Int<kBlockM>, Int<kPadQK>>{}, make_coord(m, 0));
  Tensor tdQcdQ = thr_store.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kPadQK>>{}));
  copy_tile</*kGuardRows=*/true, /*kZeroFill=*/false, Traits::kHeadDimQK>(store, tdQrdQ, thr_store.partition_D(gdQ),
                                                                         tdQcdQ, seq.seqlen_q - m * kBlockM);
}

}  // namespace flashgen::sm80
