// Hopper backward attention.
//
// One CTA per (key block, KV head, batch entry) and three warpgroups. The producer
// warpgroup runs on 24 registers: warp 0 loads K and V once and Q, dO of each step by TMA
// (kStages buffers), warp 1 loads the step's LSE and D = rowsum(dO * O) into shared memory, warp
// 2 sends each step's dQ to the fp32 accumulator in global memory by bulk reduce-adds. The two
// consumer warpgroups (240 registers) own 64 keys each. A step is one (query head of the GQA
// group, query block of 64) that sees the keys: S^T = K Q^T and dP^T = V dO^T by wgmma from
// shared memory; P^T = exp(S^T - LSE) and dS^T = P^T (dP^T - D) in registers; dV += P^T dO and
// dK += dS^T Q by wgmma with the A operand in registers and Q, dO read through transposed
// (MN-major) views; dS goes to shared memory (double-buffered), where dQ = dS K reads it once
// both warpgroups wrote their keys (the only point where they wait for each other); each
// warpgroup computes half of dQ's columns (head dim 64 and below: half its rows) into a shared
// fp32 tile for the writer warp (in deterministic mode the writer adds in key-block order behind
// a per-query-block counter); with two such tiles, step s's dQ product runs at the start of
// step s + 1, ahead of its S^T, and is handed over while S^T computes. At the end dK and dV go
// through K's and V's shared tiles to whole-line global stores. D and the dQ conversion come
// from the SM80 path's pre- and post-processing kernels.
// That is the keys split (head dims up to 128, 128-key blocks); above 128 or with qk != v the
// consumers split the roles over 64-key blocks (consume_roles_split; sm90_bwd_traits.hpp).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "common/bwd_params.h"
#include "common/cute_utils.hpp"
#include "common/dropout.hpp"
#include "common/mask.hpp"
#include "common/seq_info.hpp"
#include "sm80/sm80_bwd_kernel.hpp"
#include "sm90/sm90_bwd_traits.hpp"
#include "sm90/sm90_fragment.hpp"

namespace flashgen::sm90 {

using namespace cute;

// Named barriers of the backward kernel (0 is __syncthreads).
enum class BwdBarrier : int {
  kDsReady = 1, kDqFull = 2, kDqEmpty = 3, kPReady = 4, kStageRead = 5,
  kTilesFree = 6,  // the end: no consumer's product reads K or V any more
  kStaged = 7,     // (and 8) the end: one warpgroup's dK / dV are in shared memory
  kTailCounted = 9,  // the tail split: every consumer added its part; then, the piece counted
};

// Named barriers that threads reach from different code (the roles split's two warpgroups, or a
// consumer and the writer warp): the forms without .aligned, which PTX requires of a barrier
// whose participants do not all execute the same instruction (NamedBarrier's bar.sync/arrive are
// .aligned; compute-sanitizer's synccheck reports them as divergent).
CUTE_DEVICE void barrier_sync_any(int threads, BwdBarrier id) {
  asm volatile("barrier.sync %0, %1;" : : "r"(int(id)), "r"(threads) : "memory");
}
CUTE_DEVICE void barrier_arrive_any(int threads, BwdBarrier id) {
  asm volatile("barrier.arrive %0, %1;" : : "r"(int(id)), "r"(threads) : "memory");
}

// One bulk asynchronous reduce-add of `bytes` (a multiple of 16) contiguous floats from shared to
// global memory, in the issuing thread's bulk group (commit with tma_store_arrive, wait with
// tma_store_wait before the shared memory is written again).
CUTE_DEVICE void bulk_reduce_add_f32(float* gmem, const float* smem, int bytes) {
  const uint32_t smem_addr = cute::cast_smem_ptr_to_uint(smem);
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;"
               :
               : "l"(gmem), "r"(smem_addr), "r"(bytes)
               : "memory");
}

// Waits until every bulk operation of the thread's committed groups has completed (their
// writes performed, not only their shared-memory reads).
CUTE_DEVICE void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }

// Orders the thread's generic-proxy global accesses with its async-proxy (bulk) ones.
CUTE_DEVICE void fence_proxy_async_global() { asm volatile("fence.proxy.async.global;" ::: "memory"); }

// Dropout in the transposed (keys, queries) accumulator: the forward's scheme (common/dropout.hpp)
// puts queries {q, q + 8} x keys {k, k + 1, k + 8, k + 9} of a 16 x 16 block in one Philox group;
// a thread here holds keys {k, k + 8} x queries {q, q + 1, q + 8, q + 9}, i.e. half of two groups
// (query parities q and q + 1), so it draws two Philox calls per 16 x 16 block (the forward's
// thread draws one). Returns the keep bit of element (r, c) of the rowcol view at r * kCols + c.
template <int kCols, class Coords>
CUTE_DEVICE uint64_t dropout_keep_bits(DropoutKey const& dkey, Coords const& coords, int key0, int query0) {
  static_assert(2 * kCols <= 64 && kCols % 4 == 0);
  uint64_t bits = 0;
#pragma unroll 1
  for (int block = 0; block < kCols / 4; ++block) {  // columns 4 block + {0, 1, 2, 3}: 16 queries
    CUTE_UNROLL
    for (int cl = 0; cl < 2; ++cl) {
      const int c0 = 4 * block + cl;
      const Philox4x32 draw = dkey.group_bits(query0 + get<1>(coords(0, c0)), key0 + get<0>(coords(0, c0)));
      CUTE_UNROLL
      for (int r = 0; r < 2; ++r) {
        CUTE_UNROLL
        for (int half = 0; half < 2; ++half) {
          const int c = c0 + 2 * half;  // the column 8 queries on, same group
          const int query = query0 + get<1>(coords(r, c));
          const int key = key0 + get<0>(coords(r, c));
          if (DropoutKey::uniform16(draw, DropoutKey::slot(query, key)) >= dkey.threshold) {
            bits |= uint64_t(1) << (r * kCols + c);
          }
        }
      }
    }
  }
  return bits;
}

template <class Traits>
struct BwdKernelParams {
  BwdParams bwd;
  typename Traits::TmaQ tma_q;
  typename Traits::TmadO tma_do;
  typename Traits::TmaK tma_k;
  typename Traits::TmaV tma_v;
  typename Traits::TmadQ tma_dq;  // kDqTma only
  int32_t q_rows, q_batches;
  int32_t k_rows, k_batches;
  // Work items: the key blocks of key_order, the tail split's pieces in place of its blocks
  // (params.tail.grid()). A grid smaller than num_items is persistent (Traits::kPersistent only).
  int32_t num_items;
};

// The steps of one work item: the (query head of the GQA group, query block) pairs that see its
// keys, or a tail-split piece's range of them (from `first`). `base` counts the CTA's steps
// before the item: the stage ring, the LSE / D buffers and the dQ tiles run on across items, so
// their slots and phases follow the CTA's step count (`base + step`).
struct BwdSteps {
  int m_lo;
  int m_count;
  int count;
  int head0;
  int first;
  int base;
  CUTE_DEVICE int head(int step) const { return head0 + (first + step) / m_count; }
  CUTE_DEVICE int block(int step) const { return m_lo + (first + step) % m_count; }
};

// One work item of a CTA: a key block (or a tail piece of one) and its steps. `ordinal` counts
// the CTA's earlier items with keys: K and V's barriers change phase once per item.
template <class Traits, class Mask>
struct BwdItem {
  TailPiece piece;
  sm80::KeyBlockTile tile;
  SeqInfo seq;
  Mask mask;
  BwdSteps steps;
  int ordinal;

  CUTE_DEVICE BwdItem(BwdParams const& params, sm80::DqOrder const& dq_order, int index)
      : piece(tail_piece(index, params.tail)),
        tile(sm80::key_block_tile(params, dq_order, piece.index)),
        seq(params, tile.batch),
        mask(seq.seqlen_q, seq.seqlen_k, params.window_left, params.window_right, /*group=*/1) {
    int m_lo = 0, m_hi = 0;
    sm80::query_blocks_of_key_block<Traits::kBlockM, Traits::kBlockN>(mask, tile.n_block, m_lo, m_hi);
    steps.m_lo = m_lo;
    steps.m_count = max(0, m_hi - m_lo);
    steps.count = steps.m_count * params.group_size;
    steps.head0 = tile.head_kv * params.group_size;
    steps.first = 0;
    steps.base = 0;
    if (piece.piece >= 0) {
      int lo, hi;
      tail_piece_steps(steps.count, params.tail.pieces, piece.piece, lo, hi);
      steps.first = lo;
      steps.count = hi - lo;
    }
    ordinal = 0;
  }
  // False where the batch entry has fewer key blocks (variable lengths): no work.
  CUTE_DEVICE bool has_keys() const { return tile.n_block * Traits::kBlockN < seq.seqlen_k; }
};

// threadIdx.x through an opaque read: the consumers derive every per-thread address and
// coordinate from it inside their item loop, so that the compiler does not hoist them out of
// it and keep them alive through the epilogue (which then spilled hundreds of bytes).
template <class Traits>
CUTE_DEVICE int thread_index_opaque() {
  if constexpr (!Traits::kPersistent) { return int(threadIdx.x); }  // one item: nothing to hoist out of
  int tid;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
  return tid;
}

// Shared-memory int accesses that stay in program order with the barriers' asm statements
// (CUTLASS's mbarrier waits do not clobber memory).
CUTE_DEVICE void st_shared_ordered(int* ptr, int value) {
  asm volatile("st.shared.b32 [%0], %1;" : : "r"(cute::cast_smem_ptr_to_uint(ptr)), "r"(value) : "memory");
}
CUTE_DEVICE int ld_shared_ordered(const int* ptr) {
  int value;
  asm volatile("ld.shared.b32 %0, [%1];" : "=r"(value) : "r"(cute::cast_smem_ptr_to_uint(ptr)) : "memory");
  return value;
}

// Every other role reads each item index of the ring (item_empty's arrivals): lane 0 of the
// LSE / D loader and of the dQ writer, and every consumer thread.
template <class Traits>
constexpr int kItemReaders = 2 + Traits::kNumMmaThreads;

// Calls f(item) for each of this CTA's items with keys, in order, setting each one's step base
// and ordinal. One item per CTA (blockIdx.x) unless Traits::kPersistent; then the TMA warp's
// lane (kPublisher) walks the items, blockIdx.x first and then one at a time from
// params.item_counter (+ gridDim.x; without the counter, the launch runs one item per CTA), so
// that SMs that finish early take more, as the hardware's scheduler would, and hands each index
// to the other roles through a two-slot ring in shared memory (item_index, item_full /
// item_empty; -1 ends the walk). `reader` says whether the caller counts in item_empty.
template <class Traits, class Mask, bool kPublisher = false, class F>
CUTE_DEVICE void for_each_item(BwdKernelParams<Traits> const& kp, typename Traits::SharedStorage& storage,
                               sm80::DqOrder const& dq_order, BwdItem<Traits, Mask> const* entry, bool reader,
                               F&& f) {
  using Barrier = cutlass::arch::ClusterBarrier;
  using Item = BwdItem<Traits, Mask>;
  if constexpr (!Traits::kPersistent) {  // one item per CTA, decoded at the kernel's entry (with keys)
    f(*entry);
    return;
  }
  int base = 0;
  int index = int(blockIdx.x);  // the publisher's next candidate
  for (int j = 0;; ++j) {
    const int slot = j & 1;
    if constexpr (kPublisher) {
      auto next = [&] {
        return kp.bwd.item_counter != nullptr ? atomicAdd(kp.bwd.item_counter, 1) + int(gridDim.x) : kp.num_items;
      };
      while (index < kp.num_items && !Item(kp.bwd, dq_order, index).has_keys()) { index = next(); }
      if (j >= 2) { Barrier::wait(&storage.item_empty[slot], ((j >> 1) & 1) ^ 1); }
      st_shared_ordered(&storage.item_index[slot], index < kp.num_items ? index : -1);
      Barrier::arrive(&storage.item_full[slot]);
      if (index >= kp.num_items) { return; }
      const int this_index = index;
      index = next();  // the atomic's latency runs beside this item
      Item item(kp.bwd, dq_order, this_index);
      item.steps.base = base;
      item.ordinal = j;
      base += item.steps.count;
      f(static_cast<Item const&>(item));
    } else {
      Barrier::wait(&storage.item_full[slot], (j >> 1) & 1);
      const int this_index = ld_shared_ordered(&storage.item_index[slot]);
      if (reader) { Barrier::arrive(&storage.item_empty[slot]); }
      if (this_index < 0) { return; }
      Item item(kp.bwd, dq_order, this_index);
      item.steps.base = base;
      item.ordinal = j;
      base += item.steps.count;
      f(static_cast<Item const&>(item));
    }
  }
}

// Stage of a step and the parity of its k-th use of that stage.
template <int kStages>
CUTE_DEVICE int stage_of(int step) {
  return step % kStages;
}
template <int kStages>
CUTE_DEVICE int phase_of(int step) {
  return (step / kStages) & 1;
}

// The producer warpgroup: warp 0 issues the TMA loads, warp 1 loads LSE and D, warp 2 sends dQ;
// each over all of the CTA's items.
template <class Traits, class Mask>
CUTE_DEVICE void bwd_producer(BwdKernelParams<Traits> const& kp, typename Traits::SharedStorage& storage,
                              sm80::DqOrder const& dq_order, BwdItem<Traits, Mask> const* entry) {
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  using Item = BwdItem<Traits, Mask>;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDim = Traits::kHeadDim;
  constexpr int kDimV = Traits::kHeadDimV;
  constexpr int kStages = Traits::kStages;
  BwdParams const& params = kp.bwd;
  const bool varlen = params.cu_seqlens_q != nullptr;
  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int lane = threadIdx.x % 32;
  if (warp_idx == 0) {
    if (!cute::elect_one_sync()) { return; }
    Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQ{});
    Tensor sdO = make_tensor(make_smem_ptr(Traits::dout_smem(storage)), typename Traits::SmemLayoutdO{});
    Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutV{});
    Tensor mQ = kp.tma_q.get_tma_tensor(make_shape(kp.q_rows, kDim, params.num_heads_q, kp.q_batches));
    Tensor mdO = kp.tma_do.get_tma_tensor(make_shape(kp.q_rows, kDimV, params.num_heads_q, kp.q_batches));
    Tensor mK = kp.tma_k.get_tma_tensor(make_shape(kp.k_rows, kDim, params.num_heads_kv, kp.k_batches));
    Tensor mV = kp.tma_v.get_tma_tensor(make_shape(kp.k_rows, kDimV, params.num_heads_kv, kp.k_batches));
    for_each_item<Traits, Mask, /*kPublisher=*/true>(kp, storage, dq_order, entry, false, [&](Item const& item)
                                                     __attribute__((always_inline)) {
      SeqInfo const& seq = item.seq;
      BwdSteps const& steps = item.steps;
      const int q_row0 = varlen ? seq.row_base : 0;
      const int q_batch = varlen ? 0 : item.tile.batch;
      const int n_block = item.tile.n_block, head_kv = item.tile.head_kv;
      Tensor gK = local_tile(domain_offset(make_coord(seq.key_row_base, _0{}), mK(_, _, head_kv, seq.kv_batch)),
                             Shape<Int<kBlockN>, Int<kDim>>{}, make_coord(n_block, _0{}));
      Tensor gV = local_tile(domain_offset(make_coord(seq.key_row_base, _0{}), mV(_, _, head_kv, seq.kv_batch)),
                             Shape<Int<kBlockN>, Int<kDimV>>{}, make_coord(n_block, _0{}));
      auto k_part = tma_partition(kp.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
      auto v_part = tma_partition(kp.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));
      auto load_step = [&](int step) __attribute__((always_inline)) {
        const int g = steps.base + step;
        const int stage = stage_of<kStages>(g);
        if (g >= kStages) { EmptyBarrier::wait(&storage.qdo_empty[stage], phase_of<kStages>(g) ^ 1); }
        const int h = steps.head(step);
        Tensor gQ = local_tile(domain_offset(make_coord(q_row0, _0{}), mQ(_, _, h, q_batch)),
                               Shape<Int<kBlockM>, Int<kDim>>{}, make_coord(steps.block(step), _0{}));
        Tensor gdO = local_tile(domain_offset(make_coord(q_row0, _0{}), mdO(_, _, h, q_batch)),
                                Shape<Int<kBlockM>, Int<kDimV>>{}, make_coord(steps.block(step), _0{}));
        auto q_part = tma_partition(kp.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
        auto do_part = tma_partition(kp.tma_do, _0{}, Layout<_1>{}, group_modes<0, 2>(sdO), group_modes<0, 2>(gdO));
        FullBarrier::arrive_and_expect_tx(&storage.qdo_full[stage], Traits::kQBytes + Traits::kdOBytes);
        copy(kp.tma_q.with(storage.qdo_full[stage]), get<0>(q_part), get<1>(q_part)(_, Traits::q_slot(stage)));
        copy(kp.tma_do.with(storage.qdo_full[stage]), get<0>(do_part), get<1>(do_part)(_, Traits::do_slot(stage)));
      };
      // A later item's K and V once the consumers' products of the previous one no longer read
      // the tiles (they arrive on kv_empty before their epilogue, which then runs beside this
      // load). (Issuing the item's first Q / dO loads ahead of this wait measured -0.5-1%.)
      if (item.ordinal > 0) { EmptyBarrier::wait(&storage.kv_empty, (item.ordinal - 1) & 1); }
      FullBarrier::arrive_and_expect_tx(&storage.kv_full, Traits::kKBytes + Traits::kVBytes);
      copy(kp.tma_k.with(storage.kv_full), get<0>(k_part), get<1>(k_part));
      copy(kp.tma_v.with(storage.kv_full), get<0>(v_part), get<1>(v_part));
      for (int step = 0; step < steps.count; ++step) { load_step(step); }
    });
  } else if (warp_idx == 1) {
    // LSE (log2 units; +inf past the end, so P is 0 there) and D of each step's rows.
    for_each_item<Traits, Mask>(kp, storage, dq_order, entry, lane == 0, [&](Item const& item)
                                                                     __attribute__((always_inline)) {
      SeqInfo const& seq = item.seq;
      BwdSteps const& steps = item.steps;
      for (int step = 0; step < steps.count; ++step) {
        const int g = steps.base + step;
        const int stage = stage_of<kStages>(g);
        if (g >= kStages) { EmptyBarrier::wait(&storage.qdo_empty[stage], phase_of<kStages>(g) ^ 1); }
        const int h = steps.head(step);
        const float* lse = params.lse + seq.lse_offset + int64_t(h) * params.lse_head_stride;
        const float* dsum = params.softmax_d + int64_t(h) * params.total_q + seq.row_base;
        CUTE_UNROLL
        for (int row = lane; row < kBlockM; row += 32) {
          const int q = steps.block(step) * kBlockM + row;
          const bool in = q < seq.seqlen_q;
          storage.lse_log2[stage][row] = in ? lse[q] * float(M_LOG2E) : INFINITY;
          storage.dsum[stage][row] = in ? dsum[q] : 0.f;
        }
        FullBarrier::arrive(&storage.qdo_full[stage]);
      }
    });
  } else if (warp_idx == 2 && Traits::kDqTma) {
    // dQ writer, TMA tiles: one TMA reduce-add of each step's fp32 tile (rows past the sequence
    // carry exact zeros: their P and dS are 0). In-stage tiles (head dim 256): the stage goes
    // back to the loaders once its tile has been read. Two tiles (kDqDouble): a tile goes back
    // to the consumers once the next step's reduce-add is issued and its own has been read; at
    // an item's end both tiles are (dq_drained), for the consumers' dK / dV.
    // Deterministic mode: released once the adds are done, in DqOrder's order.
    static_assert(kStages == 2 || !Traits::kDqDouble);
    Tensor mdQ = kp.tma_dq.get_tma_tensor(make_shape(max(1, params.total_q), kDim, params.num_heads_q));
    for_each_item<Traits, Mask>(kp, storage, dq_order, entry, lane == 0, [&](Item const& item)
                                                                     __attribute__((always_inline)) {
      SeqInfo const& seq = item.seq;
      BwdSteps const& steps = item.steps;
      for (int step = 0; step < steps.count; ++step) {
        const int g = steps.base + step;
        const int stage = stage_of<kStages>(g);  // kDqDouble: the tile too
        EmptyBarrier::wait(&storage.dq_full[stage], phase_of<kStages>(g));
        const int m = steps.block(step);
        const int h = steps.head(step);
        if (lane == 0) {
          int* semaphore = nullptr;
          if (params.deterministic) {
            semaphore = sm80::DqOrder::counter(params, item.tile.batch, h, m);
            dq_order.wait_turn(semaphore, item.mask, m, item.tile.n_block);
            __threadfence();
            fence_proxy_async_global();
          }
          float* tile = Traits::kDqInStage ? Traits::dq_stage_tile(storage, stage) : Traits::dq_buffer(storage, stage);
          Tensor sdQ = make_tensor(make_smem_ptr(tile), typename Traits::SmemLayoutdQ{});
          Tensor gdQ = local_tile(domain_offset(make_coord(seq.row_base, _0{}), mdQ(_, _, h)),
                                  Shape<Int<kBlockM>, Int<kDim>>{}, make_coord(m, _0{}));
          auto dq_thr = kp.tma_dq.get_slice(_0{});
          copy(kp.tma_dq, dq_thr.partition_S(sdQ), dq_thr.partition_D(gdQ));
          tma_store_arrive();
          if (params.deterministic) {
            bulk_wait_all();  // the adds are done in global memory, not just read from shared
            fence_proxy_async_global();
            __threadfence();
            atomicAdd(semaphore, 1);
            EmptyBarrier::arrive(Traits::kDqInStage ? &storage.qdo_empty[stage] : &storage.dq_empty[stage]);
          } else if constexpr (Traits::kDqInStage) {
            tma_store_wait<0>();  // the tile has been read: the stage may be loaded again
            EmptyBarrier::arrive(&storage.qdo_empty[stage]);
          } else {
            tma_store_wait<1>();  // the previous step's tile has been read
            if (g > 0) { EmptyBarrier::arrive(&storage.dq_empty[stage ^ 1]); }
          }
        }
        __syncwarp();
      }
      if constexpr (Traits::kPersistent) {
        if (lane == 0) {
          tma_store_wait<0>();  // the item's last tile has been read: both tiles are free
          EmptyBarrier::arrive(&storage.dq_drained);
        }
        __syncwarp();
      }
    });
    if (lane == 0) { tma_store_wait<0>(); }  // the last tile is read before the CTA may exit
  } else if (warp_idx == 2) {
    // dQ writer: one bulk reduce-add per valid row of each step's shared fp32 tile.
    const int64_t dq_row_stride = int64_t(params.num_heads_q) * params.dq_accum_dim;
    for_each_item<Traits, Mask>(kp, storage, dq_order, entry, lane == 0, [&](Item const& item)
                                                                     __attribute__((always_inline)) {
      SeqInfo const& seq = item.seq;
      BwdSteps const& steps = item.steps;
      float* dq_rows = params.dq_accum + int64_t(seq.row_base) * dq_row_stride;
      for (int step = 0; step < steps.count; ++step) {
        barrier_arrive_any(Traits::kNumMmaThreads + 32, BwdBarrier::kDqEmpty);
        barrier_sync_any(Traits::kNumMmaThreads + 32, BwdBarrier::kDqFull);
        const int m = steps.block(step);
        const int query0 = m * kBlockM;
        const int h = steps.head(step);
        // Deterministic mode: the key blocks that see query block m add their dQ parts in
        // sm80::DqOrder's order behind a counter.
        int* semaphore = nullptr;
        if (params.deterministic) {
          semaphore = sm80::DqOrder::counter(params, item.tile.batch, h, m);
          if (lane == 0) { dq_order.wait_turn(semaphore, item.mask, m, item.tile.n_block); }
          __syncwarp();
          __threadfence();
          fence_proxy_async_global();
        }
        float* dq_head = dq_rows + int64_t(h) * params.dq_accum_dim;
        CUTE_UNROLL
        for (int row = lane; row < kBlockM; row += 32) {
          if (query0 + row < seq.seqlen_q) {
            bulk_reduce_add_f32(dq_head + (query0 + row) * dq_row_stride, &storage.dq[row * Traits::kDQRowFloats],
                                kDim * int(sizeof(float)));
          }
        }
        tma_store_arrive();
        if (params.deterministic) {
          bulk_wait_all();  // the adds are done in global memory, not just read from shared
          fence_proxy_async_global();
          __threadfence();
          __syncwarp();
          if (lane == 0) { atomicAdd(semaphore, 1); }
        } else {
          tma_store_wait<0>();  // the tile has been read: the consumers may write the next one
        }
      }
    });
  }
}

// The consumers' dQ of one step to the writer warp's shared tile, two columns per store.
template <class Traits, class Acc, class Coords>
CUTE_DEVICE void hand_dq_to_writer(typename Traits::SharedStorage& storage, Acc const& acc_dq, Coords const& coords) {
  barrier_sync_any(Traits::kNumMmaThreads + 32, BwdBarrier::kDqEmpty);
  CUTE_UNROLL
  for (int i = 0; i < size(acc_dq); i += 2) {
    const auto coord = coords(i);
    *reinterpret_cast<float2*>(&storage.dq[get<0>(coord) * Traits::kDQRowFloats + get<1>(coord)]) =
        make_float2(acc_dq(i), acc_dq(i + 1));
  }
  cutlass::arch::fence_view_async_shared();
  barrier_arrive_any(Traits::kNumMmaThreads + 32, BwdBarrier::kDqFull);
}

// The consumers' dQ of one step into Traits::SmemLayoutdQ (fp32 (kBlockM, head_dim) in 8 x 32
// atoms with the 128-byte swizzle: 16-byte chunk c of row r stored at chunk c ^ (r % 8); atoms
// down the rows first), its chunks in dq_accum's permuted order (see below). A warpgroup holds
// 64 rows x kCols columns: in the head-dim split (64-row tiles) half the columns, in the query
// split (128-row tiles) its 64 rows. Thread `tid` holds,
// per 8-column group n and row half h, columns 8 n + 2 (lane % 4) + {0, 1} of row 16 warp +
// lane / 4 + 8 h of its part (wgmma's accumulator order), so its chunks' XOR with the row takes
// four values: four base pointers, every store one of them plus a constant (CuTe's per-element
// swizzle is hoisted into 64 live addresses).
template <class Traits, class Acc>
CUTE_DEVICE void stage_dq_swizzled(Acc const& acc_dq, float* tile, int tid) {
  constexpr bool kByRows = Traits::kDqSplitQueries;
  constexpr int kCols = kByRows ? Traits::kHeadDim : Traits::kHeadDim / 2;  // columns of one warpgroup
  constexpr int kColBlock = Traits::kBlockM / 8 * 256;  // floats of one 32-column block of atoms
  static_assert(Traits::kBlockM == (kByRows ? 128 : 64) && kCols % 32 == 0 &&
                decltype(size(acc_dq))::value == kCols / 2);
  const int lane = tid % 32, warp = (tid % 128) / 32, group = tid / 128;
  const int g = lane / 4, t = lane % 4;
  const int group_offset = kByRows ? group * 8 * 256 : group * (kCols / 32) * kColBlock;
  // dq_accum's permuted chunk order (BwdParams::dq_accum_permuted): columns 8 n + 4 b .. + 3 of
  // a 32-column block at logical chunk n % 4 + 4 b, physical chunk (n % 4 + 4 b) ^ (row % 8); a
  // half-warp's 8 (row, b) pairs then meet 8 distinct chunks (in the plain order, 2 n + b, only
  // 4: two wavefronts per half-warp).
  float* base = tile + (2 * warp) * 256 + group_offset + g * 32 + 2 * (t % 2) + 16 * ((t / 2) ^ (g >> 2));
  float* chunk_base[4];
  CUTE_UNROLL
  for (int k = 0; k < 4; ++k) { chunk_base[k] = base + 4 * (k ^ (g & 3)); }
  CUTE_UNROLL
  for (int n = 0; n < kCols / 8; ++n) {
    CUTE_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int v = 2 * h + 4 * n;
      *reinterpret_cast<float2*>(chunk_base[n % 4] + h * 256 + (n / 4) * kColBlock) =
          make_float2(acc_dq(v), acc_dq(v + 1));
    }
  }
}

// kDqDouble: the consumers' dQ of step `step` into tile step % 2, once the writer has read that
// tile's previous contents (step - 2), then handed to the writer's TMA reduce-add.
// kDqDouble: waits until dQ tile step % 2 is free for step `step`'s dQ (the writer has read what
// step - 2 left there).
template <class Traits>
CUTE_DEVICE void wait_dq_tile(typename Traits::SharedStorage& storage, int step) {
  if (step >= 2) { cutlass::arch::ClusterBarrier::wait(&storage.dq_empty[step & 1], ((step >> 1) - 1) & 1); }
}

template <class Traits, class Acc>
CUTE_DEVICE void hand_dq_to_tma_writer(typename Traits::SharedStorage& storage, Acc const& acc_dq, int step, int tid) {
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  const int b = step & 1;
  wait_dq_tile<Traits>(storage, step);
  stage_dq_swizzled<Traits>(acc_dq, Traits::dq_buffer(storage, b), tid);
  cutlass::arch::fence_view_async_shared();
  EmptyBarrier::arrive(&storage.dq_full[b]);
}

// A (keys, head_dim) accumulator (dK or dV) times `scale` to rows key0.. of `dst`, two columns per
// store, keys past seqlen_k skipped.
template <class Element, class Acc, class Coords>
CUTE_DEVICE void store_key_rows(Acc const& acc, Coords const& coords, Element* dst, int64_t row_stride, int key0,
                                int seqlen_k, float scale) {
  Tensor acc_rc = make_tensor(acc.data(), acc_layout_rowcol(acc.layout()));
  Tensor c_rc = make_tensor(coords.data(), acc_layout_rowcol(coords.layout()));
  CUTE_UNROLL
  for (int r = 0; r < size<0>(acc_rc); ++r) {
    const int key = key0 + get<0>(c_rc(r, 0));
    if (key >= seqlen_k) { continue; }
    CUTE_UNROLL
    for (int c = 0; c < size<1>(acc_rc); c += 2) {
      const int col = get<1>(c_rc(r, c));
      dst[key * row_stride + col] = Element(acc_rc(r, c) * scale);
      dst[key * row_stride + col + 1] = Element(acc_rc(r, c + 1) * scale);
    }
  }
}

// The end of a consumer warpgroup, part 1: its (keys, head_dim) accumulator (dK or dV) times
// `scale` into the rows of `tile` (K's or V's shared tile, which no product reads any more) that
// it covers, two columns per 4-byte store (where the tile has the 128-byte swizzle, a
// warp's stores are conflict-free).
template <class Element, class Acc, class Coords, class SmemTile>
CUTE_DEVICE void stage_key_rows(Acc const& acc, Coords const& coords, SmemTile&& tile, float scale) {
  Tensor acc_rc = make_tensor(acc.data(), acc_layout_rowcol(acc.layout()));
  Tensor c_rc = make_tensor(coords.data(), acc_layout_rowcol(coords.layout()));
  CUTE_UNROLL
  for (int r = 0; r < size<0>(acc_rc); ++r) {
    CUTE_UNROLL
    for (int c = 0; c < size<1>(acc_rc); c += 2) {
      const auto rc = c_rc(r, c);
      union {
        Element e[2];
        uint32_t u;
      } pair;
      pair.e[0] = Element(acc_rc(r, c) * scale);
      pair.e[1] = Element(acc_rc(r, c + 1) * scale);
      const uint32_t addr = cute::cast_smem_ptr_to_uint(&tile(get<0>(rc), get<1>(rc)));
      asm volatile("st.shared.b32 [%0], %1;" : : "r"(addr), "r"(pair.u) : "memory");
    }
  }
}

// Part 2, once the warpgroup's stores are visible to it: rows [row0, row0 + kRows) of `tile` to
// rows key0 + row0.. of `dst`, 16 bytes per thread and access, so that a warp writes whole
// 128-byte lines (per-thread stores from the accumulator write each line in 8-byte pieces);
// keys past seqlen_k are skipped. Needs 16-byte aligned rows (the caller checks).
template <int kRows, int kCols, class Element, class SmemTile>
CUTE_DEVICE void copy_key_rows(SmemTile const& tile, int row0, Element* dst, int64_t row_stride, int key0,
                               int seqlen_k, int wg_tid) {
  constexpr int kChunks = kCols * int(sizeof(Element)) / 16;  // per row
  static_assert(kChunks * 16 == kCols * int(sizeof(Element)) && (kRows * kChunks) % 128 == 0);
  CUTE_UNROLL
  for (int i = 0; i < kRows * kChunks / 128; ++i) {
    const int idx = i * 128 + wg_tid;
    const int row = row0 + idx / kChunks;
    const int col = (idx % kChunks) * (16 / int(sizeof(Element)));
    if (key0 + row < seqlen_k) {
      uint4 v;
      asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "r"(cute::cast_smem_ptr_to_uint(&tile(row, col)))
                   : "memory");
      *reinterpret_cast<uint4*>(dst + int64_t(key0 + row) * row_stride + col) = v;
    }
  }
}

// dK's and dV's first rows of this CTA's (batch entry, KV head), and whether both take
// copy_key_rows' 16-byte stores (16-byte aligned start and row stride). Every consumer tests
// both tensors, so that all agree on the path and meet at its barriers.
template <class Element>
struct KeyRowDests {
  Element* dk;
  Element* dv;
  bool aligned;

  CUTE_DEVICE KeyRowDests(BwdParams const& params, SeqInfo const& seq, int batch, int head_kv) {
    const bool varlen = params.cu_seqlens_q != nullptr;
    auto base = [&](void* ptr, int64_t row_stride, int64_t head_stride, int64_t batch_stride) {
      return static_cast<Element*>(ptr) +
             (varlen ? int64_t(seq.key_row_base) * row_stride : int64_t(batch) * batch_stride) +
             int64_t(head_kv) * head_stride;
    };
    auto aligned16 = [](Element const* rows, int64_t row_stride) {
      return reinterpret_cast<uintptr_t>(rows) % 16 == 0 && (row_stride * int64_t(sizeof(Element))) % 16 == 0;
    };
    dk = base(params.dk, params.dk_row_stride, params.dk_head_stride, params.dk_batch_stride);
    dv = base(params.dv, params.dv_row_stride, params.dv_head_stride, params.dv_batch_stride);
    aligned = aligned16(dk, params.dk_row_stride) && aligned16(dv, params.dv_row_stride);
  }
};

// Dropout's keep bits of a step (bit r * kCols + c: element (r, c) of the rowcol view kept; all
// ones without dropout), drawn before the step's accumulators come alive so that the Philox
// rounds have the registers to themselves.
template <bool kHasDropout, int kCols, class Coords>
CUTE_DEVICE uint64_t step_keep_bits(BwdParams const& params, BwdSteps const& steps, int step, int batch,
                                    Coords const& coords, int key0, int query0) {
  if constexpr (kHasDropout) {
    return dropout_keep_bits<kCols>(DropoutKey(params.philox_seed, params.philox_offset, batch, params.num_heads_q,
                                               steps.head(step), params.dropout_threshold),
                                    coords, key0, query0);
  } else {
    return ~uint64_t(0);
  }
}

// Whether key `key` is visible to the query whose aligned key is `diag` (past seqlen_k: no).
template <class Mask>
CUTE_DEVICE bool key_visible(Mask const& mask, int seqlen_k, int key, int diag) {
  return key < seqlen_k && (mask.window_right < 0 || key <= diag + mask.window_right) &&
         (mask.window_left < 0 || key >= diag - mask.window_left);
}

// Whether every (key, query) pair of the block (keys key0.., queries query0..) is visible, so the
// mask can be skipped (rows past seqlen_q need none: their LSE is +inf).
template <int kBlockM, int kBlockN, class Mask>
CUTE_DEVICE bool block_is_interior(Mask const& mask, int seqlen_k, int key0, int query0, int diag_shift) {
  return key0 + kBlockN <= seqlen_k &&
         (mask.window_right < 0 || key0 + kBlockN - 1 <= query0 + diag_shift + mask.window_right) &&
         (mask.window_left < 0 || key0 >= query0 + kBlockM - 1 + diag_shift - mask.window_left);
}

// The tail split's exchange at the end of a piece (common/bwd_tail_split.h): every consumer
// thread adds its dK and dV accumulators into the block's workspace slot (16-byte reductions in
// the accumulators' own order: element i of thread t at float 4 (256 (i / 4) + t) + i % 4, so
// that a warp's adds cover 512 contiguous bytes), the piece counts itself in, and the piece that
// counts last reads the sums back into the accumulators (its own part included). Returns whether
// this piece was last: it then writes dK and dV; the others are done.
template <class Traits, class Acc>
CUTE_DEVICE bool sum_tail_pieces(BwdParams const& params, typename Traits::SharedStorage& storage, int tail,
                                 Acc& acc_dk, Acc& acc_dv, int tid) {
  constexpr int kThreads = Traits::kNumMmaThreads;
  constexpr int kVecs = decltype(size(acc_dk))::value / 4;
  static_assert(kVecs * 4 == decltype(size(acc_dk))::value &&
                kVecs * 4 * kThreads == Traits::kBlockN * Traits::kHeadDim);
  float* slot = params.tail_accum + int64_t(tail) * 2 * Traits::kBlockN * Traits::kHeadDim;
  auto add = [&](Acc const& acc, float* dst) {
    CUTE_UNROLL
    for (int i = 0; i < kVecs; ++i) {
      sm80::red_add_f32x4(dst + 4 * (i * kThreads + tid), acc(4 * i), acc(4 * i + 1), acc(4 * i + 2), acc(4 * i + 3));
    }
  };
  add(acc_dk, slot);
  add(acc_dv, slot + Traits::kBlockN * Traits::kHeadDim);
  __threadfence();  // this thread's adds come before the piece's count
  barrier_sync_any(kThreads, BwdBarrier::kTailCounted);
  if (tid == 0) {
    const int done = atomicAdd(params.tail_counters + tail, 1);
    __threadfence();
    storage.tail_last = done == params.tail.pieces - 1;
  }
  barrier_sync_any(kThreads, BwdBarrier::kTailCounted);
  if (!storage.tail_last) { return false; }
  __threadfence();
  auto read = [&](Acc& acc, const float* src) {
    CUTE_UNROLL
    for (int i = 0; i < kVecs; ++i) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(src + 4 * (i * kThreads + tid)));
      acc(4 * i) = v.x;
      acc(4 * i + 1) = v.y;
      acc(4 * i + 2) = v.z;
      acc(4 * i + 3) = v.w;
    }
  };
  read(acc_dk, slot);
  read(acc_dv, slot + Traits::kBlockN * Traits::kHeadDim);
  return true;
}

// Keys split: each consumer warpgroup owns 64 keys and computes all five products for them.
template <class Traits, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi, bool kHasDropout, class Mask>
CUTE_DEVICE void consume_keys_split(BwdKernelParams<Traits> const& kp, typename Traits::SharedStorage& storage,
                                    sm80::DqOrder const& dq_order, BwdItem<Traits, Mask> const* entry) {
  using Element = typename Traits::Element;
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  using NamedBarrier = cutlass::arch::NamedBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDim = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;
  constexpr int kNumMmaThreads = Traits::kNumMmaThreads;
  BwdParams const& params = kp.bwd;
  for_each_item<Traits, Mask>(kp, storage, dq_order, entry, true, [&](BwdItem<Traits, Mask> const& item)
                                                                   __attribute__((always_inline)) {
    const int tid = thread_index_opaque<Traits>() - 128;  // per item: see thread_index_opaque
    Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQ{});     // (M, d, stages)
    // (M, d, stages)
    Tensor sdO = make_tensor(make_smem_ptr(Traits::dout_smem(storage)), typename Traits::SmemLayoutdO{});
    Tensor sQt = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQt{});    // (d, M, stages)
    Tensor sdOt = make_tensor(make_smem_ptr(Traits::dout_smem(storage)), typename Traits::SmemLayoutdOt{});
    Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});      // (N, d)
    Tensor sV = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutV{});      // (N, d)
    Tensor sKt = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutKt{});    // (d, N)
    Tensor sdS = make_tensor(make_smem_ptr(storage.ds.data()), typename Traits::SmemLayoutdS{});   // (M, N, 2)
    Tensor sdSt = make_tensor(make_smem_ptr(storage.ds.data()), typename Traits::SmemLayoutdSt{}); // (N, M, 2)

    typename Traits::TiledMmaS mma_sdp;
    typename Traits::TiledMmadV mma_dkv;
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
    Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);     // per dS buffer
    Tensor tdQrKt = thr_dq.partition_fragment_B(sKt);

    Tensor acc_dk = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kDim>>{});
    Tensor acc_dv = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kDim>>{});
    // (keys, queries) coordinates of this thread's S^T elements.
    Tensor tScS = thr_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kBlockM>>{}));
    Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));
    using SFragment = decltype(partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{}));
    Tensor tP = make_tensor<Element>(acc_layout_as_a_operand(SFragment{}.layout()));
    Tensor tdS = make_tensor<Element>(acc_layout_as_a_operand(SFragment{}.layout()));
    constexpr int kCols = decltype(size<1>(acc_layout_rowcol(SFragment{}.layout())))::value;
    // stmatrix.trans: dS^T's 8 x 8 blocks land transposed, keys contiguous as sdS wants them.
    auto smem_copy_ds = make_tiled_copy_C(Copy_Atom<SM90_U16x8_STSM_T, Element>{}, mma_sdp);
    auto smem_thr_copy_ds = smem_copy_ds.get_thread_slice(tid);
    Tensor tdSsdS = smem_thr_copy_ds.partition_D(sdSt);  // (CPY, CPY_N, CPY_M, 2)
    Tensor tdQcdQ = thr_dq.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kDim>>{}));

    // The exponent's factor on the (capped) score: softmax_scale, or softcap with a cap.
    const float scale_log2 = params.logit_scale_log2;

    // dQ = dS K of step s, and its hand-over to the writer warp. With two dQ tiles (kPipelineDq)
    // step s's product is issued at the start of step s + 1, ahead of that step's S^T, and handed
    // over while S^T runs, so the tensor cores are not idle during the hand-over; every wgmma group
    // still completes within its loop iteration (ptxas serializes the kernel's wgmmas when a group
    // is in flight across the back edge). Otherwise at the end of step s itself.
    constexpr bool kPipelineDq = Traits::kDqDouble && !kHasSoftcap && !kHasAlibi && !kHasDropout;  // (they spill)
    Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kDim>>{});
    auto issue_dq = [&](int s) __attribute__((always_inline)) {
      Tensor tdQrdS_buf = tdQrdS(_, _, _, s & 1);
      wgmma</*kZeroInit=*/true>(mma_dq, tdQrdS_buf, tdQrKt, acc_dq);
    };
    auto hand_dq = [&](int s) __attribute__((always_inline)) {
      warpgroup_fence_operand(acc_dq);
      if constexpr (Traits::kDqDouble) {
        hand_dq_to_tma_writer<Traits>(storage, acc_dq, s, tid);
      } else {
        hand_dq_to_writer<Traits>(storage, acc_dq, tdQcdQ);
      }
    };

    SeqInfo const& seq = item.seq;
    Mask const& mask = item.mask;
    BwdSteps const& steps = item.steps;
    const int batch = item.tile.batch;
    const int key0 = item.tile.n_block * kBlockN;
    const int diag_shift = seq.seqlen_k - seq.seqlen_q;
    clear(acc_dk);
    clear(acc_dv);
    FullBarrier::wait(&storage.kv_full, item.ordinal & 1);

    for (int step = 0; step < steps.count; ++step) {
      const int g = steps.base + step;  // the CTA's step count
      const int stage = stage_of<kStages>(g);
      const int buf = g & 1;
      const int query0 = steps.block(step) * kBlockM;
      [[maybe_unused]] const uint64_t keep_bits =
          step_keep_bits<kHasDropout, kCols>(params, steps, step, batch, tScS_rc, key0, query0);
      if constexpr (kPipelineDq) { issue_dq(g - 1); }  // an item's step 0: an unused product of stale dS
      FullBarrier::wait(&storage.qdo_full[stage], phase_of<kStages>(g));
      Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
      Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
      wgmma</*kZeroInit=*/true>(mma_sdp, tSrK, tSrQ(_, _, _, Traits::q_slot(stage)), acc_s);
      if constexpr (kPipelineDq) {
        warpgroup_wait<1>();  // the previous step's dQ; S^T may run
        if (step > 0) { hand_dq(g - 1); }
      }
      wgmma</*kZeroInit=*/true>(mma_sdp, tdPrV, tdPrdO(_, _, _, Traits::do_slot(stage)), acc_dp);
      Tensor s = make_tensor(acc_s.data(), acc_layout_rowcol(acc_s.layout()));    // (keys, queries)
      Tensor dp = make_tensor(acc_dp.data(), acc_layout_rowcol(acc_dp.layout()));
      if constexpr (kHasSoftcap || kHasAlibi || kHasDropout) {
        // Logit transforms and dropout: one pass over S^T and dP^T once both products are done,
        // so that the softcap's derivative 1 - tanh^2 needs no register array of its own.
        warpgroup_wait<0>();
        warpgroup_fence_operand(acc_s);
        warpgroup_fence_operand(acc_dp);
        [[maybe_unused]] float raw_slope = 0.f;
        if constexpr (kHasAlibi) {
          raw_slope = params.alibi_slopes[batch * params.alibi_batch_stride + steps.head(step)] / params.logit_scale;
        }

        CUTE_UNROLL
        for (int c = 0; c < kCols; ++c) {
          const int col = get<1>(tScS_rc(0, c));
          const float lse_log2 = storage.lse_log2[stage][col];
          const float d = storage.dsum[stage][col];
          const int diag = query0 + col + diag_shift;  // the query's aligned key
          CUTE_UNROLL
          for (int r = 0; r < size<0>(s); ++r) {
            const int key = key0 + get<0>(tScS_rc(r, c));
            float x = s(r, c);
            float dcap = 1.f;
            if constexpr (kHasSoftcap) {
              x = fast_tanh(x * params.softcap_prescale);
              dcap = 1.f - x * x;
            }
            if constexpr (kHasAlibi) { x -= raw_slope * fabsf(float(diag - key)); }
            const float p = key_visible(mask, seq.seqlen_k, key, diag) ? fast_exp2(x * scale_log2 - lse_log2) : 0.f;
            float dp_eff = dp(r, c);
            if constexpr (kHasDropout) {
              // Kept elements: P unscaled into dV (scaled once at the end), dP scaled; dropped: 0.
              const bool keep = (keep_bits >> (r * kCols + c)) & 1;
              dp_eff = keep ? dp_eff * params.dropout_scale : 0.f;
              s(r, c) = keep ? p : 0.f;
            } else {
              s(r, c) = p;
            }
            dp(r, c) = p * (dp_eff - d) * dcap;
          }
        }
        convert_fragment_into(acc_s, tP);
        wgmma</*kZeroInit=*/false>(mma_dkv, tP, tdVrdOt(_, _, _, Traits::do_slot(stage)), acc_dv);
      } else {
        warpgroup_wait<1>();  // S^T; dP^T may still run
        warpgroup_fence_operand(acc_s);

        // P^T = exp2(S^T * scale - LSE) on visible (key, query) pairs, 0 elsewhere (rows past the
        // end have LSE = +inf); column-outer so one LSE lives in a register at a time.
        // Columns come in adjacent pairs (the accumulator's innermost mode): one 8-byte load each.
        // A block whose every (key, query) pair is visible skips the mask (rows past seqlen_q
        // need none: their LSE is +inf).
        static_assert(kCols % 2 == 0);
        const bool interior = block_is_interior<kBlockM, kBlockN>(mask, seq.seqlen_k, key0, query0, diag_shift);
        if (interior) {
          CUTE_UNROLL
          for (int c = 0; c < kCols; c += 2) {
            const float2 lse2 = *reinterpret_cast<const float2*>(&storage.lse_log2[stage][get<1>(tScS_rc(0, c))]);
            CUTE_UNROLL
            for (int r = 0; r < size<0>(s); ++r) {
              s(r, c) = fast_exp2(s(r, c) * scale_log2 - lse2.x);
              s(r, c + 1) = fast_exp2(s(r, c + 1) * scale_log2 - lse2.y);
            }
          }
        } else {
          CUTE_UNROLL
          for (int c = 0; c < kCols; c += 2) {
            const int col = get<1>(tScS_rc(0, c));
            const float2 lse2 = *reinterpret_cast<const float2*>(&storage.lse_log2[stage][col]);
            CUTE_UNROLL
            for (int j = 0; j < 2; ++j) {
              const float lse_log2 = j == 0 ? lse2.x : lse2.y;
              const int diag = query0 + col + j + diag_shift;  // the query's aligned key
              CUTE_UNROLL
              for (int r = 0; r < size<0>(s); ++r) {
                const int key = key0 + get<0>(tScS_rc(r, c + j));
                s(r, c + j) =
                    key_visible(mask, seq.seqlen_k, key, diag) ? fast_exp2(s(r, c + j) * scale_log2 - lse_log2) : 0.f;
              }
            }
          }
        }
        convert_fragment_into(acc_s, tP);
        wgmma</*kZeroInit=*/false>(mma_dkv, tP, tdVrdOt(_, _, _, Traits::do_slot(stage)), acc_dv);
        warpgroup_wait<1>();  // dP^T; dV may still run
        warpgroup_fence_operand(acc_dp);
        CUTE_UNROLL
        for (int c = 0; c < kCols; c += 2) {
          const float2 d2 = *reinterpret_cast<const float2*>(&storage.dsum[stage][get<1>(tScS_rc(0, c))]);
          CUTE_UNROLL
          for (int r = 0; r < size<0>(s); ++r) {
            dp(r, c) = s(r, c) * (dp(r, c) - d2.x);
            dp(r, c + 1) = s(r, c + 1) * (dp(r, c + 1) - d2.y);
          }
        }
      }
      convert_fragment_into(acc_dp, tdS);
      wgmma</*kZeroInit=*/false>(mma_dkv, tdS, tdKrQt(_, _, _, Traits::q_slot(stage)), acc_dk);

      // dS to shared memory (the same registers in the accumulator's order), visible to wgmma's
      // async proxy; both warpgroups' keys are needed for dQ.
      Tensor tdS_c = make_tensor(tdS.data(), SFragment{}.layout());
      copy(smem_copy_ds, smem_thr_copy_ds.retile_S(tdS_c), tdSsdS(_, _, _, buf));
      cutlass::arch::fence_view_async_shared();
      NamedBarrier::sync(kNumMmaThreads, int(BwdBarrier::kDsReady));
      if constexpr (!kPipelineDq) { issue_dq(g); }
      warpgroup_wait<0>();  // (dQ and) the dV / dK products that read tP, tdS, Q and dO
      EmptyBarrier::arrive(&storage.qdo_empty[stage]);
      if constexpr (!kPipelineDq) { hand_dq(g); }
    }
    const int last = steps.base + steps.count - 1;
    // Persistent: once no product reads this item's K or V any more (the last dQ product, K;
    // the last dP^T, V), the producer may load the next item's while the epilogue runs.
    if (kPipelineDq && steps.count > 0) {  // (one block: acc_dq must not look live from the start)
      issue_dq(last);
      warpgroup_wait<0>();
      if constexpr (Traits::kPersistent) { EmptyBarrier::arrive(&storage.kv_empty); }
      hand_dq(last);
    } else if (Traits::kPersistent) {
      EmptyBarrier::arrive(&storage.kv_empty);
    }

    // Persistent (Traits::kPersistent): dV and dK are staged in the two dQ tiles, dV in the one
    // whose dQ (step last - 1's) the writer has read already, at once, dK in the other once the
    // writer has read the last dQ too (dq_drained, whose phase every item takes); the next
    // item's first dQ hand-over comes after its first dS barrier, so after every warpgroup's
    // copy. Otherwise in V's and K's tiles, K once the other warpgroup's dQ products, which read
    // all of K, are done.
    auto dk_tile_free = [&]() __attribute__((always_inline)) {
      if constexpr (Traits::kPersistent) {
        EmptyBarrier::wait(&storage.dq_drained, item.ordinal & 1);
      } else {
        barrier_sync_any(kNumMmaThreads, BwdBarrier::kTilesFree);
      }
    };

    // A tail-split piece: the pieces' sums, written by the last of them.
    if (item.piece.piece >= 0 &&
        !sum_tail_pieces<Traits>(params, storage, item.piece.tail, acc_dk, acc_dv, tid)) {
      if constexpr (Traits::kPersistent) { dk_tile_free(); }
      return;
    }

    // dK (times the softmax scale) and dV (times dropout's) through shared memory, each warpgroup
    // its 64 rows, when the rows are 16-byte aligned, else straight from registers.
    const float dv_scale = kHasDropout ? params.dropout_scale : 1.f;
    Tensor tKVc = thr_dkv.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kDim>>{}));
    const KeyRowDests<Element> dst(params, seq, batch, item.tile.head_kv);
    if (dst.aligned) {
      const int group = tid / 128;
      auto through = [&](auto const& dk_tile, auto const& dv_tile) {
        stage_key_rows<Element>(acc_dv, tKVc, dv_tile, dv_scale);
        dk_tile_free();
        stage_key_rows<Element>(acc_dk, tKVc, dk_tile, params.softmax_scale);
        barrier_sync_any(128, BwdBarrier(int(BwdBarrier::kStaged) + group));
        copy_key_rows<kBlockN / 2, kDim>(dk_tile, group * kBlockN / 2, dst.dk, params.dk_row_stride, key0,
                                         seq.seqlen_k, tid % 128);
        copy_key_rows<kBlockN / 2, kDim>(dv_tile, group * kBlockN / 2, dst.dv, params.dv_row_stride, key0,
                                         seq.seqlen_k, tid % 128);
      };
      if constexpr (Traits::kPersistent) {
        auto as_tile = [&](int b, auto layout) {
          return make_tensor(make_smem_ptr(reinterpret_cast<Element*>(Traits::dq_buffer(storage, b))), layout);
        };
        wait_dq_tile<Traits>(storage, last + 1);  // the tile of step last - 1 (that of step last + 1)
        through(as_tile(last & 1, typename Traits::SmemLayoutK{}),
                as_tile((last + 1) & 1, typename Traits::SmemLayoutV{}));
      } else {
        through(sK, sV);
      }
    } else {
      if constexpr (Traits::kPersistent) { dk_tile_free(); }  // (the item's dq_drained phase)
      store_key_rows(acc_dk, tKVc, dst.dk, params.dk_row_stride, key0, seq.seqlen_k, params.softmax_scale);
      store_key_rows(acc_dv, tKVc, dst.dv, params.dv_row_stride, key0, seq.seqlen_k, dv_scale);
    }
  });
}
// Roles split (head dims above 128, or qk != v): warpgroup 0 (kRole 0) computes S^T, P^T and
// dV, warpgroup 1 (kRole 1) dP^T, dS^T and dK, for the same 64 keys; P^T (times the softcap's
// derivative) goes from 0 to 1 through shared memory, dS^T from 1 to both for dQ, whose head
// dim they split. Per step: 1 waits for 0's P^T (kPReady), 0 waits for 1's dS (kDsReady).
template <int kRole, class Traits, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi, bool kHasDropout, class Mask>
CUTE_DEVICE void consume_roles_split(BwdKernelParams<Traits> const& kp, typename Traits::SharedStorage& storage,
                                     sm80::DqOrder const& dq_order, BwdItem<Traits, Mask> const* entry) {
  using Element = typename Traits::Element;
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDim = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;
  constexpr int kNumMmaThreads = Traits::kNumMmaThreads;
  constexpr bool kIsP = kRole == 0;
  // Role 0 accumulates dV (k = dO's columns), role 1 dK (Q's).
  constexpr int kAccDim = kIsP ? Traits::kHeadDimV : Traits::kHeadDim;
  BwdParams const& params = kp.bwd;
  const int tid = threadIdx.x - 128;  // 0..255: dQ's split
  const int wg_tid = tid % 128;       // within the warpgroup: S^T, dP^T, dV, dK
  Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(Traits::dout_smem(storage)), typename Traits::SmemLayoutdO{});
  Tensor sQt = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQt{});
  Tensor sdOt = make_tensor(make_smem_ptr(Traits::dout_smem(storage)), typename Traits::SmemLayoutdOt{});
  Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutV{});
  Tensor sKt = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutKt{});
  Tensor sdS = make_tensor(make_smem_ptr(storage.ds.data()), typename Traits::SmemLayoutdS{});
  Tensor sdSt = make_tensor(make_smem_ptr(storage.ds.data()), typename Traits::SmemLayoutdSt{});

  // The score product of this role (S^T = K Q^T or dP^T = V dO^T) and its gradient product
  // (dV += P^T dO or dK += dS^T Q).
  using MmaScore = std::conditional_t<kIsP, typename Traits::TiledMmaS, typename Traits::TiledMmadP>;
  using MmaGrad = std::conditional_t<kIsP, typename Traits::TiledMmadV, typename Traits::TiledMmadK>;
  MmaScore mma_score;
  MmaGrad mma_grad;
  typename Traits::TiledMmadQ mma_dq;
  auto thr_score = mma_score.get_thread_slice(wg_tid);
  auto thr_grad = mma_grad.get_thread_slice(wg_tid);
  auto thr_dq = mma_dq.get_thread_slice(tid);
  Tensor tAs = [&] {  // K or V: one tile
    if constexpr (kIsP) {
      return thr_score.partition_fragment_A(sK);
    } else {
      return thr_score.partition_fragment_A(sV);
    }
  }();
  Tensor tBs = [&] {  // Q or dO, per stage
    if constexpr (kIsP) {
      return thr_score.partition_fragment_B(sQ);
    } else {
      return thr_score.partition_fragment_B(sdO);
    }
  }();
  Tensor tBg = [&] {
    if constexpr (kIsP) {
      return thr_grad.partition_fragment_B(sdOt);  // dV's B: dO^T
    } else {
      return thr_grad.partition_fragment_B(sQt);   // dK's B: Q^T
    }
  }();
  Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);
  Tensor tdQrKt = thr_dq.partition_fragment_B(sKt);
  Tensor acc_grad = partition_fragment_C(mma_grad, Shape<Int<kBlockN>, Int<kAccDim>>{});

  Tensor tScS = thr_score.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kBlockM>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));
  using SFragment = decltype(partition_fragment_C(mma_score, Shape<Int<kBlockN>, Int<kBlockM>>{}));
  constexpr int kCols = decltype(size<1>(acc_layout_rowcol(SFragment{}.layout())))::value;
  static_assert(kCols % 2 == 0);
  Tensor tA = make_tensor<Element>(acc_layout_as_a_operand(SFragment{}.layout()));  // P^T or dS^T
  // The P^T hand-off in the accumulator's order, 16 bytes a thread per row of the buffer.
  Tensor hand = make_tensor<Element>(SFragment{}.layout());
  Tensor hand_rc = make_tensor(hand.data(), acc_layout_rowcol(hand.layout()));
  Tensor hand_vec = recast<uint128_t>(hand);
  auto* hand_smem = reinterpret_cast<uint128_t*>(storage.p_handoff.data());
  auto smem_copy_ds = make_tiled_copy_C(Copy_Atom<SM90_U16x8_STSM_T, Element>{}, mma_score);
  auto smem_thr_copy_ds = smem_copy_ds.get_thread_slice(wg_tid);
  Tensor tdSsdS = smem_thr_copy_ds.partition_D(sdSt);
  Tensor tdQcdQ = thr_dq.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kDim>>{}));

  const float scale_log2 = params.logit_scale_log2;

  static_assert(!Traits::kPersistent);  // one item per CTA: dK / dV leave through K's and V's tiles
  for_each_item<Traits, Mask>(kp, storage, dq_order, entry, true, [&](BwdItem<Traits, Mask> const& item)
                                                                   __attribute__((always_inline)) {
    SeqInfo const& seq = item.seq;
    Mask const& mask = item.mask;
    BwdSteps const& steps = item.steps;
    const int batch = item.tile.batch;
    const int key0 = item.tile.n_block * kBlockN;
    const int diag_shift = seq.seqlen_k - seq.seqlen_q;
    clear(acc_grad);
    FullBarrier::wait(&storage.kv_full, item.ordinal & 1);

    for (int step = 0; step < steps.count; ++step) {
      const int g = steps.base + step;  // the CTA's step count
      const int stage = stage_of<kStages>(g);
      const int buf = g & 1;
      const int query0 = steps.block(step) * kBlockM;
      [[maybe_unused]] const uint64_t keep_bits =
          step_keep_bits<kHasDropout, kCols>(params, steps, step, batch, tScS_rc, key0, query0);
      FullBarrier::wait(&storage.qdo_full[stage], phase_of<kStages>(g));
      Tensor acc = partition_fragment_C(mma_score, Shape<Int<kBlockN>, Int<kBlockM>>{});
      const int slot = kIsP ? Traits::q_slot(stage) : Traits::do_slot(stage);
      wgmma</*kZeroInit=*/true>(mma_score, tAs, tBs(_, _, _, slot), acc);
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc);
      Tensor x_rc = make_tensor(acc.data(), acc_layout_rowcol(acc.layout()));  // (keys, queries)

      if constexpr (kIsP) {
        [[maybe_unused]] float raw_slope = 0.f;
        if constexpr (kHasAlibi) {
          raw_slope = params.alibi_slopes[batch * params.alibi_batch_stride + steps.head(step)] / params.logit_scale;
        }
        const bool interior = block_is_interior<kBlockM, kBlockN>(mask, seq.seqlen_k, key0, query0, diag_shift);
        // P^T = exp2(x * scale - LSE) with x the (capped, ALiBi-shifted) score, 0 where masked;
        // the hand-off carries P^T (1 - tanh^2) for the softcap's chain rule, dV's operand the
        // kept P^T (dropout's scale applied once at the end).
        auto softmax = [&](auto full_block) {
          CUTE_UNROLL
          for (int c = 0; c < kCols; c += 2) {
            const int col = get<1>(tScS_rc(0, c));
            const float2 lse2 = *reinterpret_cast<const float2*>(&storage.lse_log2[stage][col]);
            CUTE_UNROLL
            for (int j = 0; j < 2; ++j) {
              const float lse_log2 = j == 0 ? lse2.x : lse2.y;
              const int diag = query0 + col + j + diag_shift;  // the query's aligned key
              CUTE_UNROLL
              for (int r = 0; r < size<0>(x_rc); ++r) {
                const int key = key0 + get<0>(tScS_rc(r, c + j));
                float x = x_rc(r, c + j);
                [[maybe_unused]] float dcap = 1.f;
                if constexpr (kHasSoftcap) {
                  x = fast_tanh(x * params.softcap_prescale);
                  dcap = 1.f - x * x;
                }
                if constexpr (kHasAlibi) { x -= raw_slope * fabsf(float(diag - key)); }
                bool visible = true;
                if constexpr (!decltype(full_block)::value) {
                  visible = key_visible(mask, seq.seqlen_k, key, diag);
                }
                const float p = visible ? fast_exp2(x * scale_log2 - lse_log2) : 0.f;
                if constexpr (kHasSoftcap || kHasDropout) { hand_rc(r, c + j) = Element(p * dcap); }
                if constexpr (kHasDropout) {
                  x_rc(r, c + j) = (keep_bits >> (r * kCols + c + j)) & 1 ? p : 0.f;
                } else {
                  x_rc(r, c + j) = p;
                }
              }
            }
          }
        };
        if (interior) {
          softmax(std::true_type{});
        } else {
          softmax(std::false_type{});
        }
        convert_fragment_into(acc, tA);
        // The hand-off: P^T itself where no softcap or dropout changes it (the same registers as
        // dV's operand), else the values computed above.
        Tensor hand_src = [&] {
          if constexpr (kHasSoftcap || kHasDropout) {
            return hand_vec;
          } else {
            return recast<uint128_t>(make_tensor(tA.data(), SFragment{}.layout()));
          }
        }();
        CUTE_UNROLL
        for (int i = 0; i < size(hand_src); ++i) { hand_smem[i * 128 + wg_tid] = hand_src(i); }
        barrier_arrive_any(kNumMmaThreads, BwdBarrier::kPReady);
        wgmma</*kZeroInit=*/false>(mma_grad, tA, tBg(_, _, _, Traits::do_slot(stage)), acc_grad);  // dV += P^T dO
        barrier_sync_any(kNumMmaThreads, BwdBarrier::kDsReady);
      } else {
        barrier_sync_any(kNumMmaThreads, BwdBarrier::kPReady);
        CUTE_UNROLL
        for (int i = 0; i < size(hand_vec); ++i) { hand_vec(i) = hand_smem[i * 128 + wg_tid]; }
        // dS^T = P^T (dP^T - D), dP^T with dropout's mask and scale, times the softcap's derivative
        // (carried in the hand-off).
        CUTE_UNROLL
        for (int c = 0; c < kCols; c += 2) {
          const float2 d2 = *reinterpret_cast<const float2*>(&storage.dsum[stage][get<1>(tScS_rc(0, c))]);
          CUTE_UNROLL
          for (int j = 0; j < 2; ++j) {
            CUTE_UNROLL
            for (int r = 0; r < size<0>(x_rc); ++r) {
              float dp = x_rc(r, c + j);
              if constexpr (kHasDropout) {
                dp = (keep_bits >> (r * kCols + c + j)) & 1 ? dp * params.dropout_scale : 0.f;
              }
              x_rc(r, c + j) = float(hand_rc(r, c + j)) * (dp - (j == 0 ? d2.x : d2.y));
            }
          }
        }
        convert_fragment_into(acc, tA);
        wgmma</*kZeroInit=*/false>(mma_grad, tA, tBg(_, _, _, Traits::q_slot(stage)), acc_grad);  // dK += dS^T Q
        Tensor tdS_c = make_tensor(tA.data(), SFragment{}.layout());
        copy(smem_copy_ds, smem_thr_copy_ds.retile_S(tdS_c), tdSsdS(_, _, _, buf));
        cutlass::arch::fence_view_async_shared();
        barrier_arrive_any(kNumMmaThreads, BwdBarrier::kDsReady);
      }

      Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kDim>>{});
      Tensor tdQrdS_buf = tdQrdS(_, _, _, buf);
      wgmma</*kZeroInit=*/true>(mma_dq, tdQrdS_buf, tdQrKt, acc_dq);
      warpgroup_wait<0>();  // dQ, and the dV / dK product that read tA, Q and dO
      warpgroup_fence_operand(acc_dq);
      if constexpr (Traits::kDqInStage) {
        // dQ over this stage's Q and dO, once neither warpgroup's products read them.
        barrier_sync_any(kNumMmaThreads, BwdBarrier::kStageRead);
        stage_dq_swizzled<Traits>(acc_dq, Traits::dq_stage_tile(storage, stage), tid);
        cutlass::arch::fence_view_async_shared();
        EmptyBarrier::arrive(&storage.dq_full[stage]);
      } else {
        EmptyBarrier::arrive(&storage.qdo_empty[stage]);
        hand_dq_to_writer<Traits>(storage, acc_dq, tdQcdQ);
      }
    }

    // dV (role 0, times dropout's scale) or dK (role 1, times the softmax scale), through V's or
    // K's shared tile once neither role's products read them (role 1's dP^T reads V, both dQ
    // products all of K) when every row is 16-byte aligned (both tensors: KeyRowDests), else
    // straight from registers.
    Tensor tKVc = thr_grad.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kAccDim>>{}));
    const KeyRowDests<Element> dst(params, seq, batch, item.tile.head_kv);
    Element* rows = kIsP ? dst.dv : dst.dk;
    const int64_t row_stride = kIsP ? params.dv_row_stride : params.dk_row_stride;
    const float scale = kIsP ? (kHasDropout ? params.dropout_scale : 1.f) : params.softmax_scale;
    if (dst.aligned) {
      auto through = [&](auto& tile) {
        stage_key_rows<Element>(acc_grad, tKVc, tile, scale);
        barrier_sync_any(128, BwdBarrier(int(BwdBarrier::kStaged) + kRole));
        copy_key_rows<kBlockN, kAccDim>(tile, 0, rows, row_stride, key0, seq.seqlen_k, wg_tid);
      };
      barrier_sync_any(kNumMmaThreads, BwdBarrier::kTilesFree);
      if constexpr (kIsP) {
        through(sV);
      } else {
        through(sK);
      }
    } else {
      store_key_rows(acc_grad, tKVc, rows, row_stride, key0, seq.seqlen_k, scale);
    }
  });
}

template <class Traits, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi, bool kHasDropout>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    bwd_kernel(const __grid_constant__ BwdKernelParams<Traits> kp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  using Mask = AttentionMask<kIsCausal, Traits::kBlockM, Traits::kBlockN>;
  BwdParams const& params = kp.bwd;
  const sm80::DqOrder dq_order(params.deterministic, kIsCausal || params.window_right >= 0);

  // One item per CTA: decoded here, by every thread with all its registers (the producer warps
  // keep 24 after the role split, where the decode took ~1,300 spilling instructions before
  // their first load: 64 causal 2k -5%, bench/NOTES.md session 25). A persistent CTA's roles
  // decode each item as they take it.
  using Item = BwdItem<Traits, Mask>;
  extern __shared__ __align__(1024) char smem_raw[];
  auto& storage = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
  auto run = [&](Item const* entry) __attribute__((always_inline)) {
    if (threadIdx.x == 0) {
      FullBarrier::init(&storage.kv_full, /*arrive_count=*/1);
      EmptyBarrier::init(&storage.kv_empty, /*arrive_count=*/Traits::kNumMmaThreads);
      EmptyBarrier::init(&storage.dq_drained, /*arrive_count=*/1);
      for (int i = 0; i < 2; ++i) {
        EmptyBarrier::init(&storage.item_full[i], /*arrive_count=*/1);
        EmptyBarrier::init(&storage.item_empty[i], /*arrive_count=*/kItemReaders<Traits>);
      }
      for (int s = 0; s < Traits::kStages; ++s) {
        FullBarrier::init(&storage.qdo_full[s], /*arrive_count=*/1 + 32);  // TMA thread + loader warp
        EmptyBarrier::init(&storage.qdo_empty[s], /*arrive_count=*/Traits::kDqInStage ? 1 : Traits::kNumMmaThreads);
        EmptyBarrier::init(&storage.dq_full[s], /*arrive_count=*/Traits::kNumMmaThreads);
      }
      for (int b = 0; b < 2; ++b) { EmptyBarrier::init(&storage.dq_empty[b], /*arrive_count=*/1); }
      cutlass::arch::fence_barrier_init();
    }
    __syncthreads();

    if (threadIdx.x < 128) {
      cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
      bwd_producer<Traits, Mask>(kp, storage, dq_order, entry);
      return;
    }
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    if constexpr (Traits::kSplitRoles) {
      if (threadIdx.x < 256) {
        consume_roles_split<0, Traits, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, Mask>(kp, storage, dq_order, entry);
      } else {
        consume_roles_split<1, Traits, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, Mask>(kp, storage, dq_order, entry);
      }
    } else {
      consume_keys_split<Traits, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, Mask>(kp, storage, dq_order, entry);
    }
  };
  if constexpr (Traits::kPersistent) {
    run(nullptr);
  } else {
    const Item entry(params, dq_order, int(blockIdx.x));
    if (!entry.has_keys()) { return; }  // this entry has fewer key blocks
    run(&entry);
  }
#endif
}

}  // namespace flashgen::sm90
