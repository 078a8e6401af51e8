// CuTe types of the SM80-path backward kernel. Three MMA shapes: S and dP (block_m x block_n),
// dK and dV (block_n x head_dim, operands read transposed from shared memory), dQ
// (block_m x head_dim_qk).
#pragma once

#include "sm80/sm80_bwd_tile.h"
#include "sm80/sm80_fwd_traits.hpp"

namespace flashgen::sm80 {

using namespace cute;

template <class MmaOp, int kWarpsM, int kWarpsN>
using BwdTiledMma = TiledMMA<MMA_Atom<MmaOp>, Layout<Shape<Int<kWarpsM>, Int<kWarpsN>, _1>>,
                             Tile<Int<16 * kWarpsM>, Int<16 * kWarpsN>, _16>>;

template <class Element_, int kHeadDimQK_, int kHeadDimV_>
struct BwdTraits : HeadDimTraits<Element_, kHeadDimQK_, kHeadDimV_> {
  using Base = HeadDimTraits<Element_, kHeadDimQK_, kHeadDimV_>;
  using typename Base::Element;
  using typename Base::MmaOp;
  using Base::kHeadDimQK;
  using Base::kHeadDimV;
  using Base::kPadQK;
  using Base::kPadV;

  static constexpr BwdTile kTile = bwd_tile(kHeadDimQK, kHeadDimV);
  static constexpr int kBlockM = kTile.block_m;
  static constexpr int kBlockN = kTile.block_n;
  static constexpr int kNumWarps = kTile.num_warps;
  static constexpr int kNumThreads = kNumWarps * 32;
  static_assert(kBlockN % 64 == 0, "P and dS tiles use 64-column swizzle atoms");

  using IOQK = TileIO<Element, kNumThreads, kPadQK>;
  using IOV = TileIO<Element, kNumThreads, kPadV>;
  using IOP = TileIO<Element, kNumThreads, kBlockN>;

  // Q and dO: two stages each, so the next query block streams in while this one is processed.
  // A stage is addressed by shifting the base pointer (a whole number of swizzle periods), not
  // by a runtime layout coordinate, which would put the swizzle on every address computation.
  using SmemLayoutQ = decltype(tile_to_shape(typename IOQK::SmemAtom{}, Shape<Int<kBlockM>, Int<kPadQK>>{}));
  using SmemLayoutdO = decltype(tile_to_shape(typename IOV::SmemAtom{}, Shape<Int<kBlockM>, Int<kPadV>>{}));
  static constexpr int kStageElemsQ = int(cosize_v<SmemLayoutQ>);
  static constexpr int kStageElemsdO = int(cosize_v<SmemLayoutdO>);
  using SmemLayoutK = decltype(tile_to_shape(typename IOQK::SmemAtom{}, Shape<Int<kBlockN>, Int<kPadQK>>{}));
  using SmemLayoutV = decltype(tile_to_shape(typename IOV::SmemAtom{}, Shape<Int<kBlockN>, Int<kPadV>>{}));
  using SmemLayoutP = decltype(tile_to_shape(typename IOP::SmemAtom{}, Shape<Int<kBlockM>, Int<kBlockN>>{}));
  // Transposed views: (kBlockN, kBlockM) of P and dS, (head_dim, kBlockM) of Q and dO, and
  // (head_dim_qk, kBlockN) of K.
  using SmemLayoutPt = decltype(composition(SmemLayoutP{}, make_layout(Shape<Int<kBlockN>, Int<kBlockM>>{}, GenRowMajor{})));
  using SmemLayoutQt = decltype(composition(SmemLayoutQ{}, make_layout(Shape<Int<kPadQK>, Int<kBlockM>>{}, GenRowMajor{})));
  using SmemLayoutdOt = decltype(composition(SmemLayoutdO{}, make_layout(Shape<Int<kPadV>, Int<kBlockM>>{}, GenRowMajor{})));
  using SmemLayoutKt = decltype(composition(SmemLayoutK{}, make_layout(Shape<Int<kPadQK>, Int<kBlockN>>{}, GenRowMajor{})));
  // The dK and dV tiles of the epilogue, staged where Q and dO were.
  using SmemLayoutdK = decltype(tile_to_shape(typename IOQK::SmemAtom{}, Shape<Int<kBlockN>, Int<kPadQK>>{}));
  using SmemLayoutdV = decltype(tile_to_shape(typename IOV::SmemAtom{}, Shape<Int<kBlockN>, Int<kPadV>>{}));
  static_assert(cosize_v<SmemLayoutdK> <= 2 * kStageElemsQ && cosize_v<SmemLayoutdV> <= 2 * kStageElemsdO);

  using TiledMmaSdP = BwdTiledMma<MmaOp, kTile.sdp_warps_m, kNumWarps / kTile.sdp_warps_m>;
  using TiledMmadKV = BwdTiledMma<MmaOp, kTile.dkv_warps_m, kNumWarps / kTile.dkv_warps_m>;
  using TiledMmadQ = BwdTiledMma<MmaOp, kTile.dq_warps_m, kNumWarps / kTile.dq_warps_m>;

  static_assert(kBlockM % (16 * kTile.sdp_warps_m) == 0 && kBlockN % (16 * (kNumWarps / kTile.sdp_warps_m)) == 0);
  static_assert(kBlockN % (16 * kTile.dkv_warps_m) == 0);
  static_assert(kPadQK % (16 * (kNumWarps / kTile.dkv_warps_m)) == 0 && kPadV % (16 * (kNumWarps / kTile.dkv_warps_m)) == 0);
  static_assert(kBlockM % (16 * kTile.dq_warps_m) == 0 && kPadQK % (16 * (kNumWarps / kTile.dq_warps_m)) == 0);

  using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = Copy_Atom<SM75_U16x8_LDSM_T, Element>;
  // Register -> shared stores of accumulator fragments: two adjacent elements per store.
  using SmemCopyAtomStore = Copy_Atom<UniversalCopy<uint32_t>, Element>;

  static constexpr int kSmemTileBytes =
      int(sizeof(Element)) * int(2 * kStageElemsQ + 2 * kStageElemsdO + cosize_v<SmemLayoutK> +
                                 cosize_v<SmemLayoutV> + 2 * cosize_v<SmemLayoutP>);
  // Plus LSE and D of each Q/dO stage (fp32).
  static constexpr int kSmemBytes = kSmemTileBytes + 2 * 2 * kBlockM * int(sizeof(float));
  static_assert(kSmemBytes == bwd_smem_bytes(kHeadDimQK, kHeadDimV, sizeof(Element)));
};

}  // namespace flashgen::sm80
