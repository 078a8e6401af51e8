// CuTe types of the SM80-path forward kernel: mma.sync m16n8k16 with fp32 accumulators,
// cp.async global->shared copies, ldmatrix shared->register copies, swizzled shared memory.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "sm80/sm80_fwd_tile.h"

namespace flashgen::sm80 {

using namespace cute;

// Shared-memory layout and global-memory copies of a (rows, kDim) tile, kDim a multiple of 32.
template <class Element, int kNumThreads, int kDim>
struct TileIO {
  static_assert(kDim % 32 == 0);
  // Rows of 64 (or 32) elements, XOR-swizzled so that ldmatrix reads of 8 rows hit distinct banks.
  static constexpr int kRowElems = kDim % 64 == 0 ? 64 : 32;
  static constexpr int kSwizzleBits = kRowElems == 64 ? 3 : 2;
  using SmemAtom = decltype(composition(Swizzle<kSwizzleBits, 3, 3>{},
                                        Layout<Shape<_8, Int<kRowElems>>, Stride<Int<kRowElems>, _1>>{}));
  // 16-byte global accesses, a row of the swizzle atom per 4 or 8 threads.
  static constexpr int kElemsPerAccess = 16 / sizeof(Element);
  static constexpr int kThreadsPerRow = kRowElems / kElemsPerAccess;
  static constexpr int kRowsPerPass = kNumThreads / kThreadsPerRow;
  using ThreadLayout = Layout<Shape<Int<kRowsPerPass>, Int<kThreadsPerRow>>, Stride<Int<kThreadsPerRow>, _1>>;
  using ValueLayout = Layout<Shape<_1, Int<kElemsPerAccess>>>;
  using CopyAsync = decltype(make_tiled_copy(Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>, Element>{},
                                             ThreadLayout{}, ValueLayout{}));
  using CopyStore = decltype(make_tiled_copy(Copy_Atom<UniversalCopy<cute::uint128_t>, Element>{},
                                             ThreadLayout{}, ValueLayout{}));
};

// What every SM80-path kernel of one spec shares: the element type, the actual head dims (what
// is read and written) and the padded ones the MMAs run on, and the MMA instruction.
template <class Element_, int kHeadDimQK_, int kHeadDimV_>
struct HeadDimTraits {
  using Element = Element_;
  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>);
  static constexpr int kHeadDimQK = kHeadDimQK_;
  static constexpr int kHeadDimV = kHeadDimV_;
  static constexpr int kPadQK = padded_head_dim(kHeadDimQK);
  static constexpr int kPadV = padded_head_dim(kHeadDimV);
  static_assert(kHeadDimQK % 8 == 0 && kHeadDimV % 8 == 0);
  using MmaOp = std::conditional_t<std::is_same_v<Element, cutlass::half_t>, SM80_16x8x16_F32F16F16F32_TN,
                                   SM80_16x8x16_F32BF16BF16F32_TN>;
};

// kNarrow: the narrow tile of head dims above 128 (sm80_fwd_tile.h).
template <class Element_, int kHeadDimQK_, int kHeadDimV_, bool kNarrow>
struct FwdTraits : HeadDimTraits<Element_, kHeadDimQK_, kHeadDimV_> {
  using Base = HeadDimTraits<Element_, kHeadDimQK_, kHeadDimV_>;
  using typename Base::Element;
  using typename Base::MmaOp;
  using Base::kHeadDimQK;
  using Base::kHeadDimV;
  using Base::kPadQK;
  using Base::kPadV;

  static_assert(!kNarrow || fwd_has_narrow_tile(kHeadDimQK, kHeadDimV));
  static constexpr FwdTile kTile = fwd_tile(kHeadDimQK, kHeadDimV, kNarrow);
  static constexpr int kBlockM = kTile.block_m;
  static constexpr int kBlockN = kTile.block_n;
  static constexpr int kNumWarps = kTile.num_warps;
  static constexpr int kNumThreads = kNumWarps * 32;
  static_assert(kBlockM % (16 * kNumWarps) == 0);

  using IOQK = TileIO<Element, kNumThreads, kPadQK>;
  using IOV = TileIO<Element, kNumThreads, kPadV>;
  static_assert(kBlockN % IOQK::kRowsPerPass == 0 && kBlockN % IOV::kRowsPerPass == 0);

  using SmemLayoutQ = decltype(tile_to_shape(typename IOQK::SmemAtom{}, Shape<Int<kBlockM>, Int<kPadQK>>{}));
  using SmemLayoutK = decltype(tile_to_shape(typename IOQK::SmemAtom{}, Shape<Int<kBlockN>, Int<kPadQK>>{}));
  using SmemLayoutV = decltype(tile_to_shape(typename IOV::SmemAtom{}, Shape<Int<kBlockN>, Int<kPadV>>{}));
  // V read as (head_dim_v, block_n), the B operand of O += P V.
  using SmemLayoutVt = decltype(composition(SmemLayoutV{}, make_layout(Shape<Int<kPadV>, Int<kBlockN>>{}, GenRowMajor{})));
  using SmemLayoutO = decltype(tile_to_shape(typename IOV::SmemAtom{}, Shape<Int<kBlockM>, Int<kPadV>>{}));

  // Warps stack along M; N and K tiles of 16 let ldmatrix.x4 feed two n8 MMAs at once.
  using TiledMma = TiledMMA<MMA_Atom<MmaOp>, Layout<Shape<Int<kNumWarps>, _1, _1>>, Tile<Int<16 * kNumWarps>, _16, _16>>;

  using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = Copy_Atom<SM75_U16x8_LDSM_T, Element>;
  using SmemCopyAtomO = Copy_Atom<DefaultCopy, Element>;

  static constexpr int kSmemInputElems = int(cosize_v<SmemLayoutQ> + cosize_v<SmemLayoutK> + cosize_v<SmemLayoutV>);
  static constexpr int kSmemBytes =
      int(sizeof(Element)) * (kSmemInputElems > int(cosize_v<SmemLayoutO>) ? kSmemInputElems : int(cosize_v<SmemLayoutO>));
  static_assert(kSmemBytes == fwd_smem_bytes(kHeadDimQK, kHeadDimV, sizeof(Element), kNarrow));
};

}  // namespace flashgen::sm80
