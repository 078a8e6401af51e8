// Hopper forward attention, warp-specialized: one CTA per (query block, head, batch entry).
//
// Warpgroup 0 is the producer: one thread issues TMA loads of Q (once) and of K and V tiles
// into a kStages-deep shared-memory ring whose slots complete on mbarriers. Warpgroups 1 and 2
// are consumers, 64 query rows each: S = Q K^T by wgmma from shared memory, the online softmax
// in registers, then O += P V by wgmma with P straight from registers. Within a consumer the
// softmax of block n overlaps the P V wgmma of block n + 1 (issued just before it). Key blocks
// are visited from the last one down, as in the SM80 path, so masked blocks come first.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "common/cute_utils.hpp"
#include "common/fwd_params.h"
#include "common/logit_transforms.hpp"
#include "common/mask.hpp"
#include "common/online_softmax.hpp"
#include "common/seq_info.hpp"
#include "common/tile_copy.hpp"
#include "sm90/sm90_fragment.hpp"
#include "sm90/sm90_fwd_traits.hpp"

namespace flashgen::sm90 {

using namespace cute;

template <class Traits, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    fwd_kernel(const __grid_constant__ FwdKernelParams<Traits> kp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Element = typename Traits::Element;
  using Pipeline = typename Traits::Pipeline;
  using PipelineState = typename Pipeline::PipelineState;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDimQK = Traits::kHeadDimQK;
  constexpr int kDimV = Traits::kHeadDimV;
  constexpr int kNumMmaThreads = Traits::kNumMmaThreads;
  using Mask = AttentionMask<kIsCausal, kBlockM, kBlockN>;
  FwdParams const& params = kp.fwd;

  extern __shared__ __align__(1024) char smem_raw[];
  auto& storage = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);

  // Heaviest query blocks first (under a causal mask the last blocks see the most keys).
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int head_kv = head / params.group_size;
  const SeqInfo seq(params, batch);
  if (m_block * kBlockM >= seq.seqlen_q) { return; }  // the whole CTA, before any barrier
  const int rows_left = seq.seqlen_q - m_block * kBlockM;
  const Mask mask(seq.seqlen_q, seq.seqlen_k, params.window_left, params.window_right, /*group=*/1);
  const KeyBlockRange range = mask.blocks(m_block);
  const bool has_work = range.n_max > range.n_min;
  const bool varlen = params.cu_seqlens_q != nullptr;

  Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQ{});   // (kBlockM, kDimQK)
  Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});   // (kBlockN, kDimQK, stages)
  Tensor sVt = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutVt{});  // (kDimV, kBlockN, stages)

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warp_group = warp_idx / 4;
  const bool lane_elected = cute::elect_one_sync();
  const bool is_producer_thread = warp_idx == 0 && lane_elected;

  if (is_producer_thread) { Barrier::init(&storage.q_barrier, /*arrive_count=*/1); }
  typename Pipeline::Params pipe_params;
  pipe_params.role = warp_group == 0 ? Pipeline::ThreadCategory::Producer : Pipeline::ThreadCategory::Consumer;
  pipe_params.is_leader = is_producer_thread;
  pipe_params.num_consumers = kNumMmaThreads;
  pipe_params.transaction_bytes = Traits::kKBytes;
  Pipeline pipeline_k(storage.pipeline_k, pipe_params, Shape<_1, _1, _1>{});
  pipe_params.transaction_bytes = Traits::kVBytes;
  Pipeline pipeline_v(storage.pipeline_v, pipe_params, Shape<_1, _1, _1>{});
  __syncthreads();  // barrier initialisation is visible to every thread

  if (warp_group == 0) {
    // ---- Producer ----
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (!is_producer_thread || !has_work) { return; }
    // Varlen rows are addressed from the packed tensor's start; fixed-length ones per batch entry.
    const int q_row0 = varlen ? seq.row_base : 0;
    const int q_batch = varlen ? 0 : batch;
    const int k_row0 = seq.key_row_base;
    const int k_batch = seq.kv_batch;
    Tensor mQ = kp.tma_q.get_tma_tensor(make_shape(kp.q_rows, kDimQK, params.num_heads_q, kp.q_batches));
    Tensor mK = kp.tma_k.get_tma_tensor(make_shape(kp.k_rows, kDimQK, params.num_heads_kv, kp.k_batches));
    Tensor mVt = kp.tma_v.get_tma_tensor(make_shape(kDimV, kp.k_rows, params.num_heads_kv, kp.k_batches));
    Tensor gQ = local_tile(domain_offset(make_coord(q_row0, _0{}), mQ(_, _, head, q_batch)),
                           Shape<Int<kBlockM>, Int<kDimQK>>{}, make_coord(m_block, _0{}));  // (kBlockM, kDimQK)
    Tensor gK = local_tile(domain_offset(make_coord(k_row0, _0{}), mK(_, _, head_kv, k_batch)),
                           Shape<Int<kBlockN>, Int<kDimQK>>{}, make_coord(_, _0{}));  // (kBlockN, kDimQK, n)
    Tensor gVt = local_tile(domain_offset(make_coord(_0{}, k_row0), mVt(_, _, head_kv, k_batch)),
                            Shape<Int<kDimV>, Int<kBlockN>>{}, make_coord(_0{}, _));  // (kDimV, kBlockN, n)
    auto [tQgQ, tQsQ] = tma_partition(kp.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
    auto [tKgK, tKsK] = tma_partition(kp.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
    auto [tVgV, tVsV] = tma_partition(kp.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sVt), group_modes<0, 2>(gVt));

    Barrier::arrive_and_expect_tx(&storage.q_barrier, Traits::kQBytes);
    copy(kp.tma_q.with(storage.q_barrier), tQgQ, tQsQ);
    PipelineState write = cutlass::make_producer_start_state<Pipeline>();
    for (int n = range.n_max - 1; n >= range.n_min; --n) {
      pipeline_k.producer_acquire(write);
      copy(kp.tma_k.with(*pipeline_k.producer_get_barrier(write)), tKgK(_, n), tKsK(_, write.index()));
      pipeline_v.producer_acquire(write);
      copy(kp.tma_v.with(*pipeline_v.producer_get_barrier(write)), tVgV(_, n), tVsV(_, write.index()));
      ++write;
    }
    return;
  }

  // ---- Consumers ----
  cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
  const int tid = threadIdx.x - 128;
  const int row0 = m_block * kBlockM;
  typename Traits::TiledMmaQK mma_qk;
  typename Traits::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(tid);
  auto thr_pv = mma_pv.get_thread_slice(tid);
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kDimV>>{});
  Tensor taccOcO_rc = make_tensor(thr_pv.partition_C(cO).data(), acc_layout_rowcol(thr_pv.partition_C(cO).layout()));
  auto lse_ptr = [&](int r) { return params.lse + seq.lse_offset + head * params.lse_head_stride + row0 + r; };
  Tensor mO = make_tensor(
      make_gmem_ptr(static_cast<Element*>(params.out) + seq.out_offset + head * params.out_head_stride),
      make_shape(seq.seqlen_q, Int<kDimV>{}), make_stride(params.out_row_stride, _1{}));
  Tensor gO = local_tile(mO, Shape<Int<kBlockM>, Int<kDimV>>{}, make_coord(m_block, 0));  // (kBlockM, kDimV)

  if (!has_work) {
    // No key is visible to any row of this tile: zero output, LSE = +inf (the SM80 convention).
    for (int i = tid; i < kBlockM * kDimV; i += kNumMmaThreads) {
      const int r = i / kDimV, c = i % kDimV;
      if (r < rows_left) { gO(r, c) = Element(0); }
    }
    if (params.lse != nullptr) {
      for (int r = tid; r < kBlockM && r < rows_left; r += kNumMmaThreads) { *lse_ptr(r) = INFINITY; }
    }
    return;
  }

  Tensor tSrQ = thr_qk.partition_fragment_A(sQ);   // (MMA, MMA_M, MMA_K) descriptors
  Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, stages)
  Tensor tOrV = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stages)
  Tensor acc_o = partition_fragment_C(mma_pv, Shape<Int<kBlockM>, Int<kDimV>>{});  // (MMA, MMA_M, MMA_N)
  Tensor acc_o_rc = make_tensor(acc_o.data(), acc_layout_rowcol(acc_o.layout()));
  clear(acc_o);
  Tensor cS = make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tScS = thr_qk.partition_C(cS);
  Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));

  constexpr int kRowsPerThread = decltype(size<0>(acc_o_rc))::value;
  OnlineSoftmax<kRowsPerThread> softmax;
  float correction[kRowsPerThread];
  const float alibi_raw_slope =
      kHasAlibi ? params.alibi_slopes[batch * params.alibi_batch_stride + head] / params.logit_scale : 0.f;

  // P of the previous key block, the A operand of its O += P V.
  using SFragment = decltype(partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tOrP = make_tensor<Element>(acc_layout_as_a_operand(SFragment{}.layout()));

  // Scores of block n -> unnormalised probabilities in place; fills correction[] (not when first).
  auto scores_to_probs = [&](auto& acc_s, int n, auto is_first, bool masked) __attribute__((always_inline)) {
    Tensor scores = make_tensor(acc_s.data(), acc_layout_rowcol(acc_s.layout()));
    if constexpr (kHasSoftcap) { apply_softcap(scores, params.softcap_prescale); }
    if constexpr (kHasAlibi) {
      apply_alibi(scores, tScS_rc, row0 + seq.seqlen_k - seq.seqlen_q, n * kBlockN, alibi_raw_slope);
    }
    if (masked) { mask.apply(scores, tScS_rc, m_block, n); }
    softmax.template update_scores<decltype(is_first)::value>(scores, params.logit_scale_log2, correction);
  };
  // tOrP's layout only regroups acc_s's, so the storage orders agree: convert in place (an
  // element-wise copy between the two views cost ~130 PRMT/LOP3 per thread and block).
  auto stage_p = [&](auto const& acc_s) __attribute__((always_inline)) { convert_fragment_into(acc_s, tOrP); };

  // Ping-pong: the two consumers take turns issuing their wgmma batches (named barriers 1 and
  // 2, one per consumer), so one's softmax runs while the other's GEMMs occupy the tensor cores.
  // Consumer 0 goes first; both walk the same key blocks, so their turns pair up exactly.
  const int consumer = tid / 128;
  const bool pingpong = kp.pingpong != 0;
  auto begin_turn = [&]() __attribute__((always_inline)) {
    if (pingpong) { cutlass::arch::NamedBarrier::sync(kNumMmaThreads, /*id=*/1 + consumer); }
  };
  auto end_turn = [&](bool last) __attribute__((always_inline)) {
    // Consumer 1's last turn hands over to nobody (consumer 0 is done).
    if (pingpong && !(last && consumer == 1)) { cutlass::arch::NamedBarrier::arrive(kNumMmaThreads, /*id=*/2 - consumer); }
  };
  if (pingpong && consumer == 1) { cutlass::arch::NamedBarrier::arrive(kNumMmaThreads, /*id=*/1); }

  PipelineState read_k, read_v;
  Barrier::wait(&storage.q_barrier, /*phase=*/0);

  int n = range.n_max - 1;
  {
    Tensor acc_s = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
    pipeline_k.consumer_wait(read_k);
    begin_turn();
    wgmma</*kZeroInit=*/true>(mma_qk, tSrQ, tSrK(_, _, _, read_k.index()), acc_s);
    end_turn(false);
    warpgroup_wait<0>();
    pipeline_k.consumer_release(read_k);
    ++read_k;
    scores_to_probs(acc_s, n, true_type{}, /*masked=*/true);  // masking a whole block is harmless
    stage_p(acc_s);
  }
  for (--n; n >= range.n_min; --n) {
    Tensor acc_s = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
    pipeline_k.consumer_wait(read_k);
    pipeline_v.consumer_wait(read_v);
    begin_turn();
    wgmma</*kZeroInit=*/true>(mma_qk, tSrQ, tSrK(_, _, _, read_k.index()), acc_s);
    wgmma</*kZeroInit=*/false>(mma_pv, tOrP, tOrV(_, _, _, read_v.index()), acc_o);
    end_turn(false);
    warpgroup_wait<1>();  // S of block n is ready; O += P V of block n + 1 may still run
    pipeline_k.consumer_release(read_k);
    ++read_k;
    scores_to_probs(acc_s, n, false_type{}, range.needs_mask(n));
    warpgroup_wait<0>();  // P V of block n + 1 is done: tOrP and V's slot are free
    pipeline_v.consumer_release(read_v);
    ++read_v;
    softmax.rescale(acc_o_rc, correction);
    stage_p(acc_s);
  }
  pipeline_v.consumer_wait(read_v);
  begin_turn();
  wgmma</*kZeroInit=*/false>(mma_pv, tOrP, tOrV(_, _, _, read_v.index()), acc_o);
  end_turn(true);
  warpgroup_wait<0>();
  pipeline_v.consumer_release(read_v);

  // ---- Epilogue ----
  float lse[kRowsPerThread];
  float sink[kRowsPerThread];
  CUTE_UNROLL
  for (int r = 0; r < kRowsPerThread; ++r) { sink[r] = params.sinks == nullptr ? -INFINITY : params.sinks[head]; }
  softmax.finalize(acc_o_rc, params.logit_scale, sink, /*out_scale=*/1.f, /*empty_lse=*/INFINITY, lse);

  // O goes through shared memory (where Q was) for 16-byte, row-guarded global stores.
  Tensor sO = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutO{});  // (kBlockM, kDimV)
  Tensor out = convert_fragment<Element>(acc_o);
  auto smem_copy_o = make_tiled_copy_C(Copy_Atom<DefaultCopy, Element>{}, mma_pv);
  auto smem_thr_copy_o = smem_copy_o.get_thread_slice(tid);
  cutlass::arch::NamedBarrier::sync(kNumMmaThreads, /*id=*/3);  // both consumers are done reading sQ
  copy(smem_copy_o, smem_thr_copy_o.retile_S(out), smem_thr_copy_o.partition_D(sO));
  cutlass::arch::NamedBarrier::sync(kNumMmaThreads, /*id=*/3);
  typename Traits::CopyOut gmem_copy_o;
  auto gmem_thr_copy_o = gmem_copy_o.get_thread_slice(tid);
  Tensor tOsO = gmem_thr_copy_o.partition_S(sO);
  Tensor tOrO = make_fragment_like<Element>(tOsO);
  copy(gmem_copy_o, tOsO, tOrO);
  copy_tile</*kGuardRows=*/true, /*kZeroFill=*/false, kDimV>(gmem_copy_o, tOrO, gmem_thr_copy_o.partition_D(gO),
                                                               gmem_thr_copy_o.partition_D(cO), rows_left);
  if (params.lse != nullptr && get<1>(taccOcO_rc(0, 0)) == 0) {
    // The lane that holds column 0 of a row writes its LSE.
    CUTE_UNROLL
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int row = get<0>(taccOcO_rc(r, 0));
      if (row < rows_left) { *lse_ptr(row) = lse[r]; }
    }
  }
#endif
}

}  // namespace flashgen::sm90
