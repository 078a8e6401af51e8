// SM80-path backward attention: one CTA per (key block, KV head, batch entry).
//
// The CTA keeps its K and V block in shared memory and dK, dV in registers, and walks every
// (query head of its GQA group, query block) pair that sees its keys, so dK and dV are reduced
// over the group without atomics or a second pass. Per pair it recomputes P from the forward
// pass's LSE, forms dS = P * (dP - D) (D = rowsum(dO * O), from the preprocess kernel), adds
// P^T dO to dV and dS^T Q to dK, and adds dS K to an fp32 dQ accumulator in global memory
// (sm80_bwd_dq.hpp): with atomics, or in key-block order behind a per-query-block counter when
// deterministic.
// Q and dO are double-buffered: the next pair's tiles stream in while this one is processed.
#pragma once

#include <cute/tensor.hpp>

#include "common/bwd_params.h"
#include "common/cute_utils.hpp"
#include "common/dropout.hpp"
#include "common/logit_transforms.hpp"
#include "common/mask.hpp"
#include "common/seq_info.hpp"
#include "sm80/sm80_bwd_dq.hpp"
#include "sm80/sm80_bwd_traits.hpp"
#include "sm80/sm80_copy_gemm.hpp"

namespace flashgen::sm80 {

using namespace cute;

// The query blocks [m_lo, m_hi) whose key-block range holds key block n. A query block's range
// only moves right as the block index grows, so these blocks form an interval; the window
// bounds give a superset of it, trimmed with the mask policy's own ranges so that the two
// directions agree exactly (the deterministic dQ order relies on that).
template <int kBlockM, int kBlockN, class Mask>
CUTE_DEVICE void query_blocks_of_key_block(Mask const& mask, int n, int& m_lo, int& m_hi) {
  const int m_blocks = (mask.seqlen_q + kBlockM - 1) / kBlockM;
  const int d = mask.seqlen_k - mask.seqlen_q;
  m_lo = 0;
  m_hi = m_blocks;
  if (mask.window_right >= 0) { m_lo = max(0, floor_div(n * kBlockN - d - mask.window_right, kBlockM)); }
  if (mask.window_left >= 0) {
    // The block's last key as if the block were whole: a superset, even at the seqlen_k tail.
    const int last_key = (n + 1) * kBlockN - 1;
    m_hi = min(m_blocks, max(0, floor_div(last_key - d + mask.window_left, kBlockM) + 1));
  }
  auto sees = [&](int m) {
    const KeyBlockRange r = mask.blocks(m);
    return n >= r.n_min && n < r.n_max;
  };
  while (m_lo < m_hi && !sees(m_lo)) { ++m_lo; }
  while (m_hi > m_lo && !sees(m_hi - 1)) { --m_hi; }
}

// Deterministic dQ: the key blocks that see query block m add their parts one after another,
// behind a counter per (batch, query head, m). With a right-bounded window (causal) they add in
// decreasing key-block order and the CTAs are numbered highest key block first: block n's query
// blocks n, n + 1, ... (causal) are then each released by block n + 1 one step earlier (it has
// one query block fewer), so the CTAs run without waiting, where increasing order made block n
// wait for blocks 0..n-1 to pass its first query block (a wavefront: ~2.5x at 4k causal). The
// other masks keep increasing order. Either way a CTA waits only for CTAs of its (head, batch)
// with lower ranks, which BwdParams::key_order numbers (and so launches) before it, so every
// wait ends.
struct DqOrder {
  bool descending;
  CUTE_DEVICE DqOrder(bool deterministic, bool right_bounded) : descending(deterministic && right_bounded) {}
  // Key block of the rank-th CTA of its (head, batch) among n_blocks (BwdParams::key_order).
  CUTE_DEVICE int key_block(int rank, int n_blocks) const { return descending ? n_blocks - 1 - rank : rank; }
  CUTE_DEVICE int turn(KeyBlockRange const& r, int n) const { return descending ? r.n_max - 1 - n : n - r.n_min; }
  // The counter of (batch entry, query head h, query block m).
  CUTE_DEVICE static int* counter(BwdParams const& p, int batch, int h, int m) {
    return p.dq_semaphore + (int64_t(batch) * p.num_heads_q + h) * p.num_m_blocks + m;
  }
  // Spins (call from one thread) until `counter` reaches key block n's turn at query block m.
  template <class Mask>
  CUTE_DEVICE void wait_turn(int* counter, Mask const& mask, int m, int n) const {
    const int my_turn = turn(mask.blocks(m), n);
    while (*reinterpret_cast<volatile int*>(counter) != my_turn) {}
  }
};

// This CTA's (key block, KV head, batch entry) in the grid's order.
struct KeyBlockTile {
  int n_block, head_kv, batch;
};
CUTE_DEVICE KeyBlockTile key_block_tile(BwdParams const& params, DqOrder const& order, int index) {
  const auto c = params.key_order(index);
  return {order.key_block(c.rank, params.key_order.per_unit), c.unit % params.num_heads_kv,
          c.unit / params.num_heads_kv};
}

// The same view with its base pointer moved by `offset` elements.
template <class View>
CUTE_DEVICE View shifted(View view, int64_t offset) {
  view.data() = view.data() + offset;
  return view;
}

// A 4-byte global -> shared cp.async (completes with the caller's cp.async groups).
CUTE_DEVICE void cp_async_4(float* smem_dst, const float* gmem_src) {
  const uint32_t dst = uint32_t(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(gmem_src) : "memory");
}

template <class Traits, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi, bool kHasDropout>
__global__ void __launch_bounds__(Traits::kNumThreads, 1) bwd_kernel(const __grid_constant__ BwdParams params) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kPadQK = Traits::kPadQK;
  constexpr int kPadV = Traits::kPadV;
  constexpr int kDimQK = Traits::kHeadDimQK;
  constexpr int kDimV = Traits::kHeadDimV;
  using Mask = AttentionMask<kIsCausal, kBlockM, kBlockN>;

  extern __shared__ __align__(128) char smem[];

  const DqOrder dq_order(params.deterministic, kIsCausal || params.window_right >= 0);
  const KeyBlockTile tile = key_block_tile(params, dq_order, int(blockIdx.x));
  const int n_block = tile.n_block;
  const int head_kv = tile.head_kv;
  const int batch = tile.batch;
  const int tid = threadIdx.x;

  const SeqInfo seq(params, batch);
  if (n_block * kBlockN >= seq.seqlen_k) { return; }
  const int keys_left = seq.seqlen_k - n_block * kBlockN;
  const Mask mask(seq.seqlen_q, seq.seqlen_k, params.window_left, params.window_right, /*group=*/1);
  int m_lo, m_hi;
  query_blocks_of_key_block<kBlockM, kBlockN>(mask, n_block, m_lo, m_hi);
  const int blocks_per_head = m_hi - m_lo;
  const int num_items = blocks_per_head * params.group_size;  // (query head, query block) pairs

  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem)), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(sQ.data() + 2 * Traits::kStageElemsQ, typename Traits::SmemLayoutdO{});
  Tensor sK = make_tensor(sdO.data() + 2 * Traits::kStageElemsdO, typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(sK.data() + cosize(typename Traits::SmemLayoutK{}), typename Traits::SmemLayoutV{});
  Tensor sP = make_tensor(sV.data() + cosize(typename Traits::SmemLayoutV{}), typename Traits::SmemLayoutP{});
  Tensor sdS = make_tensor(sP.data() + cosize(typename Traits::SmemLayoutP{}), typename Traits::SmemLayoutP{});
  Tensor sQt = make_tensor(sQ.data(), typename Traits::SmemLayoutQt{});
  Tensor sdOt = make_tensor(sdO.data(), typename Traits::SmemLayoutdOt{});
  Tensor sKt = make_tensor(sK.data(), typename Traits::SmemLayoutKt{});
  Tensor sPt = make_tensor(sP.data(), typename Traits::SmemLayoutPt{});
  Tensor sdSt = make_tensor(sdS.data(), typename Traits::SmemLayoutPt{});
  // Per-stage row statistics of the query block: LSE then D, kBlockM floats each.
  float* s_stats = reinterpret_cast<float*>(smem + Traits::kSmemTileBytes);

  // ---- Global -> shared copies. ----
  using IOQK = typename Traits::IOQK;
  using IOV = typename Traits::IOV;
  typename IOQK::CopyAsync gmem_copy_qk;
  typename IOV::CopyAsync gmem_copy_v;
  auto gmem_thr_qk = gmem_copy_qk.get_thread_slice(tid);
  auto gmem_thr_v = gmem_copy_v.get_thread_slice(tid);
  // Stage-0 views; shifted() moves a view of sQ, sdO (or their transposes) to stage 1.
  Tensor tQsQ = gmem_thr_qk.partition_D(sQ);
  Tensor tdOsdO = gmem_thr_v.partition_D(sdO);
  Tensor tQcQ = gmem_thr_qk.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kPadQK>>{}));
  Tensor tdOcdO = gmem_thr_v.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kPadV>>{}));
  Tensor tKcK = gmem_thr_qk.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kPadQK>>{}));
  Tensor tVcV = gmem_thr_v.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kPadV>>{}));

  Element const* q_base = static_cast<Element const*>(params.q) + seq.q_offset;
  const int64_t do_offset = params.cu_seqlens_q != nullptr ? int64_t(seq.row_base) * params.dout_row_stride
                                                           : int64_t(batch) * params.dout_batch_stride;
  Element const* do_base = static_cast<Element const*>(params.dout) + do_offset;

  // Items: the query heads of the group in turn, each over the query blocks [m_lo, m_hi); (h, m)
  // advance as counters. The per-thread global partitions are built once, for the group's
  // first head and query block 0, and shifted to an item's tiles by a scalar offset.
  const int first_head = head_kv * params.group_size;
  Tensor tQgQ = gmem_thr_qk.partition_S(local_tile(
      make_tensor(make_gmem_ptr(q_base + first_head * params.q_head_stride), make_shape(seq.seqlen_q, Int<kPadQK>{}),
                  make_stride(params.q_row_stride, _1{})),
      Shape<Int<kBlockM>, Int<kPadQK>>{}, make_coord(0, 0)));
  Tensor tdOgdO = gmem_thr_v.partition_S(local_tile(
      make_tensor(make_gmem_ptr(do_base + first_head * params.dout_head_stride), make_shape(seq.seqlen_q, Int<kPadV>{}),
                  make_stride(params.dout_row_stride, _1{})),
      Shape<Int<kBlockM>, Int<kPadV>>{}, make_coord(0, 0)));
  auto load_q_do = [&](int h, int m, int stage) {
    Tensor src_q = shifted(tQgQ, int64_t(h - first_head) * params.q_head_stride +
                                      int64_t(m) * kBlockM * params.q_row_stride);
    Tensor src_do = shifted(tdOgdO, int64_t(h - first_head) * params.dout_head_stride +
                                         int64_t(m) * kBlockM * params.dout_row_stride);
    const int rows = seq.seqlen_q - m * kBlockM;
    Tensor dst_q = shifted(tQsQ, stage * Traits::kStageElemsQ);
    Tensor dst_do = shifted(tdOsdO, stage * Traits::kStageElemsdO);
    if (rows >= kBlockM) {  // a whole block: no row guards (the padded columns were zeroed once)
      copy_tile</*kGuardRows=*/false, /*kZeroFill=*/false, kDimQK>(gmem_copy_qk, src_q, dst_q, tQcQ, rows);
      copy_tile</*kGuardRows=*/false, /*kZeroFill=*/false, kDimV>(gmem_copy_v, src_do, dst_do, tdOcdO, rows);
    } else {
      copy_tile</*kGuardRows=*/true, /*kZeroFill=*/true, kDimQK>(gmem_copy_qk, src_q, dst_q, tQcQ, rows);
      copy_tile</*kGuardRows=*/true, /*kZeroFill=*/true, kDimV>(gmem_copy_v, src_do, dst_do, tdOcdO, rows);
    }
    // The block's LSE and D ride along; rows past the sequence get LSE = +inf (P = 0) and D = 0.
    const float* lse_head = params.lse + seq.lse_offset + h * params.lse_head_stride + m * kBlockM;
    const float* d_head = params.softmax_d + int64_t(h) * params.total_q + seq.row_base + m * kBlockM;
    float* stats = s_stats + stage * 2 * kBlockM;
    for (int i = tid; i < kBlockM; i += Traits::kNumThreads) {
      if (i < rows) {
        cp_async_4(stats + i, lse_head + i);
        cp_async_4(stats + kBlockM + i, d_head + i);
      } else {
        stats[i] = INFINITY;
        stats[kBlockM + i] = 0.f;
      }
    }
  };

  {
    Tensor mK = make_tensor(make_gmem_ptr(static_cast<Element const*>(params.k) + seq.k_offset +
                                          head_kv * params.k_head_stride),
                            make_shape(seq.seqlen_k, Int<kPadQK>{}), make_stride(params.k_row_stride, _1{}));
    Tensor mV = make_tensor(make_gmem_ptr(static_cast<Element const*>(params.v) + seq.v_offset +
                                          head_kv * params.v_head_stride),
                            make_shape(seq.seqlen_k, Int<kPadV>{}), make_stride(params.v_row_stride, _1{}));
    Tensor gK = local_tile(mK, Shape<Int<kBlockN>, Int<kPadQK>>{}, make_coord(n_block, 0));
    Tensor gV = local_tile(mV, Shape<Int<kBlockN>, Int<kPadV>>{}, make_coord(n_block, 0));
    copy_tile<true, true, kDimQK>(gmem_copy_qk, gmem_thr_qk.partition_S(gK), gmem_thr_qk.partition_D(sK), tKcK,
                                  keys_left);
    copy_tile<true, true, kDimV>(gmem_copy_v, gmem_thr_v.partition_S(gV), gmem_thr_v.partition_D(sV), tVcV,
                                 keys_left);
  }
  // The padded head-dim columns of both stages are zeroed once; whole-block loads skip them.
  if constexpr (kDimQK % 32 != 0 || kDimV % 32 != 0) {
    for (int stage = 0; stage < 2; ++stage) {
      Tensor q_stage = shifted(tQsQ, stage * Traits::kStageElemsQ);
      Tensor do_stage = shifted(tdOsdO, stage * Traits::kStageElemsdO);
      CUTE_UNROLL
      for (int i = 0; i < size(q_stage); ++i) {
        if (get<1>(tQcQ(i)) >= kDimQK) { q_stage(i) = Element(0); }
      }
      CUTE_UNROLL
      for (int i = 0; i < size(do_stage); ++i) {
        if (get<1>(tdOcdO(i)) >= kDimV) { do_stage(i) = Element(0); }
      }
    }
  }
  if (num_items > 0) { load_q_do(first_head, m_lo, 0); }
  cp_async_fence();

  // ---- MMAs and their shared -> register copies. ----
  typename Traits::TiledMmaSdP mma_sdp;
  auto thr_sdp = mma_sdp.get_thread_slice(tid);
  Tensor tSrQ = thr_sdp.partition_fragment_A(sQ);
  Tensor tSrK = thr_sdp.partition_fragment_B(sK);
  Tensor tdPrdO = thr_sdp.partition_fragment_A(sdO);
  Tensor tdPrV = thr_sdp.partition_fragment_B(sV);
  auto copy_sdp_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_sdp);
  auto thr_sdp_a = copy_sdp_a.get_thread_slice(tid);
  auto copy_sdp_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma_sdp);
  auto thr_sdp_b = copy_sdp_b.get_thread_slice(tid);
  Tensor tSsQ = thr_sdp_a.partition_S(sQ);
  Tensor tdPsdO = thr_sdp_a.partition_S(sdO);
  Tensor tSsK = thr_sdp_b.partition_S(sK);
  Tensor tdPsV = thr_sdp_b.partition_S(sV);
  auto copy_p = make_tiled_copy_C(typename Traits::SmemCopyAtomStore{}, mma_sdp);
  auto thr_copy_p = copy_p.get_thread_slice(tid);
  Tensor tPsP = thr_copy_p.partition_D(sP);
  Tensor tPsdS = thr_copy_p.partition_D(sdS);
  Tensor tScS = thr_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));

  typename Traits::TiledMmadKV mma_dkv;
  auto thr_dkv = mma_dkv.get_thread_slice(tid);
  Tensor tdVrPt = thr_dkv.partition_fragment_A(sPt);
  Tensor tdVrdOt = thr_dkv.partition_fragment_B(sdOt);
  Tensor tdKrdSt = thr_dkv.partition_fragment_A(sdSt);
  Tensor tdKrQt = thr_dkv.partition_fragment_B(sQt);
  auto copy_dkv_a = make_tiled_copy_A(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
  auto thr_dkv_a = copy_dkv_a.get_thread_slice(tid);
  auto copy_dkv_b = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
  auto thr_dkv_b = copy_dkv_b.get_thread_slice(tid);
  Tensor tdVsPt = thr_dkv_a.partition_S(sPt);
  Tensor tdKsdSt = thr_dkv_a.partition_S(sdSt);
  Tensor tdVsdOt = thr_dkv_b.partition_S(sdOt);
  Tensor tdKsQt = thr_dkv_b.partition_S(sQt);
  Tensor acc_dk = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kPadQK>>{});
  Tensor acc_dv = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kPadV>>{});
  clear(acc_dk);
  clear(acc_dv);

  typename Traits::TiledMmadQ mma_dq;
  auto thr_dq = mma_dq.get_thread_slice(tid);
  Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);
  Tensor tdQrKt = thr_dq.partition_fragment_B(sKt);
  auto copy_dq_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_dq);
  auto thr_dq_a = copy_dq_a.get_thread_slice(tid);
  auto copy_dq_b = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dq);
  auto thr_dq_b = copy_dq_b.get_thread_slice(tid);
  Tensor tdQsdS = thr_dq_a.partition_S(sdS);
  Tensor tdQsKt = thr_dq_b.partition_S(sKt);

  constexpr int kRows = decltype(size<0>(tScS_rc))::value;
  const float scale_log2 = params.logit_scale_log2;

  // issue_next: starts the next item's Q / dO loads into the other stage. Called once the dV
  // GEMM is issued rather than at the step's start: +5-6% at head dim 128 (bench/NOTES.md,
  // session 18); FA2's split (dO there, Q after the dQ GEMM) and both after the dQ GEMM measured
  // slower (session 19).
  auto step = [&](int h, int m, int stage, auto needs_mask, auto&& issue_next) __attribute__((always_inline)) {
    constexpr bool kMasked = decltype(needs_mask)::value;

    Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    clear(acc_dp);
    gemm_smem_smem(mma_sdp, acc_s, tSrQ, tSrK, shifted(tSsQ, stage * Traits::kStageElemsQ), tSsK, copy_sdp_a, copy_sdp_b, thr_sdp_a,
                   thr_sdp_b);
    gemm_smem_smem(mma_sdp, acc_dp, tdPrdO, tdPrV, shifted(tdPsdO, stage * Traits::kStageElemsdO), tdPsV, copy_sdp_a, copy_sdp_b,
                   thr_sdp_a, thr_sdp_b);
    Tensor s = make_tensor(acc_s.data(), acc_layout_rowcol(acc_s.layout()));
    Tensor dp = make_tensor(acc_dp.data(), acc_layout_rowcol(acc_dp.layout()));

    float lse_log2[kRows];
    float d_row[kRows];
    const float* stats = s_stats + stage * 2 * kBlockM;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const int row = get<0>(tScS_rc(r, 0));
      lse_log2[r] = stats[row] * float(M_LOG2E);
      d_row[r] = stats[kBlockM + row];
    }

    Tensor dtanh = make_tensor<float>(s.layout());
    if constexpr (kHasSoftcap) {
      CUTE_UNROLL
      for (int i = 0; i < size(s); ++i) {
        const float th = fast_tanh(s(i) * params.softcap_prescale);
        s(i) = th;
        dtanh(i) = 1.f - th * th;
      }
    }
    if constexpr (kHasAlibi) {
      const float raw_slope = params.alibi_slopes[batch * params.alibi_batch_stride + h] / params.logit_scale;
      apply_alibi(s, tScS_rc, m * kBlockM + seq.seqlen_k - seq.seqlen_q, n_block * kBlockN, raw_slope);
    }
    if constexpr (kMasked) { mask.apply(s, tScS_rc, m, n_block); }

    const DropoutKey dropout_key(params.philox_seed, params.philox_offset, batch, params.num_heads_q, h,
                                 params.dropout_threshold);
    CUTE_UNROLL
    for (int mi = 0; mi < size<1>(acc_s); ++mi) {
      CUTE_UNROLL
      for (int ni = 0; ni < size<2>(acc_s); ++ni) {
        // The four elements of one m16n8 fragment (rows r, r + 8; columns c, c + 1) share one
        // Philox draw of the forward pass's dropout scheme (common/dropout.hpp).
        [[maybe_unused]] Philox4x32 bits{};
        if constexpr (kHasDropout) {
          auto c0 = tScS_rc(make_coord(0, mi), make_coord(0, ni));
          bits = dropout_key.group_bits(m * kBlockM + get<0>(c0), n_block * kBlockN + get<1>(c0));
        }
        CUTE_UNROLL
        for (int hr = 0; hr < 2; ++hr) {
          CUTE_UNROLL
          for (int hc = 0; hc < 2; ++hc) {
            const auto rc = make_coord(make_coord(hr, mi), make_coord(hc, ni));
            const int r = hr + 2 * mi;
            const float p = fast_exp2(s(rc) * scale_log2 - lse_log2[r]);
            float dp_eff = dp(rc);
            bool keep = true;
            if constexpr (kHasDropout) {
              auto c = tScS_rc(rc);
              const int slot = DropoutKey::slot(m * kBlockM + get<0>(c), n_block * kBlockN + get<1>(c));
              keep = DropoutKey::uniform16(bits, slot) >= dropout_key.threshold;
              dp_eff = keep ? dp_eff * params.dropout_scale : 0.f;
            }
            float ds = p * (dp_eff - d_row[r]);
            if constexpr (kHasSoftcap) { ds *= dtanh(rc); }
            s(rc) = keep ? p : 0.f;
            dp(rc) = ds;
          }
        }
      }
    }

    Tensor rP = convert_fragment<Element>(acc_s);
    Tensor rdS = convert_fragment<Element>(acc_dp);
    copy(copy_p, thr_copy_p.retile_S(rP), tPsP);
    copy(copy_p, thr_copy_p.retile_S(rdS), tPsdS);
    __syncthreads();  // P and dS visible to every warp

    gemm_smem_smem(mma_dkv, acc_dv, tdVrPt, tdVrdOt, tdVsPt, shifted(tdVsdOt, stage * Traits::kStageElemsdO),
                   copy_dkv_a, copy_dkv_b, thr_dkv_a, thr_dkv_b);
    issue_next();
    int* semaphore = nullptr;
    if (params.deterministic) {
      // Key blocks add their dQ parts in DqOrder's order. Waited for ahead of the dQ GEMM, so
      // that no branch separates the GEMM's last MMAs from the reductions of their results.
      semaphore = DqOrder::counter(params, batch, h, m);
      if (tid == 0) { dq_order.wait_turn(semaphore, mask, m, n_block); }
      __syncthreads();
      __threadfence();
    }
    Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kPadQK>>{});
    clear(acc_dq);
    gemm_smem_smem(mma_dq, acc_dq, tdQrdS, tdQrKt, tdQsdS, tdQsKt, copy_dq_a, copy_dq_b, thr_dq_a, thr_dq_b);
    // The dQ reductions, in the tile's own order (DqTile: 128 or 256 contiguous bytes per warp
    // and instruction; no row guards, a partial block's tile owns its rows past the sequence, which
    // get zeros), and the dK GEMM in one basic block, so that ptxas spreads the REDs among the
    // GEMM's MMAs (as in FA2's kernel). The deterministic order's counter is advanced after it.
    DqTile<Traits>(params, seq, batch, h, m, tid).add(acc_dq);
    gemm_smem_smem(mma_dkv, acc_dk, tdKrdSt, tdKrQt, tdKsdSt, shifted(tdKsQt, stage * Traits::kStageElemsQ),
                   copy_dkv_a, copy_dkv_b, thr_dkv_a, thr_dkv_b);
    if (params.deterministic) {
      __threadfence();
      __syncthreads();
      if (tid == 0) { atomicAdd(semaphore, 1); }
    }
  };

  // Query blocks [full_lo, full_hi) see key block n whole (no element mask); like the visible
  // blocks, they form an interval.
  int full_lo = m_lo, full_hi = m_hi;
  while (full_lo < full_hi && mask.blocks(full_lo).needs_mask(n_block)) { ++full_lo; }
  while (full_hi > full_lo && mask.blocks(full_hi - 1).needs_mask(n_block)) { --full_hi; }

  int h = first_head, m = m_lo;
  for (int t = 0; t < num_items; ++t) {
    cp_async_wait<0>();  // this item's Q and dO (and K, V at t = 0), the only group in flight
    // One barrier: the stage landed for every warp, and every warp is done with the previous
    // item (its stage, P and dS), so the next item may stream into the other stage.
    __syncthreads();
    const int next_m = m + 1 < m_hi ? m + 1 : m_lo;
    const int next_h = m + 1 < m_hi ? h : h + 1;
    auto issue_next = [&]() __attribute__((always_inline)) {
      if (t + 1 < num_items) {
        load_q_do(next_h, next_m, (t + 1) & 1);
        cp_async_fence();
      }
    };
    if (m >= full_lo && m < full_hi) {
      step(h, m, t & 1, false_type{}, issue_next);
    } else {
      step(h, m, t & 1, true_type{}, issue_next);
    }
    h = next_h;
    m = next_m;
  }

  // ---- Epilogue: dK = softmax_scale * sum dS^T Q (the raw-score chain), dV = sum P^T dO. ----
  CUTE_UNROLL
  for (int i = 0; i < size(acc_dk); ++i) { acc_dk(i) *= params.softmax_scale; }
  if constexpr (kHasDropout) {
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dv); ++i) { acc_dv(i) *= params.dropout_scale; }
  }
  Tensor rdK = convert_fragment<Element>(acc_dk);
  Tensor rdV = convert_fragment<Element>(acc_dv);
  Tensor sdK = make_tensor(sQ.data(), typename Traits::SmemLayoutdK{});
  Tensor sdV = make_tensor(sdO.data(), typename Traits::SmemLayoutdV{});
  auto copy_dkv_store = make_tiled_copy_C(typename Traits::SmemCopyAtomStore{}, mma_dkv);
  auto thr_dkv_store = copy_dkv_store.get_thread_slice(tid);
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with Q and dO
  copy(copy_dkv_store, thr_dkv_store.retile_S(rdK), thr_dkv_store.partition_D(sdK));
  copy(copy_dkv_store, thr_dkv_store.retile_S(rdV), thr_dkv_store.partition_D(sdV));
  __syncthreads();

  const bool varlen_k = params.cu_seqlens_k != nullptr;
  Element* dk_base = static_cast<Element*>(params.dk) + head_kv * params.dk_head_stride +
                     (varlen_k ? int64_t(seq.key_row_base) * params.dk_row_stride : int64_t(batch) * params.dk_batch_stride);
  Element* dv_base = static_cast<Element*>(params.dv) + head_kv * params.dv_head_stride +
                     (varlen_k ? int64_t(seq.key_row_base) * params.dv_row_stride : int64_t(batch) * params.dv_batch_stride);
  Tensor gdK = local_tile(make_tensor(make_gmem_ptr(dk_base), make_shape(seq.seqlen_k, Int<kPadQK>{}),
                                      make_stride(params.dk_row_stride, _1{})),
                          Shape<Int<kBlockN>, Int<kPadQK>>{}, make_coord(n_block, 0));
  Tensor gdV = local_tile(make_tensor(make_gmem_ptr(dv_base), make_shape(seq.seqlen_k, Int<kPadV>{}),
                                      make_stride(params.dv_row_stride, _1{})),
                          Shape<Int<kBlockN>, Int<kPadV>>{}, make_coord(n_block, 0));
  typename IOQK::CopyStore store_qk;
  typename IOV::CopyStore store_v;
  auto thr_store_qk = store_qk.get_thread_slice(tid);
  auto thr_store_v = store_v.get_thread_slice(tid);
  Tensor tdKsdK = thr_store_qk.partition_S(sdK);
  Tensor tdKrdK = make_fragment_like<Element>(tdKsdK);
  copy(store_qk, tdKsdK, tdKrdK);
  Tensor tdVsdV = thr_store_v.partition_S(sdV);
  Tensor tdVrdV = make_fragment_like<Element>(tdVsdV);
  copy(store_v, tdVsdV, tdVrdV);
  copy_tile</*kGuardRows=*/true, /*kZeroFill=*/false, kDimQK>(store_qk, tdKrdK, thr_store_qk.partition_D(gdK), tKcK,
                                                              keys_left);
  copy_tile</*kGuardRows=*/true, /*kZeroFill=*/false, kDimV>(store_v, tdVrdV, thr_store_v.partition_D(gdV), tVcV,
                                                             keys_left);
}

}  // namespace flashgen::sm80
