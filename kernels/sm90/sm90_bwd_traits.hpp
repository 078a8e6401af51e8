// CuTe types of the Hopper backward kernel: a producer warpgroup and two consumer warpgroups,
// each owning 64 keys of a 128-key block; five wgmma per (query head, query block):
// S^T = K Q^T and dP^T = V dO^T from shared memory, dV += P^T dO and dK += dS^T Q with P^T and
// dS^T in registers, and dQ = dS K from shared memory (the warpgroups split head_dim).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "sm90/sm90_fwd_traits.hpp"

namespace flashgen::sm90 {

using namespace cute;

template <class Element_, int kHeadDim_>
struct BwdTraits {
  using Element = Element_;
  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>);
  static constexpr int kHeadDim = kHeadDim_;
  static_assert(kHeadDim % 16 == 0 && kHeadDim <= 128, "first version: head dims up to 128");
  static constexpr int kBlockM = kHeadDim <= 64 ? 128 : 64;  // queries per step
  static constexpr int kBlockN = 128;  // keys per CTA: 64 per warpgroup
  static constexpr int kStages = 2;  // Q / dO / LSE / D buffers
  static constexpr int kNumMmaThreads = 256;                // two consumer warpgroups
  static constexpr int kNumThreads = 128 + kNumMmaThreads;  // and one producer warpgroup
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
  static_assert((65536 / kNumThreads / 8 * 8 - kProducerRegs) * 128 >=
                (kConsumerRegs - 65536 / kNumThreads / 8 * 8) * kNumMmaThreads);
  static constexpr int kDQPad = 8;
  static constexpr int kDQRowFloats = kHeadDim + kDQPad;

  using KeysSplit = Layout<Shape<_2, _1, _1>>;  // warpgroup w: keys [64 w, 64 w + 64)
  using DimSplit = Layout<Shape<_1, _2, _1>>;   // warpgroup w: half of head_dim (dQ)

  // S^T and dP^T: (kBlockN keys, kBlockM queries), k = head_dim, both operands K-major.
  using TiledMmaSdP = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<_64, Int<kBlockM>, Int<kHeadDim>>>(), KeysSplit{}));
  // dV and dK: (kBlockN keys, head_dim), k = kBlockM queries; A = P^T / dS^T in registers,
  // B = dO^T / Q^T: transposed views of the K-major tiles, MN-major for wgmma.
  using TiledMmadKV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<_64, Int<kHeadDim>, Int<kBlockM>>, GMMA::Major::K,
                           GMMA::Major::MN>(),
      KeysSplit{}));
  // dQ: (kBlockM queries, head_dim), k = kBlockN keys; A = dS (K-major, keys contiguous), B = K^T.
  using TiledMmadQ = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<_64, Int<kHeadDim / 2>, Int<kBlockN>>, GMMA::Major::K,
                           GMMA::Major::MN>(),
      DimSplit{}));

  using SmemLayoutQ = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kBlockM, kHeadDim>(),
                                             Shape<Int<kBlockM>, Int<kHeadDim>, Int<kStages>>{}));
  using SmemLayoutQStage = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kBlockM, kHeadDim>(),
                                                  Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutK = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kBlockN, kHeadDim>(),
                                             Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  // dS is double-buffered: a warpgroup may write the next step's dS while the other one still
  // reads this step's in its dQ product.
  using SmemLayoutdS = decltype(tile_to_shape(gmma_smem_atom<GMMA::Major::K, Element, kBlockM, kBlockN>(),
                                              Shape<Int<kBlockM>, Int<kBlockN>, _2>{}));
  // Transposed views of the same bytes: (head_dim, queries, stage) of Q and dO, (head_dim, keys)
  // of K, (keys, queries) of dS.
  using SmemLayoutQt = decltype(composition(
      SmemLayoutQ{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockM>, Int<kStages>>{},
                                 Stride<Int<kBlockM>, _1, Int<kBlockM * kHeadDim>>{})));
  using SmemLayoutKt = decltype(composition(
      SmemLayoutK{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, Stride<Int<kBlockN>, _1>{})));
  using SmemLayoutdSt = decltype(composition(
      SmemLayoutdS{},
      make_layout(Shape<Int<kBlockN>, Int<kBlockM>, _2>{}, Stride<Int<kBlockM>, _1, Int<kBlockM * kBlockN>>{})));

  struct SharedStorage {
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutQ>> dout;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutK>> v;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutdS>> ds;
    // dQ of one step in fp32, row-major with kDQPad floats of padding per row (the float2 stores
    // of a warp take two wavefronts, the least possible); each row leaves by one bulk reduce-add.
    alignas(128) float dq[kBlockM * (kHeadDim + kDQPad)];
    // LSE (log2 units, +inf past the end) and D = rowsum(dO * O) of each stage's query rows.
    alignas(16) float lse_log2[kStages][kBlockM];
    alignas(16) float dsum[kStages][kBlockM];
    alignas(8) uint64_t kv_full;
    alignas(8) uint64_t qdo_full[kStages];   // Q, dO (TMA bytes) and LSE, D (the loader warp's arrivals)
    alignas(8) uint64_t qdo_empty[kStages];  // every consumer thread is done with the stage
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static_assert(kSmemBytes <= 227 * 1024);

  static constexpr uint32_t kQBytes = kBlockM * kHeadDim * sizeof(Element);
  static constexpr uint32_t kKBytes = kBlockN * kHeadDim * sizeof(Element);

  using ShapeRows = Shape<int32_t, int32_t, int32_t, int32_t>;  // (rows, head_dim, heads, batches)
  using StrideRows = Stride<int64_t, _1, int64_t, int64_t>;
  using GmemTensor = decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)), ShapeRows{},
                                          StrideRows{}));
  using TmaQ = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutQStage{},
                                      Shape<Int<kBlockM>, Int<kHeadDim>>{}, _1{}));
  using TmaK = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutK{},
                                      Shape<Int<kBlockN>, Int<kHeadDim>>{}, _1{}));
};

}  // namespace flashgen::sm90
