// CuTe types of the Hopper forward kernel: TMA loads into swizzled shared memory, wgmma with
// fp32 accumulators (S = Q K^T from shared memory, O += P V with P in registers), and an
// mbarrier pipeline of K and V stages between the producer and the consumer warpgroups.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "common/fwd_params.h"
#include "sm90/sm90_fwd_tile.h"

namespace flashgen::sm90 {

using namespace cute;

// The widest swizzle atom whose extent divides the tile along the contiguous dimension
// (k for K-major operands, m/n for MN-major ones).
template <GMMA::Major kMajor, class Element, int kMN, int kK>
CUTE_HOST_DEVICE constexpr auto gmma_smem_atom() {
  constexpr int kContiguous = kMajor == GMMA::Major::K ? kK : kMN;
  constexpr int kMode = kMajor == GMMA::Major::K ? 1 : 0;
  if constexpr (kMajor == GMMA::Major::K) {
    if constexpr (kContiguous % size<kMode>(GMMA::Layout_K_SW128_Atom<Element>{}) == 0) {
      return GMMA::Layout_K_SW128_Atom<Element>{};
    } else if constexpr (kContiguous % size<kMode>(GMMA::Layout_K_SW64_Atom<Element>{}) == 0) {
      return GMMA::Layout_K_SW64_Atom<Element>{};
    } else if constexpr (kContiguous % size<kMode>(GMMA::Layout_K_SW32_Atom<Element>{}) == 0) {
      return GMMA::Layout_K_SW32_Atom<Element>{};
    } else {
      return GMMA::Layout_K_INTER_Atom<Element>{};
    }
  } else {
    if constexpr (kContiguous % size<kMode>(GMMA::Layout_MN_SW128_Atom<Element>{}) == 0) {
      return GMMA::Layout_MN_SW128_Atom<Element>{};
    } else if constexpr (kContiguous % size<kMode>(GMMA::Layout_MN_SW64_Atom<Element>{}) == 0) {
      return GMMA::Layout_MN_SW64_Atom<Element>{};
    } else if constexpr (kContiguous % size<kMode>(GMMA::Layout_MN_SW32_Atom<Element>{}) == 0) {
      return GMMA::Layout_MN_SW32_Atom<Element>{};
    } else {
      return GMMA::Layout_MN_INTER_Atom<Element>{};
    }
  }
}

template <class Element_, int kHeadDimQK_, int kHeadDimV_, bool kWideKeys_ = false, bool kTallRows_ = true,
          bool kLongKeys_ = false>
struct FwdTraits {
  using Element = Element_;
  // FP8: e4m3 Q, K and V (the latter in the PV layout: keys contiguous), P re-quantised to e4m3
  // for the second GEMM, and a 16-bit output whose type (bf16 or fp16) is a run-time choice;
  // both share one shared-memory layout, so ElementO stands for either.
  static constexpr bool kIsFp8 = std::is_same_v<Element, cutlass::float_e4m3_t>;
  static_assert(kIsFp8 || std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>);
  using ElementO = std::conditional_t<kIsFp8, cutlass::bfloat16_t, Element>;
  static constexpr int kHeadDimQK = kHeadDimQK_;
  static constexpr int kHeadDimV = kHeadDimV_;
  static constexpr int kMmaK = kIsFp8 ? 32 : 16;  // the k width of one wgmma
  static_assert(kHeadDimQK % kMmaK == 0 && kHeadDimV % kMmaK == 0, "head dims must be multiples of the wgmma k");

  static constexpr FwdTile kTile =
      fwd_tile(kHeadDimQK, kHeadDimV, int(sizeof(Element)), kWideKeys_, kTallRows_, kLongKeys_);
  static constexpr int kBlockM = kTile.block_m;
  static constexpr int kBlockN = kTile.block_n;
  static constexpr int kStages = kTile.stages;
  static constexpr int kConsumers = fwd_consumer_warpgroups(kTile);
  static_assert(kBlockM == 64 * kConsumers && (kConsumers == 2 || kConsumers == 3));
  static constexpr int kNumThreads = 128 * (1 + kConsumers);  // one producer warpgroup
  static constexpr int kNumMmaThreads = 128 * kConsumers;
  // setmaxnreg: the producer warpgroup hands registers to the consumers. The pool is what the
  // launch allocated (65536 / threads, rounded down to 8: 168 each with two consumers, 128 with
  // three), so the consumers' gain must not exceed what the producer frees, or their
  // setmaxnreg.inc waits forever (it hung with a 32-register producer and two consumers).
  static constexpr int kLaunchRegs = 65536 / kNumThreads / 8 * 8;
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = kConsumers == 3 ? 160 : 240;
  static_assert((kLaunchRegs - kProducerRegs) * 128 >= (kConsumerRegs - kLaunchRegs) * kNumMmaThreads);

  // One 64-row wgmma atom per consumer warpgroup, stacked along M.
  using AtomLayout = Layout<Shape<Int<kConsumers>, _1, _1>>;
  using TiledMmaQK = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<_64, Int<kBlockN>, Int<kHeadDimQK>>>(), AtomLayout{}));
  static_assert(size<1>(typename TiledMmaQK::AtomShape_MNK{}) == kBlockN,
                "S = Q K^T must be one wgmma per k step (define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED for "
                "key blocks such as 80 or 176)");
  // B = V^T, (head_dim_v, block_n). 16 bits: head_dim_v contiguous (MN-major), V as given.
  // FP8 wgmma takes K-major operands only: the keys contiguous, which the PV layout provides.
  static constexpr GMMA::Major kVtMajor = kIsFp8 ? GMMA::Major::K : GMMA::Major::MN;
  using TiledMmaPV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<_64, Int<kHeadDimV>, Int<kBlockN>>, GMMA::Major::K,
                           kVtMajor>(),
      AtomLayout{}));

  using SmemLayoutQ = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kBlockM, kHeadDimQK>(),
                                             Shape<Int<kBlockM>, Int<kHeadDimQK>>{}));
  using SmemLayoutKStage = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kBlockN, kHeadDimQK>(),
                                                  Shape<Int<kBlockN>, Int<kHeadDimQK>>{}));
  using SmemLayoutK = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kBlockN, kHeadDimQK>(),
                                             Shape<Int<kBlockN>, Int<kHeadDimQK>, Int<kStages>>{}));
  using SmemLayoutVtStage = decltype(tile_to_shape(gmma_smem_atom<kVtMajor, Element, kHeadDimV, kBlockN>(),
                                                   Shape<Int<kHeadDimV>, Int<kBlockN>>{}));
  using SmemLayoutVt = decltype(tile_to_shape(gmma_smem_atom<kVtMajor, Element, kHeadDimV, kBlockN>(),
                                              Shape<Int<kHeadDimV>, Int<kBlockN>, Int<kStages>>{}));
  // The output tile, staged where Q was once the last S = Q K^T is done.
  using SmemLayoutO = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, ElementO, kBlockM, kHeadDimV>(),
                                             Shape<Int<kBlockM>, Int<kHeadDimV>>{}));

  using Pipeline = cutlass::PipelineTmaAsync<kStages>;
  // The output tile gets its own buffer when it fits, so that the next tile's Q can load while
  // this tile's output is stored; otherwise it is staged where Q was.
  static constexpr int kQOKVBytes =
      int(sizeof(Element)) * int(cosize_v<SmemLayoutQ> + cosize_v<SmemLayoutK> + cosize_v<SmemLayoutVt>) +
      int(sizeof(ElementO)) * int(cosize_v<SmemLayoutO>);
  static constexpr bool kSeparateO = kQOKVBytes + 2048 <= 227 * 1024;
  static_assert(kSeparateO || !kIsFp8, "an FP8 tile's 16-bit output does not fit where its Q was");
  static constexpr int kQElems = kSeparateO || int(cosize_v<SmemLayoutQ>) >= int(cosize_v<SmemLayoutO>)
                                     ? int(cosize_v<SmemLayoutQ>)
                                     : int(cosize_v<SmemLayoutO>);
  // With its own output buffer, Q gets two when they fit: the producer then loads the next
  // tile's Q while this tile still computes, so a consumer starts its next tile right after its
  // own epilogue.
  static constexpr int kQBuffers =
      kSeparateO && kQOKVBytes + int(sizeof(Element)) * int(cosize_v<SmemLayoutQ>) + 2048 <= 227 * 1024 ? 2 : 1;
  using SmemLayoutQBuffers = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kBlockM, kHeadDimQK>(),
                                                    Shape<Int<kBlockM>, Int<kHeadDimQK>, Int<kQBuffers>>{}));
  struct SharedStorage {
    alignas(1024) cute::array_aligned<Element, kQElems * kQBuffers> q;  // Q, and O unless kSeparateO
    alignas(1024) cute::array_aligned<ElementO, kSeparateO ? int(cosize_v<SmemLayoutO>) : 0> o;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutVt>> v;
    typename Pipeline::SharedStorage pipeline_k;
    typename Pipeline::SharedStorage pipeline_v;
    alignas(8) uint64_t q_full[kQBuffers];
    alignas(8) uint64_t q_empty[kQBuffers];
    // The tile sequence, from the producer to the consumers: a two-slot ring.
    alignas(8) uint64_t tile_full[2];
    alignas(8) uint64_t tile_empty[2];
    alignas(16) FwdTileCoord tile[2];
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static_assert(kSmemBytes <= 227 * 1024, "tile does not fit Hopper shared memory");

  static constexpr uint32_t kQBytes = kBlockM * kHeadDimQK * sizeof(Element);
  static constexpr uint32_t kKBytes = kBlockN * kHeadDimQK * sizeof(Element);
  static constexpr uint32_t kVBytes = kBlockN * kHeadDimV * sizeof(Element);

  // Global tensors as TMA sees them: Q, K (rows, head_dim, heads, batches) and V transposed,
  // (head_dim_v, rows, heads, batches): a view of V for 16 bits (tiles land MN-major), the PV
  // layout itself (keys contiguous) for FP8.
  using ShapeRows = Shape<int32_t, int32_t, int32_t, int32_t>;
  using StrideRows = Stride<int64_t, _1, int64_t, int64_t>;
  using StrideCols = Stride<_1, int64_t, int64_t, int64_t>;
  template <class Stride_>
  using GmemTensor = decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)), ShapeRows{}, Stride_{}));
  using TmaQ = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor<StrideRows>{}, SmemLayoutQ{},
                                      Shape<Int<kBlockM>, Int<kHeadDimQK>>{}, _1{}));
  using TmaK = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor<StrideRows>{}, SmemLayoutKStage{},
                                      Shape<Int<kBlockN>, Int<kHeadDimQK>>{}, _1{}));
  using StrideVt = std::conditional_t<kIsFp8, StrideRows, StrideCols>;
  using TmaVt = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor<StrideVt>{}, SmemLayoutVtStage{},
                                       Shape<Int<kHeadDimV>, Int<kBlockN>>{}, _1{}));

  // Packed GQA rows (FwdParams::pack_gqa): tile row r is query token r / group of head
  // head_kv * group + r % group, so Q's rows follow no single stride and TMA cannot load them:
  // the producer warp copies them with cp.async, 16 bytes per access.
  static constexpr int kQChunksPerRow = kHeadDimQK * int(sizeof(Element)) / 16;

  // The output by TMA stores where it can (kTmaStoreO; FwdKernelParams::tma_out per call): one
  // consumer's 64 rows of the staged sO, (64, head_dim_v), the rows at 64 * consumer. 16-bit
  // kernels with their own sO only (an FP8 kernel writes fp16 or bf16 as the call asks).
  static constexpr bool kTmaStoreO = !kIsFp8 && kSeparateO;
  using SmemLayoutORows =
      decltype(composition(SmemLayoutO{}, make_layout(Shape<_64, Int<kHeadDimV>>{}, Stride<_1, Int<kBlockM>>{})));
  using TmaO = decltype(make_tma_copy(
      SM90_TMA_STORE{}, make_tensor(make_gmem_ptr(static_cast<ElementO*>(nullptr)), ShapeRows{}, StrideRows{}),
      SmemLayoutORows{}, Shape<_64, Int<kHeadDimV>>{}, _1{}));

  // Output stores: 16-byte accesses over (kBlockM, head_dim_v) by the consumer threads.
  static constexpr int kOutVec = 16 / sizeof(ElementO);
  static constexpr int kOutThreadsPerRow = (kHeadDimV / kOutVec) % 8 == 0 ? 8 : ((kHeadDimV / kOutVec) % 4 == 0 ? 4 : 2);
  // By kThreads threads: both consumers over the whole tile, or one over its 64 rows.
  template <class ElementOut, int kThreads>
  using CopyOut = decltype(make_tiled_copy(
      Copy_Atom<UniversalCopy<cute::uint128_t>, ElementOut>{},
      Layout<Shape<Int<kThreads / kOutThreadsPerRow>, Int<kOutThreadsPerRow>>, Stride<Int<kOutThreadsPerRow>, _1>>{},
      Layout<Shape<_1, Int<kOutVec>>>{}));
};

// What the kernel receives: the family-independent parameters plus the TMA descriptors and
// the extents the descriptors were built with.
template <class Traits>
struct FwdKernelParams {
  FwdParams fwd;
  typename Traits::TmaQ tma_q;
  typename Traits::TmaK tma_k;
  typename Traits::TmaVt tma_v;
  int32_t q_rows, q_batches;
  int32_t k_rows, k_batches;
  int32_t v_cols;  // keys per entry of V's TMA view (the PV layout's padded extent for FP8)
  typename Traits::TmaO tma_o;  // valid when tma_out
  int32_t o_rows, o_batches;
  bool tma_out;  // the output goes by TMA stores (Traits::kTmaStoreO, rows not packed or varlen, no splits)
  FwdTileOrder order;
#ifdef FLASHGEN_FWD_TRACE
  unsigned long long* trace;  // sm90_fwd_trace.hpp; nullptr: no trace
  int trace_flags;            // TraceFlag bits (timing experiments)
#endif
};

}  // namespace flashgen::sm90
