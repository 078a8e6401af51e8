// Decode attention over a 16-bit KV cache: a few query rows (the query tokens of a sequence times
// the query heads of a GQA group, packed) against a long, possibly paged cache. FP8 caches have
// their own kernel (sm80_decode_fp8_kernel.hpp).
//
// Bound by reading K and V, so the kernel is built around the loads: one CTA per (key split,
// KV head, block of packed rows, batch entry), a deep cp.async pipeline of 64-key stages, and the
// four warps splitting each stage's keys between them (each warp keeps its own running max, sum
// and output for all the CTA's rows of its row tile; they are merged once at the end). On Hopper
// the stages can come through TMA instead (kTma: warp 0 issues the boxes, nobody computes row
// addresses; sm90/sm90_decode_tma.hpp).
#pragma once

#include "sm80/sm80_decode_common.hpp"
#include "sm90/sm90_decode_tma.hpp"

namespace flashgen::sm80::decode {

// Element: q, out and the cache (half_t or bfloat16_t).
// kRowTiles: 16-row tiles of packed rows per CTA (1 or 2); the warps not needed for rows split keys.
template <class Element_, int kHeadDim_, int kRowTiles_>
struct DecodeTraits {
  using Element = Element_;
  static constexpr bool kKvE4m3 = false;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kRowTiles = kRowTiles_;
  static_assert(kHeadDim % 16 == 0 && kHeadDim <= 256, "decode head dims are multiples of 16 up to 256");
  static_assert(kRowTiles == 1 || kRowTiles == 2, "1 or 2 row tiles");

  static constexpr int kThreads = decode::kThreads;
  static constexpr int kRows = 16 * kRowTiles;
  static constexpr int kBlockN = block_n(kHeadDim);           // keys per pipeline stage
  static constexpr int kKeySlices = kWarps / kRowTiles;       // warps sharing a row tile
  static constexpr int kKeysPerWarp = kBlockN / kKeySlices;   // 16 or 32
  static constexpr int kKvBytes = 2;
  static constexpr int kRowBytes = kHeadDim * kKvBytes;       // one key's K (or V) row
  static constexpr int kChunks = kRowBytes / 16;              // 16-byte chunks per row
  static constexpr int kTileBytes = kBlockN * kRowBytes;
  static constexpr int kStageBytes = stage_bytes(kHeadDim);
  static constexpr int kStages = num_stages(kHeadDim);
  static constexpr int kSmemBytes = smem_bytes(kHeadDim);
};

// kTma: Hopper's TMA stage loader (sm90/sm90_decode_tma.hpp; FLASHGEN_DECODE_TMA_16BIT);
// kCluster: the splits of a row block run as one thread-block cluster and combine there (sm90).
// Both launched so by the host (sm80_decode_launch.hpp).
template <class Traits, bool kTma = false, bool kCluster = false>
__global__ void __launch_bounds__(kThreads)
    decode_kernel(const __grid_constant__ FwdParams p, const __grid_constant__ sm90::decode_tma::DecodeTmaMaps maps) {
  using Element = typename Traits::Element;
  constexpr int D = Traits::kHeadDim;
  constexpr int kChunks = Traits::kChunks;
  constexpr int kStages = Traits::kStages;
  constexpr int kKeysPerWarp = Traits::kKeysPerWarp;
  constexpr int kNB = kKeysPerWarp / 8;  // key n-blocks of S per warp and stage
  constexpr int kKB = D / 16;            // k-blocks of the head dim
  constexpr int kVB = D / 8;             // n-blocks of the output
  constexpr int kBlockN = Traits::kBlockN;

  extern __shared__ __align__(128) char smem[];

  const CtaWork keys = cta_work<kCluster>(p, Traits::kRows, kBlockN);
  const int split = keys.split, head_kv = keys.head_kv, batch = keys.batch, row_first = keys.row_first;
  const int seqlen_k = keys.seqlen_k;
  const int my_first = keys.my_first, my_tiles = keys.my_tiles;
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int row_tile = warp % Traits::kRowTiles;
  const int slice = warp / Traits::kRowTiles;

  // Start the pipeline before touching Q.
  auto loader = [&]() {
    if constexpr (kTma) {
      return sm90::decode_tma::TmaStageLoader<Traits>(p, maps, smem, keys);
    } else {
      return StageLoader<Traits>(p, smem, keys);
    }
  }();
  load_prologue<kStages, /*kMoveSlots=*/true>(loader, my_first, my_tiles);
  // Where chunk `chunk` of key row `row` lies in a stage's K or V tile (the loaders' layouts).
  auto at = [](int row, int chunk) {
    return kTma ? tma_swizzled<kChunks, kBlockN>(row, chunk) : swizzled<kChunks>(row, chunk);
  };

  // ---- Q fragments (A operand, rows g and g + 8 of this warp's row tile) ----
  const RowInfo rows[2] = {row_info(p, batch, head_kv, seqlen_k, row_first + row_tile * 16 + g),
                           row_info(p, batch, head_kv, seqlen_k, row_first + row_tile * 16 + g + 8)};
  uint32_t qf[kKB][4];
  {
    const Element* q = static_cast<const Element*>(p.q);
    const Element* qrow[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      qrow[r] = q + int64_t(batch) * p.q_batch_stride + int64_t(rows[r].query) * p.q_row_stride +
                int64_t(rows[r].head) * p.q_head_stride;
    }
    CUTE_UNROLL
    for (int kb = 0; kb < kKB; ++kb) {
      CUTE_UNROLL
      for (int half = 0; half < 2; ++half) {  // channels 2t.. (half 0) and 2t+8.. (half 1)
        const int col = kb * 16 + 2 * t + 8 * half;
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          qf[kb][2 * half + r] = rows[r].valid ? *reinterpret_cast<const uint32_t*>(qrow[r] + col) : 0u;
        }
      }
    }
  }

  float acc_o[kVB][4];
  CUTE_UNROLL
  for (int i = 0; i < kVB; ++i) { acc_o[i][0] = acc_o[i][1] = acc_o[i][2] = acc_o[i][3] = 0.f; }
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};
  const bool softcap = p.softcap > 0.f;
  const bool alibi = p.alibi_slopes != nullptr;

  for (int it = 0; it < my_tiles; ++it) {
    advance_pipeline<kStages, /*kParity=*/-1>(loader, my_first, my_tiles, it);

    const int stage = it % kStages;
    const char* sk = loader.stage_k(stage);
    const char* sv = loader.stage_v(stage);
    const int n0 = (my_first + it) * kBlockN;
    const int key0 = slice * kKeysPerWarp;  // first key of this warp within the tile

    // S = Q K^T for this warp's keys: (16 rows, kKeysPerWarp keys)
    float s[kNB][4];
    CUTE_UNROLL
    for (int nb = 0; nb < kNB; ++nb) { s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f; }
    CUTE_UNROLL
    for (int kb = 0; kb < kKB; ++kb) {
      CUTE_UNROLL
      for (int np = 0; np < kNB / 2; ++np) {
        // Matrices: keys 0-7 / 8-15 of the pair, channels 8 * (2 kb) and 8 * (2 kb + 1).
        const int mat = lane / 8;
        const int row = key0 + np * 16 + (mat / 2) * 8 + lane % 8;
        const int chunk = 2 * kb + mat % 2;
        uint32_t b[4];
        cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(sk + at(row, chunk)),
                                      b[0], b[1], b[2], b[3]);
        mma16816<Element>(s[2 * np], qf[kb], b[0], b[1]);
        mma16816<Element>(s[2 * np + 1], qf[kb], b[2], b[3]);
      }
    }

    // Logit transforms and the mask, in raw score units; then to log2 units. Each runtime
    // choice is one warp-uniform branch around all of the warp's scores.
    auto key_of = [&](int nb, int i) { return n0 + key0 + nb * 8 + 2 * t + i % 2; };
    if (softcap) {
      CUTE_UNROLL
      for (int nb = 0; nb < kNB; ++nb) {
        CUTE_UNROLL
        for (int i = 0; i < 4; ++i) { s[nb][i] = fast_tanh(s[nb][i] * p.softcap_prescale); }
      }
    }
    if (alibi) {
      CUTE_UNROLL
      for (int nb = 0; nb < kNB; ++nb) {
        CUTE_UNROLL
        for (int i = 0; i < 4; ++i) { s[nb][i] -= rows[i / 2].slope * fabsf(float(rows[i / 2].qpos - key_of(nb, i))); }
      }
    }
    CUTE_UNROLL
    for (int nb = 0; nb < kNB; ++nb) {
      CUTE_UNROLL
      for (int i = 0; i < 4; ++i) { s[nb][i] *= p.logit_scale_log2; }
    }
    if (n0 < keys.unmasked_lo || n0 + kBlockN > keys.unmasked_hi) {
      CUTE_UNROLL
      for (int nb = 0; nb < kNB; ++nb) {
        CUTE_UNROLL
        for (int i = 0; i < 4; ++i) {
          const int key = key_of(nb, i), qpos = rows[i / 2].qpos;
          const bool ok = key < seqlen_k && (p.window_left < 0 || key >= qpos - p.window_left) &&
                          (p.window_right < 0 || key <= qpos + p.window_right);
          if (!ok) { s[nb][i] = -INFINITY; }
        }
      }
    }

    // Online softmax over this warp's keys.
    float correction[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      float m = row_max[r];
      CUTE_UNROLL
      for (int nb = 0; nb < kNB; ++nb) { m = fmaxf(m, fmaxf(s[nb][2 * r], s[nb][2 * r + 1])); }
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      const float m_safe = m == -INFINITY ? 0.f : m;
      correction[r] = exp2f(row_max[r] - m_safe);
      row_max[r] = m;
      float sum = 0.f;
      CUTE_UNROLL
      for (int nb = 0; nb < kNB; ++nb) {
        s[nb][2 * r] = exp2f(s[nb][2 * r] - m_safe);
        s[nb][2 * r + 1] = exp2f(s[nb][2 * r + 1] - m_safe);
        sum += s[nb][2 * r] + s[nb][2 * r + 1];
      }
      row_sum[r] = row_sum[r] * correction[r] + sum;
    }
    // Once the running maxima settle the factors are 1: skip the rescale (warp-uniform).
    if (__any_sync(0xffffffffu, correction[0] != 1.f || correction[1] != 1.f)) {
      CUTE_UNROLL
      for (int vb = 0; vb < kVB; ++vb) {
        acc_o[vb][0] *= correction[0];
        acc_o[vb][1] *= correction[0];
        acc_o[vb][2] *= correction[1];
        acc_o[vb][3] *= correction[1];
      }
    }

    // O += P V, 16 keys at a time.
    CUTE_UNROLL
    for (int kc = 0; kc < kNB / 2; ++kc) {
      const uint32_t a[4] = {pack2(s[2 * kc][0], s[2 * kc][1], static_cast<Element*>(nullptr)),
                             pack2(s[2 * kc][2], s[2 * kc][3], static_cast<Element*>(nullptr)),
                             pack2(s[2 * kc + 1][0], s[2 * kc + 1][1], static_cast<Element*>(nullptr)),
                             pack2(s[2 * kc + 1][2], s[2 * kc + 1][3], static_cast<Element*>(nullptr))};
      const int kbase = key0 + kc * 16;
      CUTE_UNROLL
      for (int vp = 0; vp < kVB / 2; ++vp) {
        // Matrices: keys 0-7 / 8-15 at channels 8 vp2, then the same at 8 (vp2 + 1).
        const int mat = lane / 8;
        const int row = kbase + (mat % 2) * 8 + lane % 8;
        const int chunk = 2 * vp + mat / 2;
        uint32_t b[4];
        cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(sv + at(row, chunk)),
                                      b[0], b[1], b[2], b[3]);
        mma16816<Element>(acc_o[2 * vp], a, b[0], b[1]);
        mma16816<Element>(acc_o[2 * vp + 1], a, b[2], b[3]);
      }
    }
  }
  cute::cp_async_wait<0>();
  release_dependent_launch();
  __syncthreads();  // the pipeline's memory becomes the merge buffer

  // ---- merge the key slices' partial results ----
  const MergeBuffers<kWarps, 16, D> buf(smem);
  CUTE_UNROLL
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    if (t == 0) {
      buf.m[warp * 16 + g + 8 * r] = row_max[r];
      buf.l[warp * 16 + g + 8 * r] = row_sum[r];
    }
  }
  CUTE_UNROLL
  for (int vb = 0; vb < kVB; ++vb) {
    CUTE_UNROLL
    for (int i = 0; i < 4; ++i) {
      const int r = g + 8 * (i / 2);
      const int col = vb * 8 + 2 * t + i % 2;
      buf.o[(warp * 16 + r) * D + col] = acc_o[vb][i];
    }
  }
  merge_slices_and_store<Element, D, 16, Traits::kRowTiles, Traits::kKeySlices, kThreads, kCluster>(
      p, buf, batch, head_kv, seqlen_k, row_first, split);
}

}  // namespace flashgen::sm80::decode
