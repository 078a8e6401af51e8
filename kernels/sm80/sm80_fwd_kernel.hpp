// SM80-path forward attention: one CTA per (query block, head, batch entry x split).
//
// Q stays in shared memory for the whole CTA; K and V tiles are single-buffered but
// overlapped: V(n) streams in while S = Q K(n)^T runs, K(n-1) streams in while softmax and
// O += P V(n) run. Key blocks are visited from the last one down; the mask policy splits
// them into masked and fully visible ranges so that only boundary blocks run masking code.
#pragma once

#include <cute/tensor.hpp>

#include "common/cute_utils.hpp"
#include "common/dropout.hpp"
#include "common/fwd_params.h"
#include "common/logit_transforms.hpp"
#include "common/mask.hpp"
#include "common/online_softmax.hpp"
#include "common/seq_info.hpp"
#include "sm80/sm80_copy_gemm.hpp"
#include "sm80/sm80_fwd_traits.hpp"

namespace flashgen::sm80 {

using namespace cute;

template <class Traits, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi, bool kHasDropout, bool kIsPaged>
__global__ void __launch_bounds__(Traits::kNumThreads, 1) fwd_kernel(const __grid_constant__ FwdParams params) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kPadQK = Traits::kPadQK;
  constexpr int kPadV = Traits::kPadV;
  constexpr int kDimQK = Traits::kHeadDimQK;
  constexpr int kDimV = Traits::kHeadDimV;
  using Mask = AttentionMask<kIsCausal, kBlockM, kBlockN>;

  extern __shared__ __align__(128) char smem[];

  // Heaviest query blocks first: under a causal mask the last blocks see the most keys, and
  // starting them early shortens the tail of the grid.
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int batch = blockIdx.z / params.num_splits;
  const int split = blockIdx.z % params.num_splits;
  const bool is_split = params.num_splits > 1;
  const int tid = threadIdx.x;
  // Tile row R is query R / group of head `head + R % group`; without packing group = 1.
  const int group = params.pack_gqa ? params.group_size : 1;
  const int head_kv = params.pack_gqa ? int(blockIdx.y) : int(blockIdx.y) / params.group_size;
  const int head = params.pack_gqa ? head_kv * params.group_size : int(blockIdx.y);

  const SeqInfo seq(params, batch);
  const int tile_rows = seq.seqlen_q * group;
  if (m_block * kBlockM >= tile_rows) { return; }
  const int rows_left = tile_rows - m_block * kBlockM;
  auto row_query = [=](int r) { return group == 1 ? m_block * kBlockM + r : (m_block * kBlockM + r) / group; };
  auto row_head = [=](int r) { return group == 1 ? head : head + (m_block * kBlockM + r) % group; };

  const Mask mask(seq.seqlen_q, seq.seqlen_k, params.window_left, params.window_right, group);
  KeyBlockRange range = mask.blocks(m_block);
  if (is_split) {
    const int blocks_per_split = ((seq.seqlen_k + kBlockN - 1) / kBlockN + params.num_splits - 1) / params.num_splits;
    range.n_min = max(range.n_min, split * blocks_per_split);
    range.n_max = min(range.n_max, (split + 1) * blocks_per_split);
  }

  // Outputs: the final (Element) tile, or this split's fp32 partial tile, addressed per tile row.
  // They are rebuilt after the main loop (SeqInfo is a few loads) rather than kept live in it.
  const int row0 = m_block * kBlockM;
  const float empty_lse = is_split ? -INFINITY : INFINITY;
  // `s` is a SeqInfo built where the outputs are written.
  auto accum_row = [=](const SeqInfo& s, int r) {  // row of this split's partials (valid rows only)
    return (int64_t(split) * params.num_heads_q + row_head(r)) * params.total_q + s.row_base + row_query(r);
  };
  auto lse_ptr = [=](const SeqInfo& s, int r) -> float* {
    if (is_split) { return params.lse_accum + accum_row(s, r); }
    return params.lse + s.lse_offset + row_head(r) * params.lse_head_stride + row_query(r);
  };
  auto out_row_offset = [=](const SeqInfo& s, int r) -> int64_t {  // offset of a tile row in `out`, -1 past the end
    if (r >= rows_left) { return -1; }
    return s.out_offset + int64_t(row_query(r)) * params.out_row_stride + int64_t(row_head(r)) * params.out_head_stride;
  };
  auto gmem_out_tile = [=](const SeqInfo& out_seq) {
    Tensor mO = make_tensor(
        make_gmem_ptr(static_cast<Element*>(params.out) + out_seq.out_offset + head * params.out_head_stride),
        make_shape(out_seq.seqlen_q, Int<kPadV>{}), make_stride(params.out_row_stride, _1{}));
    return local_tile(mO, Shape<Int<kBlockM>, Int<kPadV>>{}, make_coord(m_block, 0));  // (kBlockM, kPadV)
  };

  using IOQK = typename Traits::IOQK;
  using IOV = typename Traits::IOV;
  typename IOV::CopyStore gmem_tiled_copy_o;
  auto gmem_thr_copy_o = gmem_tiled_copy_o.get_thread_slice(tid);
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kPadV>>{});
  Tensor tOcO = gmem_thr_copy_o.partition_D(cO);

  if (range.n_max <= range.n_min) {
    // No key is visible to any row of this tile (or this split holds no block): a rare path,
    // written element by element.
    for (int i = tid; i < kBlockM * kDimV; i += Traits::kNumThreads) {
      const int r = i / kDimV, c = i % kDimV;
      if (r >= rows_left) { continue; }
      if (is_split) {
        params.out_accum[accum_row(seq, r) * kDimV + c] = 0.f;
      } else {
        static_cast<Element*>(params.out)[out_row_offset(seq, r) + c] = Element(0);
      }
    }
    if (is_split || params.lse != nullptr) {
      // With sinks a row without keys has the sink as its whole denominator (splits leave the
      // sinks to the combine kernel).
      for (int r = tid; r < kBlockM && r < rows_left; r += Traits::kNumThreads) {
        *lse_ptr(seq, r) = !is_split && params.sinks != nullptr ? params.sinks[row_head(r)] : empty_lse;
      }
    }
    return;
  }

  Tensor mQ = make_tensor(
      make_gmem_ptr(static_cast<Element const*>(params.q) + seq.q_offset + head * params.q_head_stride),
      make_shape(seq.seqlen_q, Int<kPadQK>{}), make_stride(params.q_row_stride, _1{}));
  Tensor gQ = local_tile(mQ, Shape<Int<kBlockM>, Int<kPadQK>>{}, make_coord(m_block, 0));  // (kBlockM, kPadQK)
  Element const* k_base = static_cast<Element const*>(params.k) + seq.k_offset + head_kv * params.k_head_stride;
  Element const* v_base = static_cast<Element const*>(params.v) + seq.v_offset + head_kv * params.v_head_stride;
  // Paged: rows are placed by the block table, so the tensors address columns only.
  const int64_t k_rows = kIsPaged ? 0 : params.k_row_stride;
  const int64_t v_rows = kIsPaged ? 0 : params.v_row_stride;
  Tensor mK = make_tensor(make_gmem_ptr(k_base), make_shape(seq.seqlen_k, Int<kPadQK>{}), make_stride(k_rows, _1{}));
  Tensor mV = make_tensor(make_gmem_ptr(v_base), make_shape(seq.seqlen_k, Int<kPadV>{}), make_stride(v_rows, _1{}));
  Tensor gK = local_tile(mK, Shape<Int<kBlockN>, Int<kPadQK>>{}, make_coord(_, 0));  // (kBlockN, kPadQK, n)
  Tensor gV = local_tile(mV, Shape<Int<kBlockN>, Int<kPadV>>{}, make_coord(_, 0));   // (kBlockN, kPadV, n)

  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem)), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(sQ.data() + size(sQ), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(sK.data() + size(sK), typename Traits::SmemLayoutV{});
  Tensor sVt = make_tensor(sV.data(), typename Traits::SmemLayoutVt{});
  Tensor sO = make_tensor(sQ.data(), typename Traits::SmemLayoutO{});

  typename IOQK::CopyAsync gmem_tiled_copy_qk;
  auto gmem_thr_copy_qk = gmem_tiled_copy_qk.get_thread_slice(tid);
  typename IOV::CopyAsync gmem_tiled_copy_v;
  auto gmem_thr_copy_v = gmem_tiled_copy_v.get_thread_slice(tid);
  Tensor tQgQ = gmem_thr_copy_qk.partition_S(gQ);
  Tensor tQsQ = gmem_thr_copy_qk.partition_D(sQ);
  Tensor tKgK = gmem_thr_copy_qk.partition_S(gK);  // (CPY, CPY_N, CPY_K, n)
  Tensor tKsK = gmem_thr_copy_qk.partition_D(sK);
  Tensor tVgV = gmem_thr_copy_v.partition_S(gV);  // (CPY, CPY_N, CPY_K, n)
  Tensor tVsV = gmem_thr_copy_v.partition_D(sV);
  Tensor tQcQ = gmem_thr_copy_qk.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kPadQK>>{}));
  Tensor tKcK = gmem_thr_copy_qk.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kPadQK>>{}));
  Tensor tVcV = gmem_thr_copy_v.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kPadV>>{}));

  // Paged KV: key `key` lives at row key % page_size of page block_table[key / page_size].
  // Keys past seqlen_k and invalid pages read as skipped rows.
  auto paged_row_offset = [&](int key, int64_t page_stride, int64_t row_stride) -> int64_t {
    if (key >= seq.seqlen_k) { return -1; }
    const int page = seq.block_table[key / params.page_size];
    if (page < 0 || page >= params.num_pages) { return -1; }
    return int64_t(page) * page_stride + int64_t(key % params.page_size) * row_stride;
  };
  // Loads key block n of K or V into shared memory; kGuard checks rows against seqlen_k and
  // zero-fills (the padded head-dim columns are zero-filled too, so guarded loads come first).
  auto load_kv = [&](int n, auto guard, auto cols, auto const& tiled_copy, auto const& src, auto& dst,
                     auto const& coords, int64_t page_stride, int64_t row_stride) __attribute__((always_inline)) {
    constexpr bool kGuard = decltype(guard)::value;
    constexpr int kCols = decltype(cols)::value;
    if constexpr (kIsPaged) {
      copy_rows_indirect<kGuard, kCols>(tiled_copy, src(_, _, _, 0), dst, coords, [&](int r) {
        return paged_row_offset(n * kBlockN + r, page_stride, row_stride);
      });
    } else {
      copy_tile<kGuard, kGuard, kCols>(tiled_copy, src(_, _, _, n), dst, coords, seq.seqlen_k - n * kBlockN);
    }
  };
  auto load_k = [&](int n, auto guard) __attribute__((always_inline)) {
    load_kv(n, guard, Int<kDimQK>{}, gmem_tiled_copy_qk, tKgK, tKsK, tKcK, params.k_batch_stride, params.k_row_stride);
  };
  auto load_v = [&](int n, auto guard) __attribute__((always_inline)) {
    load_kv(n, guard, Int<kDimV>{}, gmem_tiled_copy_v, tVgV, tVsV, tVcV, params.v_batch_stride, params.v_row_stride);
  };

  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tid);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);    // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_mma.partition_fragment_B(sK);    // (MMA, MMA_N, MMA_K)
  Tensor tOrVt = thr_mma.partition_fragment_B(sVt);  // (MMA, MMA_K=head_dim_v, MMA_N)
  Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kPadV>>{});  // (MMA, MMA_M, MMA_K)
  Tensor acc_o_rc = make_tensor(acc_o.data(), acc_layout_rowcol(acc_o.layout()));

  auto smem_tiled_copy_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto smem_thr_copy_q = smem_tiled_copy_q.get_thread_slice(tid);
  Tensor tSsQ = smem_thr_copy_q.partition_S(sQ);
  auto smem_tiled_copy_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto smem_thr_copy_k = smem_tiled_copy_k.get_thread_slice(tid);
  Tensor tSsK = smem_thr_copy_k.partition_S(sK);
  auto smem_tiled_copy_v = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, tiled_mma);
  auto smem_thr_copy_v = smem_tiled_copy_v.get_thread_slice(tid);
  Tensor tOsVt = smem_thr_copy_v.partition_S(sVt);

  // Coordinates of each score element inside its (kBlockM, kBlockN) tile.
  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));

  const float alibi_raw_slope =
      kHasAlibi ? params.alibi_slopes[batch * params.alibi_batch_stride + head] / params.logit_scale : 0.f;
  const DropoutKey dropout_key(params.philox_seed, params.philox_offset, batch, params.num_heads_q, head,
                               params.dropout_threshold);

  // Prologue: Q and the last key block, guarded (this also zero-fills the padded columns of
  // sQ and sK); the padded columns of sV are cleared once here, later loads skip them.
  if (group == 1) {
    copy_tile</*kGuardRows=*/true, /*kZeroFill=*/true, kDimQK>(gmem_tiled_copy_qk, tQgQ, tQsQ, tQcQ, rows_left);
  } else {
    Tensor mQ_cols = make_tensor(make_gmem_ptr(static_cast<Element const*>(params.q)),
                                 Shape<Int<kBlockM>, Int<kPadQK>>{}, Stride<_0, _1>{});
    copy_rows_indirect</*kZeroFill=*/true, kDimQK>(
        gmem_tiled_copy_qk, gmem_thr_copy_qk.partition_S(mQ_cols), tQsQ, tQcQ, [&](int r) -> int64_t {
          if (r >= rows_left) { return -1; }
          return seq.q_offset + int64_t(row_query(r)) * params.q_row_stride +
                 int64_t(row_head(r)) * params.q_head_stride;
        });
  }
  load_k(range.n_max - 1, true_type{});
  cp_async_fence();
  if constexpr (kDimV % 32 != 0) {
    CUTE_UNROLL
    for (int i = 0; i < size(tVsV); ++i) {
      if (get<1>(tVcV(i)) >= kDimV) { tVsV(i) = Element(0); }
    }
  }

  clear(acc_o);
  constexpr int kRowsPerThread = decltype(size<0>(acc_o_rc))::value;
  OnlineSoftmax<kRowsPerThread> softmax;

  auto step = [&](int n, auto is_first, auto needs_mask) __attribute__((always_inline)) {
    constexpr bool kFirst = decltype(is_first)::value;
    constexpr bool kMasked = decltype(needs_mask)::value;
    Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
    clear(acc_s);
    cp_async_wait<0>();
    __syncthreads();  // K(n) landed; every warp is done reading V(n+1)
    load_v(n, bool_constant<kMasked>{});
    cp_async_fence();

    gemm_smem_smem(tiled_mma, acc_s, tSrQ, tSrK, tSsQ, tSsK, smem_tiled_copy_q, smem_tiled_copy_k,
                   smem_thr_copy_q, smem_thr_copy_k);
    Tensor scores = make_tensor(acc_s.data(), acc_layout_rowcol(acc_s.layout()));
    if constexpr (kHasSoftcap) { apply_softcap(scores, params.softcap_prescale); }
    if constexpr (kHasAlibi) {
      apply_alibi(scores, tScS_rc, row0 + seq.seqlen_k - seq.seqlen_q, n * kBlockN, alibi_raw_slope);
    }
    if constexpr (kMasked) { mask.apply(scores, tScS_rc, m_block, n); }

    cp_async_wait<0>();
    __syncthreads();  // V(n) landed; every warp is done reading K(n)
    if (n > range.n_min) {
      load_k(n - 1, false_type{});  // blocks below the last are whole
      cp_async_fence();
    }

    softmax.template update<kFirst>(scores, acc_o_rc, params.logit_scale_log2, kRescaleSlackLog2);

    if constexpr (kHasDropout) { apply_dropout(scores, tScS_rc, dropout_key, row0, n * kBlockN); }

    Tensor probs = convert_fragment<Element>(acc_s);
    Tensor tOrP = make_tensor(probs.data(), acc_layout_as_a_operand(probs.layout()));
    gemm_reg_smem(tiled_mma, acc_o, tOrP, tOrVt, tOsVt, smem_tiled_copy_v, smem_thr_copy_v);
  };

  // Three inlined step bodies: the first block (always masked: masking a whole block is
  // harmless and saves a copy of the step), masked blocks, and fully visible blocks in a
  // branch-free inner loop. Fewer copies keep the hot code in the instruction cache (with five,
  // ncu counted 2.7 "no instruction" stall cycles per issued instruction against FA2's 1.5);
  // a branch per fully visible block between the MMAs and the softmax costs more
  // (bench/NOTES.md, v3).
  int n_block = range.n_max - 1;
  step(n_block, true_type{}, true_type{});
  for (--n_block; n_block >= range.n_min;) {
    if (range.needs_mask(n_block)) {
      step(n_block, false_type{}, true_type{});
      --n_block;
    } else {
      for (const int stop = max(range.left_end, range.n_min); n_block >= stop; --n_block) {
        step(n_block, false_type{}, false_type{});
      }
    }
  }

  // Epilogue.
  const SeqInfo out_seq(params, batch);
  Tensor taccOcO = thr_mma.partition_C(cO);
  Tensor taccOcO_rc = make_tensor(taccOcO.data(), acc_layout_rowcol(taccOcO.layout()));
  float lse[kRowsPerThread];
  float sink[kRowsPerThread];
  CUTE_UNROLL
  for (int r = 0; r < kRowsPerThread; ++r) {
    // Splits leave the sinks to the combine kernel.
    sink[r] = (params.sinks == nullptr || is_split) ? -INFINITY : params.sinks[row_head(get<0>(taccOcO_rc(r, 0)))];
  }
  softmax.finalize(acc_o_rc, params.logit_scale, sink, kHasDropout ? params.dropout_scale : 1.f, empty_lse, lse);

  if (is_split) {
    // fp32 partials straight from registers, two adjacent columns per store.
    CUTE_UNROLL
    for (int r = 0; r < size<0>(acc_o_rc); ++r) {
      const int row = get<0>(taccOcO_rc(r, 0));
      if (row >= rows_left) { continue; }
      float* accum = params.out_accum + accum_row(out_seq, row) * kDimV;
      CUTE_UNROLL
      for (int n = 0; n < size<1>(acc_o_rc) / 2; ++n) {
        const int col = get<1>(taccOcO_rc(r, 2 * n));
        if (col < kDimV) {
          *reinterpret_cast<float2*>(accum + col) = make_float2(acc_o_rc(r, 2 * n), acc_o_rc(r, 2 * n + 1));
        }
      }
    }
  } else {
    // Stage O through shared memory (reusing the input buffers) for 16-byte stores.
    Tensor out = convert_fragment<Element>(acc_o);
    auto smem_tiled_copy_o = make_tiled_copy_C(typename Traits::SmemCopyAtomO{}, tiled_mma);
    auto smem_thr_copy_o = smem_tiled_copy_o.get_thread_slice(tid);
    Tensor taccOrO = smem_thr_copy_o.retile_S(out);
    Tensor taccOsO = smem_thr_copy_o.partition_D(sO);
    __syncthreads();  // every warp is done with Q, K and V before they are overwritten
    copy(smem_tiled_copy_o, taccOrO, taccOsO);
    __syncthreads();
    Tensor tOsO = gmem_thr_copy_o.partition_S(sO);
    Tensor tOrO = make_fragment_like<Element>(tOsO);
    copy(gmem_tiled_copy_o, tOsO, tOrO);
    if (group == 1) {
      Tensor tOgO = gmem_thr_copy_o.partition_D(gmem_out_tile(out_seq));
      copy_tile</*kGuardRows=*/true, /*kZeroFill=*/false, kDimV>(gmem_tiled_copy_o, tOrO, tOgO, tOcO, rows_left);
    } else {
      Tensor mO_cols = make_tensor(make_gmem_ptr(static_cast<Element*>(params.out)), Shape<Int<kBlockM>, Int<kPadV>>{},
                                   Stride<_0, _1>{});
      store_rows_indirect<kDimV>(gmem_tiled_copy_o, tOrO, gmem_thr_copy_o.partition_D(mO_cols), tOcO,
                                 [&](int r) { return out_row_offset(out_seq, r); });
    }
  }

  if ((is_split || params.lse != nullptr) && get<1>(taccOcO_rc(0, 0)) == 0) {
    // The lane that holds column 0 of a row writes its LSE.
    CUTE_UNROLL
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int row = get<0>(taccOcO_rc(r, 0));
      if (row < rows_left) { *lse_ptr(out_seq, row) = lse[r]; }
    }
  }
}

}  // namespace flashgen::sm80
