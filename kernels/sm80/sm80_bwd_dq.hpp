// The SM80-path backward's fp32 dQ accumulator: where each thread adds its part of a query
// block's dQ, and the conversion kernel that reads it back into dq.
//
// A (query block, query head) tile of dq_accum (block_m rows of dq_accum_dim floats, rows
// num_heads_q * dq_accum_dim apart) is kept in the kernel's own order rather than row by row:
// thread t's fragment pair j (acc_dq(2j), acc_dq(2j + 1), two adjacent columns) lives at tile
// position L = 2 (j * kNumThreads + t), row L / D, column L % D. One warp's vector reduction
// then covers 256 contiguous bytes (2 cache lines), where in row order it touched 8 rows (8
// lines) of 32 bytes each: ncu counted 16.8M reduction requests of 8 sectors against FA2's
// 33.5M of 4 (FA2 keeps its accumulator in its atomic-add copy's order), and a quarter of our
// MIO-throttle stalls on them (bench/NOTES.md, session 19: +6-16%). The tiles sit
// at rows row_base + batch * kDqAccumPadRows + m * block_m (BwdParams::dq_accum), so that a
// sequence's last, partial block owns all block_m rows: rows past the sequence hold zeros.
#pragma once

#include <cute/tensor.hpp>

#include "common/bwd_params.h"
#include "common/seq_info.hpp"

namespace flashgen::sm80 {

using namespace cute;

template <class Traits>
struct DqTile {
  static constexpr int kThreads = Traits::kNumThreads;
  static constexpr int kDim = Traits::kPadQK;  // == BwdParams::dq_accum_dim
  static constexpr int kPairs = Traits::kBlockM * kDim / (2 * kThreads);
  static_assert(Traits::kBlockM * kDim % (2 * kThreads) == 0 && Traits::kBlockM <= kDqAccumPadRows);
  // One pass of every thread's pair j covers 2 * kThreads floats: whole rows when D divides it.
  static constexpr bool kWholeRows = (2 * kThreads) % kDim == 0;

  float* tile;         // row 0, column 0 of the tile
  float* thread_base;  // this thread's pair 0 (kWholeRows)
  int64_t row_stride;  // floats between rows
  int tid;

  CUTE_DEVICE DqTile(BwdParams const& p, SeqInfo const& seq, int batch, int h, int m, int tid_)
      : row_stride(int64_t(p.num_heads_q) * kDim), tid(tid_) {
    const int64_t row = int64_t(seq.row_base) + int64_t(batch) * kDqAccumPadRows + int64_t(m) * Traits::kBlockM;
    tile = p.dq_accum + row * row_stride + int64_t(h) * kDim;
    thread_base = tile + (2 * tid / kDim) * row_stride + (2 * tid) % kDim;
  }

  // Thread tid's pair j: two floats, 8-byte aligned.
  CUTE_DEVICE float* pair(int j) const {
    if constexpr (kWholeRows) {
      return thread_base + int64_t(j * (2 * kThreads / kDim)) * row_stride;
    } else {
      const int pos = 2 * (j * kThreads + tid);
      return tile + (pos / kDim) * row_stride + pos % kDim;
    }
  }
};

// dq = softmax_scale * dq_accum in the input dtype: one CTA per (query block, query head, batch
// entry), each thread its own pairs of the tile, mapped back to (row, column) through the dQ
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
  static_assert(decltype(size(coords))::value == 2 * DqTile<Traits>::kPairs);
  const DqTile<Traits> tile(params, seq, batch, h, m, tid);
  const int64_t dq_offset = params.cu_seqlens_q != nullptr ? int64_t(seq.row_base) * params.dq_row_stride
                                                           : int64_t(batch) * params.dq_batch_stride;
  Element* dq = static_cast<Element*>(params.dq) + dq_offset + int64_t(h) * params.dq_head_stride;
  CUTE_UNROLL
  for (int j = 0; j < DqTile<Traits>::kPairs; ++j) {
    const int row = m * kBlockM + get<0>(coords(2 * j));
    const int col = get<1>(coords(2 * j));  // and col + 1 (the accumulator's adjacent pair)
    if (row < seq.seqlen_q && col < params.head_dim_qk) {
      const float2 v = *reinterpret_cast<const float2*>(tile.pair(j));
      alignas(4) const Element out[2] = {Element(v.x * params.softmax_scale), Element(v.y * params.softmax_scale)};
      *reinterpret_cast<uint32_t*>(dq + int64_t(row) * params.dq_row_stride + col) =
          *reinterpret_cast<const uint32_t*>(out);
    }
  }
}

}  // namespace flashgen::sm80
