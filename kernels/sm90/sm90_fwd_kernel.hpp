// Hopper forward attention, warp-specialized and persistent.
//
// A grid of at most one CTA per SM walks the (query block, head, batch entry) tiles in the order
// of sm90_fwd_tile.h: CTA c starts with tile c and then takes the next one from a global counter
// (or tile + gridDim.x without one) when its loads of the current one are issued, and passes
// each tile's coordinates to its consumers through shared memory. Warpgroup 0 is the producer: one
// thread issues TMA loads of each tile's Q and of its K and V blocks into a kStages-deep
// shared-memory ring whose slots complete on mbarriers, running ahead into the next tile while
// the consumers finish the current one. The other two (three at head dim 64) are consumers, 64
// query rows each: S = Q K^T by wgmma from shared memory, the online softmax in registers, then
// O += P V by wgmma with P straight from registers. Within a consumer the softmax of block n overlaps the
// P V wgmma of block n + 1; between the consumers, named barriers make them take turns issuing
// wgmma (ping-pong), so one's softmax runs under the others' GEMMs. Key blocks are visited from
// the last one down, as in the SM80 path, so masked blocks come first.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "common/cute_utils.hpp"
#include "common/dropout.hpp"
#include "common/fwd_params.h"
#include "common/logit_transforms.hpp"
#include "common/mask.hpp"
#include "common/online_softmax.hpp"
#include "common/seq_info.hpp"
#include "common/tile_copy.hpp"
#include "sm90/sm90_fragment.hpp"
#include "sm90/sm90_fwd_traits.hpp"
#include "sm90/sm90_fwd_trace.hpp"

namespace flashgen::sm90 {

using namespace cute;

// Named barriers (CUTLASS offsets them past its reserved ones): the consumers' wgmma turns
// (kTurn0 + consumer) and the epilogue's hand-over of the output tile in shared memory (all
// consumers, or kEpilogue0 + consumer), for up to three consumers.
enum class FwdBarrier : int { kTurn0 = 1, kEpilogue = 4, kEpilogue0 = 5 };
static_assert(int(cutlass::arch::ReservedNamedBarriers::FirstUserBarrier) + int(FwdBarrier::kEpilogue0) + 3 <= 16,
              "the forward's named barriers exceed the 16 hardware barriers");

// FP8: probabilities are scaled by 2^8 before they are rounded to e4m3 (max 448), so that the
// small ones keep e4m3's normal precision; the row sums carry the same factor, which cancels.
constexpr float kFp8ProbExp2Offset = 8.f;

// acc_o's rescale is skipped by warp vote where every correction is 1: worth it from 64
// accumulator columns per thread and for FP8 (bf16 hdim 64, 32 FMUL per block: -3%).
template <bool kIsFp8, int kDimV>
constexpr bool kSkippableRescale = kIsFp8 || kDimV >= 128;
// The rescale slack (online_softmax.hpp) that makes the skip the common case, only where there
// is a skip: 2^8 for 16-bit P; FP8 P already carries 2^8 and e4m3 ends at 448 = 2^8.8, so 0.75,
// measured +3-5% at head dim 256 and -2-3% at 128 (H200, same run; its rescale is half as long),
// so FP8 head dims up to 128 keep the exact max.
template <bool kIsFp8, int kDimV>
constexpr float kRescaleSlack =
    !kSkippableRescale<kIsFp8, kDimV> ? 0.f : !kIsFp8 ? kRescaleSlackLog2 : kDimV > 128 ? 0.75f : 0.f;

CUTE_DEVICE float fp8_scale_at(Fp8Scale const& s, int batch, int head, int row) {
  if (s.scale == nullptr) { return 1.f; }
  const int64_t block = s.block_stride == 0 ? 0 : int64_t(row / s.block_rows) * s.block_stride;
  return __ldg(s.scale + batch * s.batch_stride + head * s.head_stride + block);
}

// The scales of one (batch entry, KV head) by key block of the kernel, without an integer
// division per block: scale blocks hold a whole number of kernel blocks (block_rows is a
// multiple of kBlockN: the planner checks 128, and 192 before it takes 192-key blocks), and
// (n + 0.5) / blocks_per_scale stays clear of integers in float.
template <int kBlockN>
struct Fp8KeyScales {
  const float* base;
  int64_t block_stride;
  float inv_blocks_per_scale;

  CUTE_DEVICE Fp8KeyScales(Fp8Scale const& s, int batch, int head)
      : base(s.scale == nullptr ? nullptr : s.scale + batch * s.batch_stride + head * s.head_stride),
        block_stride(s.block_stride),
        inv_blocks_per_scale(s.block_stride == 0 ? 0.f : float(kBlockN) / float(s.block_rows)) {}

  CUTE_DEVICE float operator()(int n) const {
    if (base == nullptr) { return 1.f; }
    return __ldg(base + int64_t((float(n) + 0.5f) * inv_blocks_per_scale) * block_stride);
  }
};

// Calls f with a null pointer of the output's element type: the input's, or for FP8 the
// 16-bit type the call asked for.
template <class Traits, class F>
CUTE_DEVICE void with_out_type(FwdParams const& params, F&& f) {
  if constexpr (Traits::kIsFp8) {
    if (params.out_fp16) {
      f(static_cast<cutlass::half_t*>(nullptr));
      return;
    }
  }
  f(static_cast<typename Traits::ElementO*>(nullptr));
}

template <class Traits, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi, bool kHasDropout, bool kIsPaged,
          bool kPackGqa>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    fwd_kernel(const __grid_constant__ FwdKernelParams<Traits> kp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Element = typename Traits::Element;
  using Pipeline = typename Traits::Pipeline;
  using PipelineState = typename Pipeline::PipelineState;
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  using NamedBarrier = cutlass::arch::NamedBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDimQK = Traits::kHeadDimQK;
  constexpr int kDimV = Traits::kHeadDimV;
  constexpr int kNumMmaThreads = Traits::kNumMmaThreads;
  constexpr bool kIsFp8 = Traits::kIsFp8;
  static_assert(!(kIsFp8 && (kHasSoftcap || kHasAlibi || kHasDropout)), "FP8 kernels have no logit transforms");
  static_assert(!(kPackGqa && (kHasAlibi || kHasDropout)), "ALiBi slopes and dropout streams are per head");
  using Mask = AttentionMask<kIsCausal, kBlockM, kBlockN>;
  FwdParams const& params = kp.fwd;
  const FwdTileOrder order = kp.order;
  const bool varlen = params.cu_seqlens_q != nullptr;
  // Packed GQA rows (a separate instantiation, so that the other kernels keep their registers):
  // a tile holds the `group` query heads of one KV head, tile row r being query token r / group
  // of head head_kv * group + r % group.
  const int group = kPackGqa ? params.group_size : 1;

  extern __shared__ __align__(1024) char smem_raw[];
  auto& storage = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
  Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQBuffers{});  // (kBlockM, kDimQK, buffers)
  Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});   // (kBlockN, kDimQK, stages)
  Tensor sVt = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutVt{});  // (kDimV, kBlockN, stages)
  // The output tile (kBlockM, kDimV) in shared memory, with the element type of the call's out.
  void* const smem_o = Traits::kSeparateO ? static_cast<void*>(storage.o.data()) : static_cast<void*>(storage.q.data());

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warp_group = warp_idx / 4;
  const bool lane_elected = cute::elect_one_sync();
  const bool is_producer_thread = warp_idx == 0 && lane_elected;

  // q_full[b]: the Q in buffer b has landed (one TMA, or the producer warp's 32 lanes' cp.async
  // when rows are packed). q_empty[b]: the consumers are done with it (and with sO too when it
  // aliases sQ), so a later tile's Q may overwrite it. Tiles with work use the buffers in turn.
  if (is_producer_thread) {
    for (int b = 0; b < Traits::kQBuffers; ++b) {
      FullBarrier::init(&storage.q_full[b], /*arrive_count=*/kPackGqa ? 32 : 1);
      EmptyBarrier::init(&storage.q_empty[b], /*arrive_count=*/kNumMmaThreads);
    }
    for (int slot = 0; slot < 2; ++slot) {
      EmptyBarrier::init(&storage.tile_full[slot], /*arrive_count=*/1);
      EmptyBarrier::init(&storage.tile_empty[slot], /*arrive_count=*/kNumMmaThreads);
    }
  }
  typename Pipeline::Params pipe_params;
  pipe_params.role = warp_group == 0 ? Pipeline::ThreadCategory::Producer : Pipeline::ThreadCategory::Consumer;
  pipe_params.is_leader = is_producer_thread;
  pipe_params.num_consumers = kNumMmaThreads;
  pipe_params.transaction_bytes = Traits::kKBytes;
  Pipeline pipeline_k(storage.pipeline_k, pipe_params, Shape<_1, _1, _1>{});
  pipe_params.transaction_bytes = Traits::kVBytes;
  Pipeline pipeline_v(storage.pipeline_v, pipe_params, Shape<_1, _1, _1>{});
  __syncthreads();  // barrier initialisation is visible to every thread
  FLASHGEN_TRACE(if (threadIdx.x == 0) { trace_kernel_edge(kp.trace, 0); })

  // What producer and consumers both derive from a tile's coordinates, identically.
  struct Tile {
    int m_block, head, batch, split;
    SeqInfo seq;
    Mask mask;
    KeyBlockRange range;
    bool in_range;  // the query block holds rows (varlen entries are shorter than the maximum)
    bool has_work;  // some key is visible to some row
  };
  auto make_tile = [&](FwdTileCoord const& c) __attribute__((always_inline)) {
    const SeqInfo seq(params, c.batch);
    const Mask mask(seq.seqlen_q, seq.seqlen_k, params.window_left, params.window_right, group);
    Tile t{c.m_block, c.head, c.batch, c.split, seq, mask, mask.blocks(c.m_block), false, false};
    if (params.num_splits > 1) {  // split-KV: this split's share of the key blocks
      const int per_split = ((seq.seqlen_k + kBlockN - 1) / kBlockN + params.num_splits - 1) / params.num_splits;
      t.range.n_min = max(t.range.n_min, c.split * per_split);
      t.range.n_max = min(t.range.n_max, (c.split + 1) * per_split);
    }
    t.in_range = c.m_block * kBlockM < seq.seqlen_q * group;
    t.has_work = t.in_range && t.range.n_max > t.range.n_min;
    return t;
  };
  // The mbarrier waits and arrives are volatile asm without a memory clobber: these fences keep
  // the compiler from moving a tile slot's ordinary store and load across them.
  auto compiler_fence = []() __attribute__((always_inline)) { asm volatile("" ::: "memory"); };

  if (warp_group == 0) {
    // ---- Producer ----
    // One elected thread publishes the tiles and issues the TMA loads; with packed GQA rows the
    // rest of its warp stays to copy each tile's Q (`leads` marks the elected one).
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (kPackGqa ? warp_idx != 0 : !is_producer_thread) { return; }
    const bool leads = !kPackGqa || lane_elected;
    const int lane = threadIdx.x % 32;
    Tensor mQ = kp.tma_q.get_tma_tensor(make_shape(kp.q_rows, kDimQK, params.num_heads_q, kp.q_batches));
    Tensor mK = kp.tma_k.get_tma_tensor(make_shape(kp.k_rows, kDimQK, params.num_heads_kv, kp.k_batches));
    Tensor mVt = kp.tma_v.get_tma_tensor(make_shape(kDimV, kp.v_cols, params.num_heads_kv, kp.k_batches));
    PipelineState write = cutlass::make_producer_start_state<Pipeline>();
    int q_count = 0;  // tiles with work so far
    // Publishes the k-th tile to the consumers (slot k % 2; waits until they took k - 2), decoded:
    // the tile order's divisions then run once per tile, in this thread, instead of in every
    // consumer thread ahead of its first wgmma. m_block < 0 ends the sequence.
    auto publish = [&](int k, FwdTileCoord const& c) __attribute__((always_inline)) {
      if (!leads) { return; }
      const int slot = k & 1;
      if (k >= 2) { EmptyBarrier::wait(&storage.tile_empty[slot], ((k - 2) >> 1) & 1); }
      compiler_fence();
      storage.tile[slot] = c;
      compiler_fence();
      EmptyBarrier::arrive(&storage.tile_full[slot]);
    };
    // The next tile is claimed as this one's last key block's loads begin, i.e. when the
    // consumers are about a pipeline's depth from its end: claiming it at the start committed
    // each CTA to a tile one whole tile ahead, which under a causal mask left the schedule far
    // from greedy (7% slower at hdim 256 8k causal than one CTA per tile; bench/NOTES.md). The
    // counter's atomic is issued there and its value read once the loads are issued: waiting on
    // it after the last load put it on the path to the next tile's Q (session 39's trace: the
    // tile was published only ~650 cycles before the consumers finished this one).
    int index = blockIdx.x;
    int claimed = 0;
    auto claim_begin = [&]() __attribute__((always_inline)) {
      if (leads && params.tile_counter != nullptr) { claimed = atomicAdd(params.tile_counter, 1); }
    };
    auto claim_end = [&]() __attribute__((always_inline)) {
      const int next = params.tile_counter != nullptr ? int(gridDim.x) + claimed : index + int(gridDim.x);
      if constexpr (kPackGqa) {
        index = __shfl_sync(0xffffffffu, next, __ffs(__ballot_sync(0xffffffffu, leads)) - 1);
      } else {
        index = next;
      }
    };
    // Packed rows: the warp copies the tile's Q 16 bytes per lane and step (a rolled loop: the
    // producer has 24 registers), rows past the sequence zero-filled (cp.async with no source
    // bytes), then each lane arrives on q_full twice: once tracking its copies (a pending
    // arrival until they land) and once as its count.
    auto load_q_packed = [&](Tile const& t, int q_buffer) {
      constexpr int kChunks = Traits::kQChunksPerRow;
      constexpr int kChunkElems = 16 / int(sizeof(Element));
      const int row0 = t.m_block * kBlockM;
      const int rows_left = t.seq.seqlen_q * group - row0;
      auto const* q = static_cast<Element const*>(params.q);
#pragma unroll 1
      for (int i = lane; i < kBlockM * kChunks; i += 32) {
        const int r = i / kChunks, chunk = i % kChunks;
        const bool valid = r < rows_left;
        const int token = (row0 + r) / group;
        const int q_head = t.head * group + (row0 + r - token * group);
        Element const* src = valid ? q + t.seq.q_offset + int64_t(token) * params.q_row_stride +
                                         int64_t(q_head) * params.q_head_stride + chunk * kChunkElems
                                   : q;
        const uint32_t dst = cute::cast_smem_ptr_to_uint(raw_pointer_cast(&sQ(r, chunk * kChunkElems, q_buffer)));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
                     : "memory");
      }
      const uint32_t q_full = cute::cast_smem_ptr_to_uint(&storage.q_full[q_buffer]);
      asm volatile("cp.async.mbarrier.arrive.shared::cta.b64 [%0];" ::"r"(q_full) : "memory");
      FullBarrier::arrive(&storage.q_full[q_buffer]);
    };
    for (int k = 0;; ++k) {
      if (index >= order.num_tiles) {
        publish(k, FwdTileCoord{-1, 0, 0, 0});
        break;
      }
      const FwdTileCoord c = order.coord(index);
      publish(k, c);
      FLASHGEN_TRACE(if (leads) { trace_clock(kp.trace, k, kTraceProducer + kTraceTileTaken); })
      const Tile t = make_tile(c);
      if (!t.has_work) {
        claim_begin();
        claim_end();
        continue;
      }
      const int head_kv = kPackGqa ? t.head : t.head / params.group_size;
      // Varlen rows are addressed from the packed tensor's start; fixed-length ones per batch entry.
      const int q_row0 = varlen ? t.seq.row_base : 0;
      Tensor gQ = local_tile(domain_offset(make_coord(q_row0, _0{}), mQ(_, _, t.head, varlen ? 0 : t.batch)),
                             Shape<Int<kBlockM>, Int<kDimQK>>{}, make_coord(t.m_block, _0{}));  // (kBlockM, kDimQK)
      Tensor gK = local_tile(domain_offset(make_coord(t.seq.key_row_base, _0{}), mK(_, _, head_kv, t.seq.kv_batch)),
                             Shape<Int<kBlockN>, Int<kDimQK>>{}, make_coord(_, _0{}));  // (kBlockN, kDimQK, n)
      // FP8's PV layout starts each varlen sequence on a 16-key boundary (flashgen.h).
      const int vt_key_base = kIsFp8 && varlen ? 16 * ((t.seq.key_row_base + 15) / 16) + 16 * t.batch
                                               : t.seq.key_row_base;
      Tensor gVt = local_tile(domain_offset(make_coord(_0{}, vt_key_base), mVt(_, _, head_kv, t.seq.kv_batch)),
                              Shape<Int<kDimV>, Int<kBlockN>>{}, make_coord(_0{}, _));  // (kDimV, kBlockN, n)
      const int q_buffer = q_count % Traits::kQBuffers;
      auto [tQgQ, tQsQ] =
          tma_partition(kp.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ(_, _, q_buffer)), group_modes<0, 2>(gQ));
      // (source, destination) views; tuples rather than structured bindings, which lambdas
      // may capture only from C++20.
      auto const k_part = tma_partition(kp.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
      auto const v_part = tma_partition(kp.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sVt), group_modes<0, 2>(gVt));
      // Paged KV: mK and mVt index pages in place of batch entries, and key block n (inside one
      // page: page_size is a multiple of kBlockN) is block n * kBlockN % page_size / kBlockN of
      // page block_table[n * kBlockN / page_size]. An index out of range (a block past the
      // sequence, which the mask hides) reads page 0.
      auto page_of = [&](int n) {
        const int key0 = n * kBlockN;
        const int page = t.seq.block_table[key0 / params.page_size];
        return make_tuple(page < 0 || page >= params.num_pages ? 0 : page, (key0 % params.page_size) / kBlockN);
      };
      // Trace builds' timing experiments (TraceFlag): a load that completes its bytes by hand.
      auto skipped = [&](uint32_t count, int first, int flag, uint64_t& barrier, uint32_t bytes) {
        FLASHGEN_TRACE(if ((kp.trace_flags & flag) && count >= uint32_t(first)) {
          cutlass::arch::ClusterTransactionBarrier::complete_transaction(&barrier, 0, bytes);
          return true;
        })
        return false;
      };
      auto load_k = [&](int n) {
        auto& barrier = *pipeline_k.producer_get_barrier(write);
        if (skipped(write.count(), Traits::kStages, kTraceSkipKV, barrier, Traits::kKBytes)) { return; }
        if constexpr (kIsPaged) {
          auto const pb = page_of(n);
          Tensor g = local_tile(mK(_, _, head_kv, get<0>(pb)), Shape<Int<kBlockN>, Int<kDimQK>>{},
                                make_coord(get<1>(pb), _0{}));
          auto const part = tma_partition(kp.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(g));
          copy(kp.tma_k.with(barrier), get<0>(part), get<1>(part)(_, write.index()));
        } else {
          copy(kp.tma_k.with(barrier), get<0>(k_part)(_, n), get<1>(k_part)(_, write.index()));
        }
      };
      auto load_v = [&](int n) {
        auto& barrier = *pipeline_v.producer_get_barrier(write);
        if (skipped(write.count(), Traits::kStages, kTraceSkipKV, barrier, Traits::kVBytes)) { return; }
        if constexpr (kIsPaged) {
          auto const pb = page_of(n);
          Tensor g = local_tile(mVt(_, _, head_kv, get<0>(pb)), Shape<Int<kDimV>, Int<kBlockN>>{},
                                make_coord(_0{}, get<1>(pb)));
          auto const part = tma_partition(kp.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sVt), group_modes<0, 2>(g));
          copy(kp.tma_v.with(barrier), get<0>(part), get<1>(part)(_, write.index()));
        } else {
          copy(kp.tma_v.with(barrier), get<0>(v_part)(_, n), get<1>(v_part)(_, write.index()));
        }
      };

      // Q and the first key block gate the tile's first wgmma. With two Q buffers, Q's is free
      // (its tile before last is done) and Q goes first: it comes from HBM, while the first K
      // waits for a pipeline slot. With one, Q waits until the consumers have released the
      // previous tile's, and the first K goes first.
      bool late = false;  // a trace build's baseline (TraceFlag): the order before session 39
      FLASHGEN_TRACE(late = (kp.trace_flags & kTraceLateClaim) != 0;)
      const bool q_first = Traits::kQBuffers == 2 && !late;
      // Key block `block`'s K; the next tile's claim begins with the tile's last block.
      auto next_k = [&](int block) __attribute__((always_inline)) {
        if (!late && block == t.range.n_min) { claim_begin(); }
        pipeline_k.producer_acquire(write);
        load_k(block);
      };
      int n = t.range.n_max - 1;
      if (leads && !q_first) { next_k(n); }
      if (q_count >= Traits::kQBuffers) {
        EmptyBarrier::wait(&storage.q_empty[q_buffer], (q_count / Traits::kQBuffers - 1) & 1);
      }
      ++q_count;
      if constexpr (kPackGqa) {
        load_q_packed(t, q_buffer);
      } else {
        FullBarrier::arrive_and_expect_tx(&storage.q_full[q_buffer], Traits::kQBytes);
        if (!skipped(uint32_t(q_count - 1), Traits::kQBuffers, kTraceSkipQ, storage.q_full[q_buffer], Traits::kQBytes)) {
          copy(kp.tma_q.with(storage.q_full[q_buffer]), tQgQ, tQsQ);
        }
      }
      if (leads) {
        if (q_first) { next_k(n); }
        pipeline_v.producer_acquire(write);
        load_v(n);
        ++write;
        for (--n; n >= t.range.n_min; --n) {
          next_k(n);
          pipeline_v.producer_acquire(write);
          load_v(n);
          ++write;
        }
      }
      FLASHGEN_TRACE(if (leads) { trace_clock(kp.trace, k, kTraceProducer + kTraceQReady); })
      if (late) { claim_begin(); }
      claim_end();
    }
    return;
  }

  // ---- Consumers ----
  cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
  const int tid = threadIdx.x - 128;
  typename Traits::TiledMmaQK mma_qk;
  typename Traits::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(tid);
  auto thr_pv = mma_pv.get_thread_slice(tid);
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kDimV>>{});
  Tensor taccOcO_rc = make_tensor(thr_pv.partition_C(cO).data(), acc_layout_rowcol(thr_pv.partition_C(cO).layout()));
  Tensor tSrQ = thr_qk.partition_fragment_A(sQ);   // (MMA, MMA_M, MMA_K, buffers) descriptors
  Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, stages)
  Tensor tOrV = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stages)
  Tensor tScS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));
  // P of the previous key block, the A operand of its O += P V. For 16 bits its layout only
  // regroups the S accumulator's, so the storage orders agree and P is converted in place (an
  // element-wise copy between the two views cost ~130 PRMT/LOP3 per thread and block). FP8's
  // A operand takes the values in another order within each thread (sm90_fragment.hpp).
  using SFragment = decltype(partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{}));
  auto p_layout = [] {
    if constexpr (kIsFp8) {
      return fp8_a_operand_layout(SFragment{}.layout());
    } else {
      return acc_layout_as_a_operand(SFragment{}.layout());
    }
  };
  Tensor tOrP = make_tensor<Element>(p_layout());
  auto scores_into_p = [&](auto const& acc_s) __attribute__((always_inline)) {
    if constexpr (kIsFp8) {
      convert_to_fp8_a_operand(acc_s, tOrP);
    } else {
      convert_fragment_into(acc_s, tOrP);
    }
  };
  constexpr int kRowsPerThread = decltype(size<0>(acc_layout_rowcol(SFragment{}.layout())))::value;

  // Ping-pong turns: consumer c waits on barrier kTurn0 + c before issuing a wgmma batch and
  // then signals the next one's (a ring of two or three). All walk the same tiles and key
  // blocks, so the turns go round across tiles too: the last consumer hands consumer 0 the very
  // first turn (at the first tile with work), and consumer 0 takes the last hand-over after the
  // final tile. So a consumer done with its epilogue starts its next tile while the others
  // still store their rows. (Doing the first hand-over before the tile loop instead made ptxas
  // keep Q's descriptors in ordinary registers: +41 instructions per key block at head dim 256,
  // -6%.)
  constexpr int kConsumers = Traits::kConsumers;
  const int consumer = tid / 128;
  const int my_turn = int(FwdBarrier::kTurn0) + consumer;
  const int next_turn = int(FwdBarrier::kTurn0) + (consumer + 1 == kConsumers ? 0 : consumer + 1);
  // A turn barrier counts the waiting warpgroup and the one that hands it over.
  auto begin_turn = [&]() __attribute__((always_inline)) { NamedBarrier::sync(2 * 128, my_turn); };
  auto end_turn = [&]() __attribute__((always_inline)) { NamedBarrier::arrive(2 * 128, next_turn); };

  PipelineState read_k, read_v;
  int q_count = 0;  // tiles with work so far, as the producer counts them
  const bool never = params.batch < 0;  // end_block_before_wait's condition (the API checks batch >= 0)
  for (int k = 0;; ++k) {
    const int slot = k & 1;
    EmptyBarrier::wait(&storage.tile_full[slot], (k >> 1) & 1);
    compiler_fence();
    const FwdTileCoord coord = storage.tile[slot];
    compiler_fence();
    EmptyBarrier::arrive(&storage.tile_empty[slot]);
    // One thread per consumer records its events (sm90_fwd_trace.hpp).
    FLASHGEN_TRACE(const bool tracer = tid % 128 == 0; const int trace_base = consumer * kTraceEvents;
                   if (tracer) { trace_clock(kp.trace, k, trace_base + kTraceTileTaken); })
    if (coord.m_block < 0) {
      if (consumer == 0 && q_count > 0) { begin_turn(); }  // the last consumer's last hand-over
      if (Traits::kTmaStoreO && kp.tma_out && tid % 128 == 0) { tma_store_wait<0>(); }  // sO read before exit
      FLASHGEN_TRACE(if (tid == 0) { trace_kernel_edge(kp.trace, 1); })
      break;
    }
    const Tile t = make_tile(coord);
    if (!t.in_range) { continue; }
    const SeqInfo& seq = t.seq;
    const int m_block = t.m_block, head = t.head;  // head: the KV head when rows are packed
    const int row0 = m_block * kBlockM;
    const int rows_left = seq.seqlen_q * group - row0;
    // Tile row r's query token and query head.
    auto row_token = [&](int r) { return kPackGqa ? (row0 + r) / group : row0 + r; };
    auto row_head = [&](int r) { return kPackGqa ? head * group + (row0 + r) % group : head; };
    // Split-KV: fp32 partial outputs and LSEs per split, merged by the combine kernel.
    const bool is_split = params.num_splits > 1;
    auto accum_row = [&](int r) {
      return (int64_t(t.split) * params.num_heads_q + row_head(r)) * params.total_q + seq.row_base + row_token(r);
    };
    auto lse_ptr = [&](int r) {
      return is_split ? params.lse_accum + accum_row(r)
                      : params.lse + seq.lse_offset + row_head(r) * params.lse_head_stride + row_token(r);
    };
    // Element offset of tile row r in out (packed rows, which follow no single stride).
    auto out_row_offset = [&](int r) {
      return seq.out_offset + int64_t(row_head(r)) * params.out_head_stride + int64_t(row_token(r)) * params.out_row_stride;
    };
    // (kBlockM, kDimV) tile of out, typed as out_tag's pointee (rows not packed).
    auto out_tile = [&](auto out_tag) {
      using ElementOut = std::remove_pointer_t<decltype(out_tag)>;
      Tensor mO = make_tensor(
          make_gmem_ptr(static_cast<ElementOut*>(params.out) + seq.out_offset + head * params.out_head_stride),
          make_shape(seq.seqlen_q, Int<kDimV>{}), make_stride(params.out_row_stride, _1{}));
      return local_tile(mO, Shape<Int<kBlockM>, Int<kDimV>>{}, make_coord(m_block, 0));
    };

    if (!t.has_work && is_split) {
      // This split holds no visible key: a zero partial that the combine weighs by exp(-inf).
      for (int i = tid; i < kBlockM * kDimV; i += kNumMmaThreads) {
        const int r = i / kDimV;
        if (r < rows_left) { params.out_accum[accum_row(r) * kDimV + i % kDimV] = 0.f; }
      }
      for (int r = tid; r < kBlockM && r < rows_left; r += kNumMmaThreads) { *lse_ptr(r) = -INFINITY; }
      continue;
    }
    if (!t.has_work) {
      // No key is visible to any row of this tile: zero output, LSE = +inf (the SM80 convention),
      // or the row's sink when there are sinks (the sink is then the whole denominator).
      with_out_type<Traits>(params, [&](auto out_tag) {
        using ElementOut = std::remove_pointer_t<decltype(out_tag)>;
        for (int i = tid; i < kBlockM * kDimV; i += kNumMmaThreads) {
          const int r = i / kDimV, c = i % kDimV;
          if (r < rows_left) { static_cast<ElementOut*>(params.out)[out_row_offset(r) + c] = ElementOut(0); }
        }
      });
      if (params.lse != nullptr) {
        for (int r = tid; r < kBlockM && r < rows_left; r += kNumMmaThreads) {
          *lse_ptr(r) = params.sinks != nullptr ? params.sinks[row_head(r)] : INFINITY;
        }
      }
      continue;
    }

    const Mask& mask = t.mask;
    const KeyBlockRange range = t.range;
    Tensor acc_o = partition_fragment_C(mma_pv, Shape<Int<kBlockM>, Int<kDimV>>{});  // (MMA, MMA_M, MMA_N)
    Tensor acc_o_rc = make_tensor(acc_o.data(), acc_layout_rowcol(acc_o.layout()));
    clear(acc_o);
    OnlineSoftmax<kRowsPerThread> softmax;
    float correction[kRowsPerThread];
    const float alibi_raw_slope =
        kHasAlibi ? params.alibi_slopes[t.batch * params.alibi_batch_stride + head] / params.logit_scale : 0.f;
    const DropoutKey dropout_key(params.philox_seed, params.philox_offset, t.batch, params.num_heads_q, head,
                                 params.dropout_threshold);
    // FP8 dequantisation: each row's Q scale (times logit_scale_log2) for the whole tile, and
    // a K and a V scale per key block, loaded one block ahead. acc_o is kept in units of v_ref,
    // the largest V scale of the tile so far: block n's probabilities are multiplied by
    // v_scale(n) / v_ref <= 1 before they are rounded to e4m3 (folded into the exponent, so
    // free; the row sums take them back out), and a block with a larger scale rescales acc_o
    // instead, through the softmax's correction. The epilogue applies v_ref.
    float q_row_scale[kRowsPerThread];
    const int head_kv = kPackGqa ? head : head / params.group_size;
    const int kv_scale_batch = varlen ? t.batch : seq.kv_batch;
    const Fp8KeyScales<kBlockN> k_scale_at(params.k_scale, kv_scale_batch, head_kv);
    const Fp8KeyScales<kBlockN> v_scale_at(params.v_scale, kv_scale_batch, head_kv);
    float v_ref = 1.f, k_scale_next = 1.f, v_scale_next = 1.f;
    // Paged FP8 caches are quantized page by page: a key block's scales are those of its page
    // (the scale tensors' batch entries) at the block's first row within the page.
    auto key_scale = [&](Fp8Scale const& s, Fp8KeyScales<kBlockN> const& cursor, int n) {
      if constexpr (kIsPaged) {
        const int key0 = n * kBlockN;
        const int page = seq.block_table[key0 / params.page_size];
        return fp8_scale_at(s, page < 0 || page >= params.num_pages ? 0 : page, head_kv, key0 % params.page_size);
      } else {
        return cursor(n);
      }
    };
    // K and V scales without a block stride on a dense cache (per tensor, per head, per batch
    // entry and head) hold for the whole tile: the key loop then looks none up (two lookups'
    // address arithmetic per block).
    const bool scales_vary = kIsPaged || params.k_scale.block_stride != 0 || params.v_scale.block_stride != 0;
    auto prefetch_scales = [&](int n) {
      if constexpr (kIsFp8) {
        if (!scales_vary) { return; }  // k_scale_next / v_scale_next keep the first block's
        n = max(n, range.n_min);
        k_scale_next = key_scale(params.k_scale, k_scale_at, n);
        v_scale_next = key_scale(params.v_scale, v_scale_at, n);
      }
    };
    if constexpr (kIsFp8) {
      CUTE_UNROLL
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int local = get<0>(tScS_rc(r, 0));
        const int row = min(row_token(local), seq.seqlen_q - 1);
        q_row_scale[r] = params.logit_scale_log2 * fp8_scale_at(params.q_scale, t.batch, row_head(local), row);
      }
    }

    // Packed rows: each score row's query position for the mask, divided once per tile.
    int mask_query[kRowsPerThread];
    if constexpr (kPackGqa) {
      CUTE_UNROLL
      for (int r = 0; r < kRowsPerThread; ++r) { mask_query[r] = row_token(get<0>(tScS_rc(r, 0))); }
    }

    // Scores of block n -> unnormalised probabilities in place; fills correction[] (not when first).
    auto scores_to_probs = [&](auto& acc_s, int n, auto is_first, bool masked, float k_scale, float v_ratio)
                               __attribute__((always_inline)) {
      Tensor scores = make_tensor(acc_s.data(), acc_layout_rowcol(acc_s.layout()));
      if constexpr (kHasSoftcap) { apply_softcap(scores, params.softcap_prescale); }
      if constexpr (kHasAlibi) {
        apply_alibi(scores, tScS_rc, row0 + seq.seqlen_k - seq.seqlen_q, n * kBlockN, alibi_raw_slope);
      }
      if (masked) {
        if constexpr (kPackGqa) {
          mask.apply_rows(scores, tScS_rc, mask_query, n);
        } else {
          mask.apply(scores, tScS_rc, m_block, n);
        }
      }
      if constexpr (kIsFp8) {
        float scale_log2[kRowsPerThread];
        CUTE_UNROLL
        for (int r = 0; r < kRowsPerThread; ++r) { scale_log2[r] = q_row_scale[r] * k_scale; }
        const bool scaled = v_ratio != 1.f;
        softmax.template update_scores_scaled<decltype(is_first)::value>(
            scores, scale_log2, kFp8ProbExp2Offset + (scaled ? __log2f(v_ratio) : 0.f),
            scaled ? 1.f / v_ratio : 1.f, correction, kRescaleSlack<kIsFp8, kDimV>);
      } else {
        softmax.template update_scores<decltype(is_first)::value>(scores, params.logit_scale_log2, correction,
                                                                  kRescaleSlack<kIsFp8, kDimV>);
      }
      // After the row sums: the softmax normalises over every key, dropped or not.
      if constexpr (kHasDropout) { apply_dropout(scores, tScS_rc, dropout_key, row0, n * kBlockN); }
    };

    if (consumer == kConsumers - 1 && q_count == 0) { end_turn(); }  // the very first turn
    const int q_buffer = q_count % Traits::kQBuffers;
    FullBarrier::wait(&storage.q_full[q_buffer], (q_count / Traits::kQBuffers) & 1);
    // Packed rows came by cp.async (the generic proxy); wgmma reads them through the async one.
    if constexpr (kPackGqa) { cutlass::arch::fence_view_async_shared(); }
    FLASHGEN_TRACE(if (tracer) {
      trace_clock(kp.trace, k, trace_base + kTraceQReady);
      if (consumer == 0) { trace_put(kp.trace, k, kTraceBlocks, range.n_max - range.n_min); }
    })
    ++q_count;
    Tensor tSrQ_tile = tSrQ(_, _, _, q_buffer);
    int n = range.n_max - 1;
    {
      const float k_scale = kIsFp8 ? key_scale(params.k_scale, k_scale_at, n) : 1.f;
      if constexpr (kIsFp8) {
        v_ref = key_scale(params.v_scale, v_scale_at, n);
        k_scale_next = k_scale;  // what every later block keeps unless the scales vary
        v_scale_next = v_ref;
      }
      prefetch_scales(n - 1);
      Tensor acc_s = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
      pipeline_k.consumer_wait(read_k);
      begin_turn();
      wgmma</*kZeroInit=*/true>(mma_qk, tSrQ_tile, tSrK(_, _, _, read_k.index()), acc_s);
      FLASHGEN_TRACE(if (tracer) { trace_clock(kp.trace, k, trace_base + kTraceFirstIssued); })
      end_turn();
      warpgroup_wait<0>();
      pipeline_k.consumer_release(read_k);
      ++read_k;
      scores_to_probs(acc_s, n, true_type{}, range.needs_mask(n), k_scale, /*v_ratio=*/1.f);
      scores_into_p(acc_s);
    }
    for (--n; n >= range.n_min; --n) {
      const float k_scale = k_scale_next;
      const float v_scale = v_scale_next;
      prefetch_scales(n - 1);
      Tensor acc_s = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
      pipeline_k.consumer_wait(read_k);
      pipeline_v.consumer_wait(read_v);
      begin_turn();
      wgmma</*kZeroInit=*/true>(mma_qk, tSrQ_tile, tSrK(_, _, _, read_k.index()), acc_s);
      wgmma</*kZeroInit=*/false>(mma_pv, tOrP, tOrV(_, _, _, read_v.index()), acc_o);
      end_turn();
      warpgroup_wait<1>();  // S of block n is ready; O += P V of block n + 1 may still run
      pipeline_k.consumer_release(read_k);
      ++read_k;
      float to_new_units = 1.f;  // acc_o's factor when v_ref grows (the same in every thread)
      float v_ratio = 1.f;
      // Scales that hold for the tile never change the V units: with fast math x / x need not
      // round to exactly 1, and they must not take the scaled path (a log2 and a reciprocal per
      // block). Scales that vary take it as before.
      if (kIsFp8 && scales_vary) {
        if (v_scale > v_ref) {
          to_new_units = v_ref / v_scale;
          v_ref = v_scale;
        } else {
          v_ratio = v_scale / v_ref;
        }
      }
      scores_to_probs(acc_s, n, false_type{}, range.needs_mask(n), k_scale, v_ratio);
      if (to_new_units != 1.f) {
        CUTE_UNROLL
        for (int r = 0; r < kRowsPerThread; ++r) { correction[r] *= to_new_units; }
      }
      // With the slack, almost every block leaves every row's max (and the V units) alone.
      bool rescale = true;
      if constexpr (kSkippableRescale<kIsFp8, kDimV>) { rescale = softmax.warp_needs_rescale(correction); }
      // Keeps the softmax above the wait (sm90_fragment.hpp): +1-5% at head dims 128/256 (H200).
      // Head dim 64's P V is half as long, and the same-run A/B there was -2%: left out.
      if constexpr (kIsFp8 || kDimV >= 128) { end_block_before_wait(tOrP, never); }
      warpgroup_wait<0>();  // P V of block n + 1 is done: tOrP and V's slot are free
      pipeline_v.consumer_release(read_v);
      ++read_v;
      if (rescale) { softmax.rescale(acc_o_rc, correction); }
      scores_into_p(acc_s);
    }
    pipeline_v.consumer_wait(read_v);
    begin_turn();
    wgmma</*kZeroInit=*/false>(mma_pv, tOrP, tOrV(_, _, _, read_v.index()), acc_o);
    end_turn();
    warpgroup_wait<0>();
    FLASHGEN_TRACE(if (tracer) { trace_clock(kp.trace, k, trace_base + kTraceKeysDone); })
    pipeline_v.consumer_release(read_v);
    ++read_v;
    // Every wgmma that read sQ is complete: with a separate sO, the next Q may load now,
    // under this tile's epilogue.
    if constexpr (Traits::kSeparateO) { EmptyBarrier::arrive(&storage.q_empty[q_buffer]); }

    // ---- Epilogue ----
    float lse[kRowsPerThread];
    float sink[kRowsPerThread];
    CUTE_UNROLL
    for (int r = 0; r < kRowsPerThread; ++r) {
      // Splits leave the sinks to the combine kernel.
      sink[r] = (params.sinks == nullptr || is_split) ? -INFINITY : params.sinks[row_head(get<0>(tScS_rc(r, 0)))];
    }
    float out_scale = kHasDropout ? params.dropout_scale : 1.f;
    float logit_scale = params.logit_scale;
    if constexpr (kIsFp8) {
      // Undo the probabilities' 2^8 in the sums (for the LSE) and in acc_o; apply the V scale.
      constexpr float kUnscale = 1.f / float(1 << int(kFp8ProbExp2Offset));
      CUTE_UNROLL
      for (int r = 0; r < kRowsPerThread; ++r) { softmax.row_sum[r] *= kUnscale; }
      out_scale = v_ref * kUnscale;
      logit_scale = float(M_LN2);  // row_max is in scaled log2 units
    }
    softmax.finalize(acc_o_rc, logit_scale, sink, out_scale, /*empty_lse=*/is_split ? -INFINITY : INFINITY, lse);
    FLASHGEN_TRACE(if (tracer) { trace_clock(kp.trace, k, trace_base + kTraceFinalized); })

    if (is_split) {
      // fp32 partials straight from registers, two adjacent columns per store; sO is unused.
      if constexpr (!Traits::kSeparateO) { EmptyBarrier::arrive(&storage.q_empty[q_buffer]); }
      CUTE_UNROLL
      for (int r = 0; r < size<0>(acc_o_rc); ++r) {
        const int row = get<0>(taccOcO_rc(r, 0));
        if (row >= rows_left) { continue; }
        float* accum = params.out_accum + accum_row(row) * kDimV;
        CUTE_UNROLL
        for (int c = 0; c < size<1>(acc_o_rc) / 2; ++c) {
          const int col = get<1>(taccOcO_rc(r, 2 * c));
          *reinterpret_cast<float2*>(accum + col) = make_float2(acc_o_rc(r, 2 * c), acc_o_rc(r, 2 * c + 1));
        }
      }
    } else {
      // O goes through shared memory for 16-byte, row-guarded global stores. With a separate
      // sO, each consumer writes and reads back its own 64 rows, ordered by its own barrier, so
      // the others go on with their GEMMs meanwhile; it reads and stores a row group at a time
      // (its 64 rows at once would take 64 registers at head dim 256). An sO over sQ waits for
      // every consumer's last reads of sQ, and they store the tile together.
      with_out_type<Traits>(params, [&](auto out_tag) {
        using ElementOut = std::remove_pointer_t<decltype(out_tag)>;
        Tensor sO = make_tensor(make_smem_ptr(static_cast<ElementOut*>(smem_o)), typename Traits::SmemLayoutO{});
        Tensor out = convert_fragment<ElementOut>(acc_o);
        // stmatrix: four 8 x 8 blocks from the accumulator's register order per instruction.
        // (The element-wise copy through CuTe's swizzled pointer compiled to 64 generic 2-byte
        // stores per thread at head dim 128, each with its own 64-bit address.)
        auto smem_copy_o = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, ElementOut>{}, mma_pv);
        auto smem_thr_copy_o = smem_copy_o.get_thread_slice(tid);
        if constexpr (Traits::kSeparateO) {
          const int barrier = int(FwdBarrier::kEpilogue0) + consumer;
          // TMA stores: one thread per consumer issues its rows' store once they are staged,
          // and waits for its previous store to have read them before they are written again.
          const bool tma_store = Traits::kTmaStoreO && !kPackGqa && kp.tma_out;
          const bool store_thread = tid % 128 == 0;
          if (tma_store && store_thread) { tma_store_wait<0>(); }
          NamedBarrier::sync(128, barrier);
          copy(smem_copy_o, smem_thr_copy_o.retile_S(out), smem_thr_copy_o.partition_D(sO));
          if (tma_store) { cutlass::arch::fence_view_async_shared(); }  // stmatrix writes -> the TMA's reads
          NamedBarrier::sync(128, barrier);
          FLASHGEN_TRACE(if (tracer) { trace_clock(kp.trace, k, trace_base + kTraceOStaged); })
          if constexpr (Traits::kTmaStoreO && !kPackGqa) {
            if (tma_store) {
              if (store_thread) {
                Tensor mO = kp.tma_o.get_tma_tensor(make_shape(kp.o_rows, kDimV, params.num_heads_q, kp.o_batches));
                Tensor gO = local_tile(mO(_, _, head, t.batch), Shape<_64, Int<kDimV>>{},
                                       make_coord(m_block * kConsumers + consumer, _0{}));
                Tensor sO_rows = local_tile(sO, Shape<_64, Int<kDimV>>{}, make_coord(consumer, _0{}));
                auto o_thr = kp.tma_o.get_slice(_0{});
                copy(kp.tma_o, o_thr.partition_S(sO_rows), o_thr.partition_D(gO));
                tma_store_arrive();
              }
              return;  // out of with_out_type's lambda: the LSE follows
            }
          }
          using ConsumerRows = Shape<_64, Int<kDimV>>;
          typename Traits::template CopyOut<ElementOut, 128> gmem_copy_o;
          auto gmem_thr_copy_o = gmem_copy_o.get_thread_slice(tid % 128);
          Tensor tOsO = gmem_thr_copy_o.partition_S(local_tile(sO, ConsumerRows{}, make_coord(consumer, 0)));
          Tensor tOgO =
              gmem_thr_copy_o.partition_D(local_tile(out_tile(out_tag), ConsumerRows{}, make_coord(consumer, 0)));
          Tensor tOcO = gmem_thr_copy_o.partition_D(local_tile(cO, ConsumerRows{}, make_coord(consumer, 0)));
          // Packed rows: columns only, each row's offset added (out_row_offset).
          Tensor tOgO_cols = gmem_thr_copy_o.partition_D(
              make_tensor(make_gmem_ptr(static_cast<ElementOut*>(params.out)), ConsumerRows{}, Stride<_0, _1>{}));
          CUTE_UNROLL
          for (int m = 0; m < size<1>(tOsO); ++m) {
            const int r = get<0>(tOcO(0, m, 0));
            if (r >= rows_left) { continue; }
            Tensor row = make_fragment_like<ElementOut>(tOsO(_, m, _));
            load_shared_vec16(tOsO(_, m, _), row);
            if constexpr (!kPackGqa) {
              copy(gmem_copy_o, row, tOgO(_, m, _));
            } else {
              copy(gmem_copy_o, row,
                   make_tensor(tOgO_cols(_, m, _).data() + out_row_offset(r), tOgO_cols(_, m, _).layout()));
            }
          }
        } else {
          NamedBarrier::sync(kNumMmaThreads, int(FwdBarrier::kEpilogue));
          copy(smem_copy_o, smem_thr_copy_o.retile_S(out), smem_thr_copy_o.partition_D(sO));
          NamedBarrier::sync(kNumMmaThreads, int(FwdBarrier::kEpilogue));
          FLASHGEN_TRACE(if (tracer) { trace_clock(kp.trace, k, trace_base + kTraceOStaged); })
          typename Traits::template CopyOut<ElementOut, kNumMmaThreads> gmem_copy_o;
          auto gmem_thr_copy_o = gmem_copy_o.get_thread_slice(tid);
          Tensor tOsO = gmem_thr_copy_o.partition_S(sO);
          Tensor tOrO = make_fragment_like<ElementOut>(tOsO);
          CUTE_UNROLL
          for (int m = 0; m < size<1>(tOsO); ++m) { load_shared_vec16(tOsO(_, m, _), tOrO(_, m, _)); }
          EmptyBarrier::arrive(&storage.q_empty[q_buffer]);
          if constexpr (!kPackGqa) {
            copy_tile</*kGuardRows=*/true, /*kZeroFill=*/false, kDimV>(
                gmem_copy_o, tOrO, gmem_thr_copy_o.partition_D(out_tile(out_tag)), gmem_thr_copy_o.partition_D(cO),
                rows_left);
          } else {
            Tensor o_cols = make_tensor(make_gmem_ptr(static_cast<ElementOut*>(params.out)),
                                        Shape<Int<kBlockM>, Int<kDimV>>{}, Stride<_0, _1>{});
            store_rows_indirect<kDimV>(gmem_copy_o, tOrO, gmem_thr_copy_o.partition_D(o_cols),
                                       gmem_thr_copy_o.partition_D(cO),
                                       [&](int r) -> int64_t { return r < rows_left ? out_row_offset(r) : -1; });
          }
        }
      });
    }
    if ((is_split || params.lse != nullptr) && get<1>(taccOcO_rc(0, 0)) == 0) {
      // The lane that holds column 0 of a row writes its LSE.
      CUTE_UNROLL
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int row = get<0>(taccOcO_rc(r, 0));
        if (row < rows_left) { *lse_ptr(row) = lse[r]; }
      }
    }
    FLASHGEN_TRACE(if (tracer) { trace_clock(kp.trace, k, trace_base + kTraceEpilogueDone); })
  }
#endif
}

}  // namespace flashgen::sm90
