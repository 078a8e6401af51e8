// Hopper backward attention, first version (work in progress: compiled, not yet run on a GPU).
//
// One CTA per (key block of 128, KV head, batch entry), two warpgroups of 64 keys each, no warp
// specialization yet: thread 0 issues TMA loads (K and V once, Q and dO double-buffered per
// step) and everyone waits on their mbarriers. Each step is one (query head of the GQA group,
// query block of 64) that sees the keys: S^T = K Q^T and dP^T = V dO^T by wgmma from shared
// memory; P^T = exp(S^T - LSE) and dS^T = P^T (dP^T - D) in registers; dV += P^T dO and
// dK += dS^T Q by wgmma with the A operand in registers and Q, dO read through transposed
// (MN-major) views; dS goes to shared memory for dQ = dS K, which the warpgroups split along
// head_dim and add to the fp32 dQ accumulator with atomics. D and the dQ conversion come from
// the SM80 path's pre- and post-processing kernels.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "common/bwd_params.h"
#include "common/cute_utils.hpp"
#include "common/mask.hpp"
#include "common/seq_info.hpp"
#include "sm80/sm80_bwd_kernel.hpp"
#include "sm90/sm90_bwd_traits.hpp"
#include "sm90/sm90_fragment.hpp"

namespace flashgen::sm90 {

using namespace cute;

template <class Traits>
struct BwdKernelParams {
  BwdParams bwd;
  typename Traits::TmaQ tma_q;
  typename Traits::TmaQ tma_do;
  typename Traits::TmaK tma_k;
  typename Traits::TmaK tma_v;
  int32_t q_rows, q_batches;
  int32_t k_rows, k_batches;
};

template <class Traits, bool kIsCausal>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    bwd_kernel(const __grid_constant__ BwdKernelParams<Traits> kp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Element = typename Traits::Element;
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDim = Traits::kHeadDim;
  using Mask = AttentionMask<kIsCausal, kBlockM, kBlockN>;
  BwdParams const& params = kp.bwd;
  const int n_block = blockIdx.x;
  const int head_kv = blockIdx.y;
  const int batch = blockIdx.z;
  const bool varlen = params.cu_seqlens_q != nullptr;
  const SeqInfo seq(params, batch);
  if (n_block * kBlockN >= seq.seqlen_k) { return; }  // this entry has fewer key blocks

  extern __shared__ __align__(1024) char smem_raw[];
  auto& storage = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
  Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQ{});     // (M, d, stages)
  Tensor sdO = make_tensor(make_smem_ptr(storage.dout.data()), typename Traits::SmemLayoutQ{});  // (M, d, stages)
  Tensor sQt = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQt{});    // (d, M, stages)
  Tensor sdOt = make_tensor(make_smem_ptr(storage.dout.data()), typename Traits::SmemLayoutQt{});
  Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});      // (N, d)
  Tensor sV = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutK{});      // (N, d)
  Tensor sKt = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutKt{});    // (d, N)
  Tensor sdS = make_tensor(make_smem_ptr(storage.ds.data()), typename Traits::SmemLayoutdS{});   // (M, N)
  Tensor sdSt = make_tensor(make_smem_ptr(storage.ds.data()), typename Traits::SmemLayoutdSt{}); // (N, M)

  const int tid = threadIdx.x;
  const bool leader = tid == 0;
  if (leader) {
    FullBarrier::init(&storage.kv_full, /*arrive_count=*/1);
    for (int s = 0; s < Traits::kStages; ++s) { FullBarrier::init(&storage.qdo_full[s], /*arrive_count=*/1); }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  const Mask mask(seq.seqlen_q, seq.seqlen_k, params.window_left, params.window_right, /*group=*/1);
  int m_lo = 0, m_hi = 0;
  sm80::query_blocks_of_key_block<kBlockM, kBlockN>(mask, n_block, m_lo, m_hi);
  const int m_count = max(0, m_hi - m_lo);
  const int steps = m_count * params.group_size;  // (query head of the group, query block)

  Tensor mQ = kp.tma_q.get_tma_tensor(make_shape(kp.q_rows, kDim, params.num_heads_q, kp.q_batches));
  Tensor mdO = kp.tma_do.get_tma_tensor(make_shape(kp.q_rows, kDim, params.num_heads_q, kp.q_batches));
  Tensor mK = kp.tma_k.get_tma_tensor(make_shape(kp.k_rows, kDim, params.num_heads_kv, kp.k_batches));
  Tensor mV = kp.tma_v.get_tma_tensor(make_shape(kp.k_rows, kDim, params.num_heads_kv, kp.k_batches));
  const int q_row0 = varlen ? seq.row_base : 0;
  const int q_batch = varlen ? 0 : batch;
  auto step_head = [&](int step) { return head_kv * params.group_size + step / m_count; };
  auto step_block = [&](int step) { return m_lo + step % m_count; };

  // Thread 0: Q and dO of `step` into stage step % 2 (free: the previous step's end barrier).
  auto issue_q_do = [&](int step) {
    const int stage = step % Traits::kStages;
    const int h = step_head(step);
    Tensor gQ = local_tile(domain_offset(make_coord(q_row0, _0{}), mQ(_, _, h, q_batch)),
                           Shape<Int<kBlockM>, Int<kDim>>{}, make_coord(step_block(step), _0{}));
    Tensor gdO = local_tile(domain_offset(make_coord(q_row0, _0{}), mdO(_, _, h, q_batch)),
                            Shape<Int<kBlockM>, Int<kDim>>{}, make_coord(step_block(step), _0{}));
    auto q_part = tma_partition(kp.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
    auto do_part = tma_partition(kp.tma_do, _0{}, Layout<_1>{}, group_modes<0, 2>(sdO), group_modes<0, 2>(gdO));
    FullBarrier::arrive_and_expect_tx(&storage.qdo_full[stage], 2 * Traits::kQBytes);
    copy(kp.tma_q.with(storage.qdo_full[stage]), get<0>(q_part), get<1>(q_part)(_, stage));
    copy(kp.tma_do.with(storage.qdo_full[stage]), get<0>(do_part), get<1>(do_part)(_, stage));
  };
  if (leader) {
    Tensor gK = local_tile(domain_offset(make_coord(seq.key_row_base, _0{}), mK(_, _, head_kv, seq.kv_batch)),
                           Shape<Int<kBlockN>, Int<kDim>>{}, make_coord(n_block, _0{}));
    Tensor gV = local_tile(domain_offset(make_coord(seq.key_row_base, _0{}), mV(_, _, head_kv, seq.kv_batch)),
                           Shape<Int<kBlockN>, Int<kDim>>{}, make_coord(n_block, _0{}));
    auto k_part = tma_partition(kp.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
    auto v_part = tma_partition(kp.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));
    FullBarrier::arrive_and_expect_tx(&storage.kv_full, 2 * Traits::kKBytes);
    copy(kp.tma_k.with(storage.kv_full), get<0>(k_part), get<1>(k_part));
    copy(kp.tma_v.with(storage.kv_full), get<0>(v_part), get<1>(v_part));
    if (steps > 0) { issue_q_do(0); }
  }

  typename Traits::TiledMmaSdP mma_sdp;
  typename Traits::TiledMmadKV mma_dkv;
  typename Traits::TiledMmadQ mma_dq;
  auto thr_sdp = mma_sdp.get_thread_slice(tid);
  auto thr_dkv = mma_dkv.get_thread_slice(tid);
  auto thr_dq = mma_dq.get_thread_slice(tid);
  Tensor tSrK = thr_sdp.partition_fragment_A(sK);     // S^T's A: K
  Tensor tSrQ = thr_sdp.partition_fragment_B(sQ);     // S^T's B: Q, per stage
  Tensor tdPrV = thr_sdp.partition_fragment_A(sV);    // dP^T's A: V
  Tensor tdPrdO = thr_sdp.partition_fragment_B(sdO);  // dP^T's B: dO, per stage
  Tensor tdVrdOt = thr_dkv.partition_fragment_B(sdOt);  // dV's B: dO^T, per stage
  Tensor tdKrQt = thr_dkv.partition_fragment_B(sQt);    // dK's B: Q^T, per stage
  Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);
  Tensor tdQrKt = thr_dq.partition_fragment_B(sKt);

  Tensor acc_dk = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kDim>>{});
  Tensor acc_dv = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kDim>>{});
  clear(acc_dk);
  clear(acc_dv);
  // (keys, queries) coordinates of this thread's S^T elements.
  Tensor tScS = thr_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kBlockM>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));
  using SFragment = decltype(partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{}));
  Tensor tP = make_tensor<Element>(acc_layout_as_a_operand(SFragment{}.layout()));
  Tensor tdS = make_tensor<Element>(acc_layout_as_a_operand(SFragment{}.layout()));
  constexpr int kCols = decltype(size<1>(acc_layout_rowcol(SFragment{}.layout())))::value;
  auto smem_copy_ds = make_tiled_copy_C(Copy_Atom<DefaultCopy, Element>{}, mma_sdp);
  auto smem_thr_copy_ds = smem_copy_ds.get_thread_slice(tid);
  Tensor tdQcdQ = thr_dq.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kDim>>{}));

  const float scale_log2 = params.softmax_scale * float(M_LOG2E);
  const int key0 = n_block * kBlockN;
  const int diag_shift = seq.seqlen_k - seq.seqlen_q;
  FullBarrier::wait(&storage.kv_full, 0);

  for (int step = 0; step < steps; ++step) {
    const int stage = step % Traits::kStages;
    if (leader && step + 1 < steps) { issue_q_do(step + 1); }
    const int h = step_head(step);
    const int m = step_block(step);
    const int query0 = m * kBlockM;

    // LSE (as a log2 offset) and D of this thread's query columns; rows past the end read +inf
    // and 0, so their P is 0.
    float lse_log2[kCols], d_col[kCols];
    const float* lse_head = params.lse + seq.lse_offset + int64_t(h) * params.lse_head_stride;
    const float* d_head = params.softmax_d + int64_t(h) * params.total_q + seq.row_base;
    CUTE_UNROLL
    for (int c = 0; c < kCols; ++c) {
      const int q = query0 + get<1>(tScS_rc(0, c));
      const bool in = q < seq.seqlen_q;
      lse_log2[c] = in ? lse_head[q] * float(M_LOG2E) : INFINITY;
      d_col[c] = in ? d_head[q] : 0.f;
    }

    FullBarrier::wait(&storage.qdo_full[stage], (step / Traits::kStages) & 1);
    Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
    Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
    wgmma</*kZeroInit=*/true>(mma_sdp, tSrK, tSrQ(_, _, _, stage), acc_s);
    wgmma</*kZeroInit=*/true>(mma_sdp, tdPrV, tdPrdO(_, _, _, stage), acc_dp);
    warpgroup_wait<0>();

    Tensor s = make_tensor(acc_s.data(), acc_layout_rowcol(acc_s.layout()));    // (keys, queries)
    Tensor dp = make_tensor(acc_dp.data(), acc_layout_rowcol(acc_dp.layout()));
    CUTE_UNROLL
    for (int r = 0; r < size<0>(s); ++r) {
      const int key = key0 + get<0>(tScS_rc(r, 0));
      CUTE_UNROLL
      for (int c = 0; c < kCols; ++c) {
        const int diag = query0 + get<1>(tScS_rc(r, c)) + diag_shift;  // the query's aligned key
        const bool visible = key < seq.seqlen_k && (mask.window_right < 0 || key <= diag + mask.window_right) &&
                             (mask.window_left < 0 || key >= diag - mask.window_left);
        const float p = visible ? fast_exp2(s(r, c) * scale_log2 - lse_log2[c]) : 0.f;
        s(r, c) = p;
        dp(r, c) = p * (dp(r, c) - d_col[c]);
      }
    }
    convert_fragment_into(acc_s, tP);
    convert_fragment_into(acc_dp, tdS);
    wgmma</*kZeroInit=*/false>(mma_dkv, tP, tdVrdOt(_, _, _, stage), acc_dv);
    wgmma</*kZeroInit=*/false>(mma_dkv, tdS, tdKrQt(_, _, _, stage), acc_dk);

    // dS to shared memory (the same registers in the accumulator's order), visible to wgmma's
    // async proxy, then dQ = dS K.
    Tensor tdS_c = make_tensor(tdS.data(), SFragment{}.layout());
    copy(smem_copy_ds, smem_thr_copy_ds.retile_S(tdS_c), smem_thr_copy_ds.partition_D(sdSt));
    cutlass::arch::fence_view_async_shared();
    __syncthreads();
    Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kDim>>{});
    wgmma</*kZeroInit=*/true>(mma_dq, tdQrdS, tdQrKt, acc_dq);
    warpgroup_wait<0>();  // dQ, and the dV / dK products that read tP and tdS

    float* dq_head = params.dq_accum + (int64_t(seq.row_base) * params.num_heads_q + h) * params.dq_accum_dim;
    const int64_t dq_row_stride = int64_t(params.num_heads_q) * params.dq_accum_dim;
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dq); ++i) {
      const int q = query0 + get<0>(tdQcdQ(i));
      if (q < seq.seqlen_q) { atomicAdd(dq_head + q * dq_row_stride + get<1>(tdQcdQ(i)), acc_dq(i)); }
    }
    __syncthreads();  // Q, dO of this stage and dS are free
  }

  // dK (times the softmax scale) and dV, straight from registers, two columns per store.
  Tensor dk_rc = make_tensor(acc_dk.data(), acc_layout_rowcol(acc_dk.layout()));
  Tensor dv_rc = make_tensor(acc_dv.data(), acc_layout_rowcol(acc_dv.layout()));
  Tensor tKVc = thr_dkv.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kDim>>{}));
  Tensor tKVc_rc = make_tensor(tKVc.data(), acc_layout_rowcol(tKVc.layout()));
  auto* dk = static_cast<Element*>(params.dk) + (varlen ? int64_t(seq.key_row_base) * params.dk_row_stride
                                                        : int64_t(batch) * params.dk_batch_stride) +
             int64_t(head_kv) * params.dk_head_stride;
  auto* dv = static_cast<Element*>(params.dv) + (varlen ? int64_t(seq.key_row_base) * params.dv_row_stride
                                                        : int64_t(batch) * params.dv_batch_stride) +
             int64_t(head_kv) * params.dv_head_stride;
  CUTE_UNROLL
  for (int r = 0; r < size<0>(dk_rc); ++r) {
    const int key = key0 + get<0>(tKVc_rc(r, 0));
    if (key >= seq.seqlen_k) { continue; }
    CUTE_UNROLL
    for (int c = 0; c < size<1>(dk_rc); c += 2) {
      const int col = get<1>(tKVc_rc(r, c));
      dk[key * params.dk_row_stride + col] = Element(dk_rc(r, c) * params.softmax_scale);
      dk[key * params.dk_row_stride + col + 1] = Element(dk_rc(r, c + 1) * params.softmax_scale);
      dv[key * params.dv_row_stride + col] = Element(dv_rc(r, c));
      dv[key * params.dv_row_stride + col + 1] = Element(dv_rc(r, c + 1));
    }
  }
#endif
}

}  // namespace flashgen::sm90
