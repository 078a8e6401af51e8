// SM80-path forward attention: one CTA per (query block, head, batch).
//
// Q stays in shared memory for the whole CTA; K and V tiles are single-buffered but
// overlapped: V(n) streams in while S = Q K(n)^T runs, K(n-1) streams in while softmax and
// O += P V(n) run. Key blocks are visited from the last one down, so the blocks that need
// the element-wise mask (the partial tail, the causal diagonal) come first.
#pragma once

#include <cute/tensor.hpp>

#include "common/cute_utils.hpp"
#include "common/fwd_params.h"
#include "common/mask.hpp"
#include "common/online_softmax.hpp"
#include "sm80/sm80_fwd_traits.hpp"

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

template <class Traits, bool kIsCausal>
__global__ void __launch_bounds__(Traits::kNumThreads, 1) fwd_kernel(const __grid_constant__ FwdParams params) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  using Mask = AttentionMask<kIsCausal, kBlockM, kBlockN>;

  extern __shared__ __align__(128) char smem[];

  const int m_block = blockIdx.x;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int head_kv = head / params.group_size;
  const int tid = threadIdx.x;
  const int rows_left = params.seqlen_q - m_block * kBlockM;

  const Mask mask{params.seqlen_q, params.seqlen_k};
  const int n_block_max = mask.n_block_max(m_block);

  Tensor mQ = make_tensor(
      make_gmem_ptr(static_cast<Element const*>(params.q) + batch * params.q_batch_stride + head * params.q_head_stride),
      make_shape(params.seqlen_q, Int<kHeadDim>{}), make_stride(params.q_row_stride, _1{}));
  Tensor mK = make_tensor(
      make_gmem_ptr(static_cast<Element const*>(params.k) + batch * params.k_batch_stride + head_kv * params.k_head_stride),
      make_shape(params.seqlen_k, Int<kHeadDim>{}), make_stride(params.k_row_stride, _1{}));
  Tensor mV = make_tensor(
      make_gmem_ptr(static_cast<Element const*>(params.v) + batch * params.v_batch_stride + head_kv * params.v_head_stride),
      make_shape(params.seqlen_k, Int<kHeadDim>{}), make_stride(params.v_row_stride, _1{}));
  Tensor mO = make_tensor(
      make_gmem_ptr(static_cast<Element*>(params.out) + batch * params.out_batch_stride + head * params.out_head_stride),
      make_shape(params.seqlen_q, Int<kHeadDim>{}), make_stride(params.out_row_stride, _1{}));

  Tensor gQ = local_tile(mQ, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));  // (kBlockM, kHeadDim)
  Tensor gK = local_tile(mK, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));  // (kBlockN, kHeadDim, n)
  Tensor gV = local_tile(mV, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));  // (kBlockN, kHeadDim, n)
  Tensor gO = local_tile(mO, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));  // (kBlockM, kHeadDim)

  typename Traits::GmemTiledCopyO gmem_tiled_copy_o;
  auto gmem_thr_copy_o = gmem_tiled_copy_o.get_thread_slice(tid);
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor tOcO = gmem_thr_copy_o.partition_D(cO);
  Tensor tOgO = gmem_thr_copy_o.partition_D(gO);
  float* lse_row0 = params.lse == nullptr
                        ? nullptr
                        : params.lse + (int64_t(batch) * params.num_heads_q + head) * params.seqlen_q + m_block * kBlockM;

  if (n_block_max <= 0) {
    // No query row of this tile sees a key (causal with seqlen_q > seqlen_k): zeros, lse = +inf.
    Tensor zeros = make_fragment_like(tOgO);
    clear(zeros);
    copy_rows_guarded</*kZeroFill=*/false>(gmem_tiled_copy_o, zeros, tOgO, tOcO, rows_left);
    if (lse_row0 != nullptr) {
      for (int r = tid; r < kBlockM && r < rows_left; r += Traits::kNumThreads) { lse_row0[r] = INFINITY; }
    }
    return;
  }

  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem)), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(sQ.data() + size(sQ), typename Traits::SmemLayoutKV{});
  Tensor sV = make_tensor(sK.data() + size(sK), typename Traits::SmemLayoutKV{});
  Tensor sVt = make_tensor(sV.data(), typename Traits::SmemLayoutVt{});
  Tensor sO = make_tensor(sQ.data(), typename Traits::SmemLayoutO{});

  typename Traits::GmemTiledCopyQKV gmem_tiled_copy_qkv;
  auto gmem_thr_copy_qkv = gmem_tiled_copy_qkv.get_thread_slice(tid);
  Tensor tQgQ = gmem_thr_copy_qkv.partition_S(gQ);
  Tensor tQsQ = gmem_thr_copy_qkv.partition_D(sQ);
  Tensor tKgK = gmem_thr_copy_qkv.partition_S(gK);  // (CPY, CPY_N, CPY_K, n)
  Tensor tKsK = gmem_thr_copy_qkv.partition_D(sK);
  Tensor tVgV = gmem_thr_copy_qkv.partition_S(gV);  // (CPY, CPY_N, CPY_K, n)
  Tensor tVsV = gmem_thr_copy_qkv.partition_D(sV);
  Tensor tQcQ = gmem_thr_copy_qkv.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor tKVcKV = gmem_thr_copy_qkv.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));

  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tid);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);    // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_mma.partition_fragment_B(sK);    // (MMA, MMA_N, MMA_K)
  Tensor tOrVt = thr_mma.partition_fragment_B(sVt);  // (MMA, MMA_K=head_dim, MMA_N)
  Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_K)
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

  // Coordinates of each score element inside its (kBlockM, kBlockN) tile, for the mask.
  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));

  // Prologue: Q and the last key block.
  int n_block = n_block_max - 1;
  copy_rows_guarded</*kZeroFill=*/true>(gmem_tiled_copy_qkv, tQgQ, tQsQ, tQcQ, rows_left);
  copy_rows_guarded</*kZeroFill=*/true>(gmem_tiled_copy_qkv, tKgK(_, _, _, n_block), tKsK, tKVcKV,
                                        params.seqlen_k - n_block * kBlockN);
  cp_async_fence();

  clear(acc_o);
  constexpr int kRowsPerThread = decltype(size<0>(acc_o_rc))::value;
  OnlineSoftmax<kRowsPerThread> softmax;

  const int n_block_masked_min = mask.n_block_masked_min(m_block);

  auto step = [&](int n, auto is_first, auto needs_mask) __attribute__((always_inline)) {
    Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
    clear(acc_s);
    cp_async_wait<0>();
    __syncthreads();  // K(n) landed; every warp is done reading V(n+1)
    if constexpr (decltype(needs_mask)::value) {
      copy_rows_guarded</*kZeroFill=*/true>(gmem_tiled_copy_qkv, tVgV(_, _, _, n), tVsV, tKVcKV,
                                            params.seqlen_k - n * kBlockN);
    } else {
      copy(gmem_tiled_copy_qkv, tVgV(_, _, _, n), tVsV);
    }
    cp_async_fence();

    gemm_smem_smem(tiled_mma, acc_s, tSrQ, tSrK, tSsQ, tSsK, smem_tiled_copy_q, smem_tiled_copy_k,
                   smem_thr_copy_q, smem_thr_copy_k);
    Tensor scores = make_tensor(acc_s.data(), acc_layout_rowcol(acc_s.layout()));
    if constexpr (decltype(needs_mask)::value) { mask.apply(scores, tScS_rc, m_block, n); }

    cp_async_wait<0>();
    __syncthreads();  // V(n) landed; every warp is done reading K(n)
    if (n > 0) {
      // Blocks below the last one are whole: no row guard needed.
      copy(gmem_tiled_copy_qkv, tKgK(_, _, _, n - 1), tKsK);
      cp_async_fence();
    }

    softmax.template update<decltype(is_first)::value>(scores, acc_o_rc, params.softmax_scale_log2);

    Tensor probs = convert_fragment<Element>(acc_s);
    Tensor tOrP = make_tensor(probs.data(), acc_layout_as_a_operand(probs.layout()));
    gemm_reg_smem(tiled_mma, acc_o, tOrP, tOrVt, tOsVt, smem_tiled_copy_v, smem_thr_copy_v);
  };

  // The first visited block is masked when it is the partial tail or on the diagonal.
  if (n_block >= n_block_masked_min) {
    step(n_block, true_type{}, true_type{});
  } else {
    step(n_block, true_type{}, false_type{});
  }
  for (--n_block; n_block >= n_block_masked_min; --n_block) { step(n_block, false_type{}, true_type{}); }
  for (; n_block >= 0; --n_block) { step(n_block, false_type{}, false_type{}); }

  // Epilogue: normalise, stage O through shared memory (reusing Q's buffer) for 16-byte stores.
  float lse[kRowsPerThread];
  softmax.finalize(acc_o_rc, params.softmax_scale, lse);

  Tensor out = convert_fragment<Element>(acc_o);
  auto smem_tiled_copy_o = make_tiled_copy_C(typename Traits::SmemCopyAtomO{}, tiled_mma);
  auto smem_thr_copy_o = smem_tiled_copy_o.get_thread_slice(tid);
  Tensor taccOrO = smem_thr_copy_o.retile_S(out);
  Tensor taccOsO = smem_thr_copy_o.partition_D(sO);
  __syncthreads();  // every warp is done with the Q tile before it is overwritten
  copy(smem_tiled_copy_o, taccOrO, taccOsO);
  __syncthreads();

  Tensor tOsO = gmem_thr_copy_o.partition_S(sO);
  Tensor tOrO = make_fragment_like(tOgO);
  copy(gmem_tiled_copy_o, tOsO, tOrO);
  copy_rows_guarded</*kZeroFill=*/false>(gmem_tiled_copy_o, tOrO, tOgO, tOcO, rows_left);

  if (lse_row0 != nullptr) {
    Tensor taccOcO = thr_mma.partition_C(cO);
    Tensor taccOcO_rc = make_tensor(taccOcO.data(), acc_layout_rowcol(taccOcO.layout()));
    // The lane that holds column 0 of a row writes its LSE.
    if (get<1>(taccOcO_rc(0, 0)) == 0) {
      CUTE_UNROLL
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int row = get<0>(taccOcO_rc(r, 0));
        if (row < rows_left) { lse_row0[row] = lse[r]; }
      }
    }
  }
}

}  // namespace flashgen::sm80
