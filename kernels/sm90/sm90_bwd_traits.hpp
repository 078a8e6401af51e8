// CuTe types of the Hopper backward kernel: a producer warpgroup and two consumer warpgroups.
// Five wgmma per (query head, query block): S^T = K Q^T and dP^T = V dO^T from shared memory,
// dV += P^T dO and dK += dS^T Q with P^T and dS^T in registers, and dQ = dS K from shared memory
// (the warpgroups split head_dim). Two ways to divide the work between the consumers:
// - keys split (head dims up to 128, qk = v): each warpgroup owns 64 keys of a 128-key block and
//   computes all five products for them;
// - roles split (a head dim above 128, or qk != v): dK and dV of a 64-key block would not fit
//   one warpgroup's registers, so warpgroup 0 computes S^T, P^T and dV, warpgroup 1 dP^T, dS^T
//   and dK, and P^T (times the softcap's derivative) passes from 0 to 1 through shared memory.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "sm90/sm90_bwd_tile.h"
#include "sm90/sm90_fwd_traits.hpp"

namespace flashgen::sm90 {

using namespace cute;

// kAllowPersistent_: false for kernels that never run on a persistent grid (the causal ones).
template <class Element_, int kHeadDim_, int kHeadDimV_ = kHeadDim_, bool kAllowPersistent_ = true>
struct BwdTraits {
  using Element = Element_;
  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>);
  static constexpr int kHeadDim = kHeadDim_;    // Q, K, dQ, dK
  static constexpr int kHeadDimV = kHeadDimV_;  // V, dO, dV
  static_assert(kHeadDim % 16 == 0 && kHeadDimV % 16 == 0 && kHeadDim <= 256 && kHeadDimV <= 256);
  static constexpr bool kSplitRoles = bwd_split_roles(kHeadDim, kHeadDimV);
  static constexpr int kBlockM = bwd_block_m(kHeadDim, kHeadDimV);  // queries per step
  static constexpr int kBlockN = bwd_block_n(kHeadDim, kHeadDimV);  // keys per CTA
  static constexpr int kNumMmaThreads = 256;                // two consumer warpgroups
  static constexpr int kNumThreads = 128 + kNumMmaThreads;  // and one producer warpgroup
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
  static_assert((65536 / kNumThreads / 8 * 8 - kProducerRegs) * 128 >=
                (kConsumerRegs - 65536 / kNumThreads / 8 * 8) * kNumMmaThreads);
  static constexpr int kDQPad = 8;
  static constexpr int kDQRowFloats = kHeadDim + kDQPad;

  // Shared memory with s stages of Q / dO / LSE / D (bytes, barriers excluded): two stages when
  // they fit, one otherwise (head dim 256).
  static constexpr int smem_bytes_with(int stages) {
    return 2 * (stages * kBlockM * (kHeadDim + kHeadDimV) + kBlockN * (kHeadDim + kHeadDimV) +
                2 * kBlockM * kBlockN + (kSplitRoles ? kBlockM * kBlockN : 0)) +
           4 * (kBlockM * kDQRowFloats + 2 * stages * kBlockM);
  }
  // Head dim 256: two stages fit only without the separate dQ tile, so each step's fp32 dQ (64 x
  // 256 x 4 bytes) is written over its own stage's Q and dO (64 x 256 x 2 bytes each, adjacent:
  // slots 2s and 2s + 1 of one array), once both warpgroups are done reading them, and leaves by
  // one TMA reduce-add; the writer warp then releases the stage.
  static constexpr bool kDqInStage =
      kSplitRoles && kHeadDim == kHeadDimV && smem_bytes_with(2) + 1024 > 227 * 1024;
  static constexpr int kStages = kDqInStage || smem_bytes_with(2) + 1024 <= 227 * 1024 ? 2 : 1;
  static constexpr int kQSlots = kDqInStage ? 2 * kStages : kStages;
  // Keys split at head dims 32, 64 and 128: two unpadded, swizzled fp32 dQ tiles in place of the
  // padded one, each sent by one TMA reduce-add, so that the writer may still be sending one
  // step's dQ while the consumers write the next (with one tile they waited for its bulk reads:
  // ncu put ~20% of the consumers' samples on that barrier at head dim 128, ~40% at 64). The
  // tiles are what a warpgroup writes: 64 rows x 32-column multiples (see stage_dq_swizzled).
  // At head dim 64 this fills shared memory exactly (the last KiB holds LSE, D and barriers).
  static constexpr bool kDqSplitQueries = kBlockM == 128;
  static constexpr int smem_bytes_double_dq() {
    return smem_bytes_with(2) + 4 * (2 * kBlockM * kHeadDim - kBlockM * kDQRowFloats);
  }
  static constexpr bool kDqDouble = !kSplitRoles && (kDqSplitQueries ? kHeadDim : kHeadDim / 2) % 32 == 0 &&
                                    smem_bytes_double_dq() + 1024 <= 227 * 1024;
  static_assert(!kDqDouble || kStages == 2);
  static constexpr bool kDqTma = kDqInStage || kDqDouble;  // dQ leaves by TMA reduce-adds
  CUTE_HOST_DEVICE static constexpr int q_slot(int stage) { return kDqInStage ? 2 * stage : stage; }
  CUTE_HOST_DEVICE static constexpr int do_slot(int stage) { return kDqInStage ? 2 * stage + 1 : stage; }

  using KeysSplit = Layout<Shape<_2, _1, _1>>;  // warpgroup w: keys [64 w, 64 w + 64)
  using OneGroup = Layout<Shape<_1, _1, _1>>;   // roles split: one warpgroup per product
  using DimSplit = Layout<Shape<_1, _2, _1>>;   // warpgroup w: half of head_dim (dQ)
  using ProductSplit = std::conditional_t<kSplitRoles, OneGroup, KeysSplit>;

  // S^T and dP^T: (kBlockN keys, kBlockM queries), k = head_dim, both operands K-major.
  using TiledMmaS = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<_64, Int<kBlockM>, Int<kHeadDim>>>(), ProductSplit{}));
  using TiledMmadP = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<_64, Int<kBlockM>, Int<kHeadDimV>>>(), ProductSplit{}));
  // dV and dK: (kBlockN keys, head_dim), k = kBlockM queries; A = P^T / dS^T in registers,
  // B = dO^T / Q^T: transposed views of the K-major tiles, MN-major for wgmma.
  template <int kN>
  using TiledMmaKV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<_64, Int<kN>, Int<kBlockM>>, GMMA::Major::K,
                           GMMA::Major::MN>(),
      ProductSplit{}));
  using TiledMmadK = TiledMmaKV<kHeadDim>;
  using TiledMmadV = TiledMmaKV<kHeadDimV>;
  // dQ: (kBlockM queries, head_dim), k = kBlockN keys; A = dS (K-major, keys contiguous), B = K^T.
  // The warpgroups split the head dim, or with 128-query blocks the queries (kDqSplitQueries: at
  // head dim 64 a 32-column half would read more shared memory per MAC than the tensor cores
  // consume).
  using TiledMmadQ = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float,
                           Shape<_64, Int<kDqSplitQueries ? kHeadDim : kHeadDim / 2>, Int<kBlockN>>, GMMA::Major::K,
                           GMMA::Major::MN>(),
      std::conditional_t<kDqSplitQueries, KeysSplit, DimSplit>{}));

  template <int kRows, int kCols, int kCount>
  using SmemLayoutStaged = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kRows, kCols>(),
                                                  Shape<Int<kRows>, Int<kCols>, Int<kCount>>{}));
  template <int kRows, int kCols>
  using SmemLayoutTile = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kRows, kCols>(),
                                                Shape<Int<kRows>, Int<kCols>>{}));
  using SmemLayoutQ = SmemLayoutStaged<kBlockM, kHeadDim, kQSlots>;
  using SmemLayoutdO = SmemLayoutStaged<kBlockM, kHeadDimV, kQSlots>;
  // The in-stage (or kDqDouble) dQ tile: fp32, 128-byte swizzle (conflict-free float2 stores from the
  // accumulator, and the TMA unswizzles).
  using SmemLayoutdQ = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<float>{},
                                              Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutQStage = SmemLayoutTile<kBlockM, kHeadDim>;
  using SmemLayoutdOStage = SmemLayoutTile<kBlockM, kHeadDimV>;
  // K is also dQ's MN-major B operand, whose head dim the warpgroups split (unless they split
  // the queries): its swizzle atom must divide the columns of one warpgroup (192: 96 columns,
  // 64-byte atoms; 96: 48 columns, 32-byte atoms).
  using SmemLayoutK = decltype(tile_to_shape(
      gmma_smem_atom<GMMA::Major::K, Element, kBlockN, kDqSplitQueries ? kHeadDim : kHeadDim / 2>(),
      Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  using SmemLayoutV = SmemLayoutTile<kBlockN, kHeadDimV>;
  // dS is double-buffered: a warpgroup may write the next step's dS while the other one still
  // reads this step's in its dQ product.
  using SmemLayoutdS = SmemLayoutStaged<kBlockM, kBlockN, 2>;
  // Transposed views of the same bytes: (head_dim, queries, stage) of Q and dO, (head_dim, keys)
  // of K, (keys, queries) of dS.
  template <class Staged, int kRows, int kCols>
  using Transposed = decltype(composition(
      Staged{}, make_layout(Shape<Int<kCols>, Int<kRows>, Int<decltype(size<2>(Staged{}))::value>>{},
                            Stride<Int<kRows>, _1, Int<kRows * kCols>>{})));
  using SmemLayoutQt = Transposed<SmemLayoutQ, kBlockM, kHeadDim>;
  using SmemLayoutdOt = Transposed<SmemLayoutdO, kBlockM, kHeadDimV>;
  using SmemLayoutdSt = Transposed<SmemLayoutdS, kBlockM, kBlockN>;
  using SmemLayoutKt = decltype(composition(
      SmemLayoutK{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, Stride<Int<kBlockN>, _1>{})));

  // Roles split: P^T (times the softcap's derivative) from warpgroup 0 to warpgroup 1, kept in
  // the accumulator's register order (both warpgroups' fragments have the same layout, so thread
  // t of one reads what thread t of the other wrote), 16 bytes per access.
  static constexpr int kPHandoffElems = kSplitRoles ? kBlockN * kBlockM : 8;

  // A CTA may run several key blocks one after another (a persistent grid, BwdKernelParams::
  // num_items): with two dQ tiles, which hold the epilogue's dK and dV once the writer has sent
  // the last dQ, so that K's and V's tiles take the next block's while the epilogue runs.
  static constexpr bool kPersistent = kAllowPersistent_ && kDqDouble && !kSplitRoles &&
                                      cosize_v<SmemLayoutK> * sizeof(Element) <= kBlockM * kHeadDim * sizeof(float) &&
                                      cosize_v<SmemLayoutV> * sizeof(Element) <= kBlockM * kHeadDim * sizeof(float);

  struct SharedStorage {
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, kDqInStage ? 8 : cosize_v<SmemLayoutdO>> dout;  // in q if kDqInStage
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutV>> v;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutdS>> ds;
    // dQ of one step in fp32, row-major with kDQPad floats of padding per row (the float2 stores
    // of a warp take two wavefronts, the least possible); each row leaves by one bulk reduce-add.
    // kDqDouble: two SmemLayoutdQ tiles instead.
    alignas(1024) float dq[kDqInStage ? 4 : kDqDouble ? 2 * kBlockM * kHeadDim : kBlockM * (kHeadDim + kDQPad)];
    alignas(16) cute::array_aligned<Element, kPHandoffElems> p_handoff;  // after dq: no alignment gap
    // LSE (log2 units, +inf past the end) and D = rowsum(dO * O) of each stage's query rows.
    alignas(16) float lse_log2[kStages][kBlockM];
    alignas(16) float dsum[kStages][kBlockM];
    alignas(8) uint64_t kv_full;
    alignas(8) uint64_t kv_empty;    // kPersistent: no consumer's product reads K or V any more
    alignas(8) uint64_t dq_drained;  // kPersistent: the writer has sent an item's last dQ tile
    alignas(8) uint64_t item_full[2];   // kPersistent: the TMA warp wrote item_index[i]
    alignas(8) uint64_t item_empty[2];  // kPersistent: every other role has read it
    int item_index[2];
    alignas(8) uint64_t qdo_full[kStages];   // Q, dO (TMA bytes) and LSE, D (the loader warp's arrivals)
    alignas(8) uint64_t qdo_empty[kStages];  // every consumer thread (kDqInStage: the writer) is done with it
    alignas(8) uint64_t dq_full[kStages];    // kDqTma: every consumer thread wrote its dQ part
    alignas(8) uint64_t dq_empty[2];         // kDqDouble: the writer has read the tile
    int tail_last;                           // tail split: this piece finished last
  };
  CUTE_DEVICE static Element* dout_smem(SharedStorage& storage) {
    return kDqInStage ? storage.q.data() : storage.dout.data();
  }
  // kDqInStage: the fp32 dQ tile over stage `stage`'s Q and dO slots.
  CUTE_DEVICE static float* dq_stage_tile(SharedStorage& storage, int stage) {
    return reinterpret_cast<float*>(storage.q.data() + q_slot(stage) * kBlockM * kHeadDim);
  }
  // kDqDouble: dQ tile b (a SmemLayoutdQ).
  CUTE_DEVICE static float* dq_buffer(SharedStorage& storage, int b) { return storage.dq + b * kBlockM * kHeadDim; }
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static_assert(kSmemBytes <= 227 * 1024);

  static constexpr uint32_t kQBytes = kBlockM * kHeadDim * sizeof(Element);
  static constexpr uint32_t kdOBytes = kBlockM * kHeadDimV * sizeof(Element);
  static constexpr uint32_t kKBytes = kBlockN * kHeadDim * sizeof(Element);
  static constexpr uint32_t kVBytes = kBlockN * kHeadDimV * sizeof(Element);

  using ShapeRows = Shape<int32_t, int32_t, int32_t, int32_t>;  // (rows, head_dim, heads, batches)
  using StrideRows = Stride<int64_t, _1, int64_t, int64_t>;
  using GmemTensor = decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)), ShapeRows{},
                                          StrideRows{}));
  template <class SmemLayout, int kRows, int kCols>
  using Tma = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, SmemLayout{}, Shape<Int<kRows>, Int<kCols>>{},
                                     _1{}));
  using TmaQ = Tma<SmemLayoutQStage, kBlockM, kHeadDim>;
  using TmadO = Tma<SmemLayoutdOStage, kBlockM, kHeadDimV>;
  using TmaK = Tma<SmemLayoutK, kBlockN, kHeadDim>;
  using TmaV = Tma<SmemLayoutV, kBlockN, kHeadDimV>;
  // dQ's fp32 accumulator as (rows of all sequences, head_dim, heads), for the in-stage reduce-add.
  using GmemTensordQ = decltype(make_tensor(make_gmem_ptr(static_cast<float*>(nullptr)),
                                            Shape<int32_t, int32_t, int32_t>{}, Stride<int64_t, _1, int64_t>{}));
  using TmadQ = decltype(make_tma_copy(SM90_TMA_REDUCE_ADD{}, GmemTensordQ{}, SmemLayoutdQ{},
                                       Shape<Int<kBlockM>, Int<kHeadDim>>{}, _1{}));
};

}  // namespace flashgen::sm90
