// CuTe types of the SM80-path forward kernel: mma.sync m16n8k16 with fp32 accumulators,
// cp.async global->shared copies, ldmatrix shared->register copies, swizzled shared memory.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "sm80/sm80_fwd_tile.h"

namespace flashgen::sm80 {

using namespace cute;

template <class Element_, int kHeadDim_>
struct FwdTraits {
  using Element = Element_;
  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>);

  static constexpr int kHeadDim = kHeadDim_;
  static constexpr FwdTile kTile = fwd_tile(kHeadDim);
  static constexpr int kBlockM = kTile.block_m;
  static constexpr int kBlockN = kTile.block_n;
  static constexpr int kNumWarps = kTile.num_warps;
  static constexpr int kNumThreads = kNumWarps * 32;
  static_assert(kHeadDim % 32 == 0, "the SM80 forward kernel tiles head_dim by 32 or 64");
  static_assert(kBlockM == 16 * kNumWarps * (kBlockM / (16 * kNumWarps)));

  // Shared memory rows are 64 (or 32) elements wide and XOR-swizzled so that ldmatrix reads
  // of 8 rows hit distinct banks.
  static constexpr int kSmemRowElems = kHeadDim % 64 == 0 ? 64 : 32;
  static constexpr int kSwizzleBits = kSmemRowElems == 64 ? 3 : 2;
  using SmemLayoutAtom = decltype(composition(
      Swizzle<kSwizzleBits, 3, 3>{},
      Layout<Shape<_8, Int<kSmemRowElems>>, Stride<Int<kSmemRowElems>, _1>>{}));
  using SmemLayoutQ = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  // V read as (head_dim, block_n), the B operand of O += P V.
  using SmemLayoutVt = decltype(composition(
      SmemLayoutKV{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, GenRowMajor{})));
  using SmemLayoutO = SmemLayoutQ;

  using MmaOp = std::conditional_t<std::is_same_v<Element, cutlass::half_t>,
                                   SM80_16x8x16_F32F16F16F32_TN, SM80_16x8x16_F32BF16BF16F32_TN>;
  // Warps stack along M; N and K tiles of 16 let ldmatrix.x4 feed two n8 MMAs at once.
  using TiledMma = TiledMMA<MMA_Atom<MmaOp>, Layout<Shape<Int<kNumWarps>, _1, _1>>,
                            Tile<Int<16 * kNumWarps>, _16, _16>>;

  using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = Copy_Atom<SM75_U16x8_LDSM_T, Element>;
  using SmemCopyAtomO = Copy_Atom<DefaultCopy, Element>;

  // 16-byte global accesses; a warp covers 4 or 8 rows of one swizzle atom.
  static constexpr int kElemsPerAccess = 16 / sizeof(Element);
  static constexpr int kThreadsPerRow = kSmemRowElems / kElemsPerAccess;
  static_assert(kNumThreads % kThreadsPerRow == 0);
  using GmemThreadLayout = Layout<Shape<Int<kNumThreads / kThreadsPerRow>, Int<kThreadsPerRow>>,
                                  Stride<Int<kThreadsPerRow>, _1>>;
  using GmemValueLayout = Layout<Shape<_1, Int<kElemsPerAccess>>>;
  using GmemTiledCopyQKV = decltype(make_tiled_copy(
      Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>, Element>{}, GmemThreadLayout{}, GmemValueLayout{}));
  using GmemTiledCopyO = decltype(make_tiled_copy(
      Copy_Atom<UniversalCopy<cute::uint128_t>, Element>{}, GmemThreadLayout{}, GmemValueLayout{}));
  static_assert(kBlockM % (kNumThreads / kThreadsPerRow) == 0);
  static_assert(kBlockN % (kNumThreads / kThreadsPerRow) == 0);

  static constexpr int kSmemBytes =
      int(cosize_v<SmemLayoutQ> + 2 * cosize_v<SmemLayoutKV>) * int(sizeof(Element));
  static_assert(kSmemBytes == fwd_smem_bytes(kHeadDim, sizeof(Element)));
};

}  // namespace flashgen::sm80
