// Decode attention over an FP8 (e4m3) KV cache with fp16 or bf16 queries.
//
// The cache's bytes are half a 16-bit cache's, so per byte read this kernel does twice the
// work of the 16-bit one (conversions, products, softmax): it is built to keep the issue slots
// and the latency chains short rather than around the loads alone.
// - Keys are the M side of both products: S^T = K Q^T and O^T = V^T P^T, with the packed rows
//   (query tokens x query heads of a group) on the 8-wide N side. A GQA group of <= 8 fills an
//   N block where the 16-row M side was 3/4 padding: half the MMAs and half the accumulator
//   registers, which lets eight warps (16 keys of each 128-key stage apiece; four warps and
//   64-key stages at head dim 256) share the SM where the 16-bit kernel runs four.
// - e4m3 -> fp16 in registers (exact). Per-key (per-page) scales ride along with the rows into
//   shared memory; a scale shared by all of a CTA's keys is read once.
//   Head-dim channels of Q and K are read in the order that gives each thread 8 contiguous bytes
//   per 32 channels (the dot product does not care), and each thread's V operand covers a
//   contiguous run of D / 8 channels (un-permuted when the output is written), so every shared
//   read is 8 or 16 bytes and no transposed copy of V is needed.
// - P^T comes out of the S^T accumulator transposed: one movmatrix per 8 x 8 block.
// - kTma (Hopper, head dims 64 / 128, dense caches or pages of >= 16 keys): warp 0 loads each
//   stage with TMA boxes instead of every thread's cp.async (sm90/sm90_decode_tma.hpp).
#pragma once

#include <type_traits>

#include "sm80/sm80_decode_common.hpp"
#include "sm90/sm90_decode_tma.hpp"

namespace flashgen::sm80::decode {

// Element: q and out (half_t or bfloat16_t). kRowBlocks: 8-row blocks per CTA (1 or 2).
template <class Element_, int kHeadDim_, int kRowBlocks_>
struct Fp8DecodeTraits {
  using Element = Element_;
  static constexpr bool kKvE4m3 = true;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kRowBlocks = kRowBlocks_;
  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 256, "FP8 caches need head dims that are multiples of 32");
  static_assert(kRowBlocks == 1 || kRowBlocks == 2, "1 or 2 row blocks");

  static constexpr int kRows = 8 * kRowBlocks;
  static constexpr int kBlockN = fp8_block_n(kHeadDim);  // keys per pipeline stage
  static constexpr int kWarps = fp8_warps(kHeadDim);     // 16 keys of a stage each
  static constexpr int kThreads = 32 * kWarps;
  // One row block: two CTAs per SM (what the pipeline memory allows), so <= 128 registers a
  // thread at eight warps. Two row blocks need ~210 (one CTA per SM; 128 spilled).
  static constexpr int kMinBlocks = kRowBlocks == 1 ? 2 : 1;
  static constexpr int kKvBytes = 1;
  static constexpr int kRowBytes = kHeadDim;
  static constexpr int kChunks = kRowBytes / 16;
  static constexpr int kTileBytes = kBlockN * kRowBytes;
  static constexpr int kStageBytes = fp8_stage_bytes(kHeadDim);
  static constexpr int kStages = fp8_num_stages(kHeadDim);
  static constexpr int kSmemBytes = fp8_smem_bytes(kHeadDim, kRows);
  // A warp's 16 keys keep their scales as (K scale of key g, of key g + 8, V scale of key g, of
  // key g + 8) for g = 0..7: one 16-byte read per thread and stage.
  __device__ static int scale_slot(int row, bool is_v) { return (row / 16) * 32 + (row % 8) * 4 + 2 * is_v + (row % 16) / 8; }
};

// 8 x 8 transpose of 16-bit values across the warp (thread 4r + c holds row r, columns 2c, 2c+1).
__device__ __forceinline__ uint32_t transpose8x8(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
  return y;
}

using sm90::decode_tma::DecodeTmaMaps;

// kTma: Hopper's TMA stage loader (sm90/sm90_decode_tma.hpp); kCluster: the splits of a row
// block run as one thread-block cluster and combine there (sm90). Both launched so by the host.
template <class Traits, bool kTma, bool kCluster = false>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocks) decode_fp8_kernel(
    const __grid_constant__ FwdParams p, const __grid_constant__ DecodeTmaMaps maps) {
  using Element = typename Traits::Element;
  using Mma = cutlass::half_t;
  constexpr int D = Traits::kHeadDim;
  constexpr int kRB = Traits::kRowBlocks;
  constexpr int kChunks = Traits::kChunks;
  constexpr int kStages = Traits::kStages;
  constexpr int kKB = D / 16;  // k-blocks of the head dim (S^T)
  constexpr int kMB = D / 16;  // m-blocks of the output channels (O^T)
  constexpr int kVB = D / 8;   // V bytes (channels) a thread owns per key
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kThreads = Traits::kThreads;

  extern __shared__ __align__(128) char smem[];

  const CtaWork keys = cta_work<kCluster>(p, Traits::kRows, kBlockN);
  const int split = keys.split, head_kv = keys.head_kv, batch = keys.batch, row_first = keys.row_first;
  const int seqlen_k = keys.seqlen_k;
  const int my_first = keys.my_first, my_tiles = keys.my_tiles;
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int key0 = warp * 16;  // this warp's keys within a stage

  // Start the pipeline before touching Q.
  auto loader = [&]() {
    if constexpr (kTma) {
      return sm90::decode_tma::TmaStageLoader<Traits>(p, maps, smem, keys);
    } else {
      return StageLoader<Traits>(p, smem, keys);
    }
  }();
  load_prologue<kStages, /*kMoveSlots=*/false>(loader, my_first, my_tiles);

  // ---- Q^T fragments (B operand: row g of each row block, permuted channel pairs) ----
  // Logical k-block kb, channels 2t, 2t+1 (half 0) and 2t+8, 2t+9 (half 1) are the channels
  // 32 (kb / 2) + 8 t + 4 (kb % 2) + 2 half + {0, 1}: the bytes a thread reads of a K row.
  uint32_t qf[kRB][kKB][2];
  {
    const Element* q = static_cast<const Element*>(p.q);
    CUTE_UNROLL
    for (int rb = 0; rb < kRB; ++rb) {
      const RowInfo r = row_info(p, batch, head_kv, seqlen_k, row_first + 8 * rb + g);
      const Element* qrow = q + int64_t(batch) * p.q_batch_stride + int64_t(r.query) * p.q_row_stride +
                            int64_t(r.head) * p.q_head_stride;
      CUTE_UNROLL
      for (int kb = 0; kb < kKB; ++kb) {
        CUTE_UNROLL
        for (int half = 0; half < 2; ++half) {
          const int col = (kb / 2) * 32 + 8 * t + (kb % 2) * 4 + 2 * half;
          uint32_t x = r.valid ? *reinterpret_cast<const uint32_t*>(qrow + col) : 0u;
          if constexpr (!std::is_same_v<Element, cutlass::half_t>) {
            const float2 f = unpack2<Element>(x);
            x = pack2(f.x, f.y, static_cast<Mma*>(nullptr));
          }
          qf[rb][kb][half] = x;
        }
      }
    }
  }
  // The rows of this thread's accumulator elements: 8 rb + 2t + j.
  RowInfo rows[kRB][2];
  CUTE_UNROLL
  for (int rb = 0; rb < kRB; ++rb) {
    CUTE_UNROLL
    for (int j = 0; j < 2; ++j) { rows[rb][j] = row_info(p, batch, head_kv, seqlen_k, row_first + 8 * rb + 2 * t + j); }
  }

  // O^T: (m-block, row block) x (channel g / g + 8, row 2t / 2t + 1).
  float acc_o[kMB][kRB][4];
  CUTE_UNROLL
  for (int mb = 0; mb < kMB; ++mb) {
    CUTE_UNROLL
    for (int rb = 0; rb < kRB; ++rb) { acc_o[mb][rb][0] = acc_o[mb][rb][1] = acc_o[mb][rb][2] = acc_o[mb][rb][3] = 0.f; }
  }
  float row_max[kRB][2], row_sum[kRB][2];  // row sums: this thread's keys only, until the end
  CUTE_UNROLL
  for (int rb = 0; rb < kRB; ++rb) { row_max[rb][0] = row_max[rb][1] = -INFINITY, row_sum[rb][0] = row_sum[rb][1] = 0.f; }
  const bool softcap = p.softcap > 0.f;
  const bool alibi = p.alibi_slopes != nullptr;
  // Dequantisation scales: per key (read from the stage) or one per CTA.
  const bool k_per_key = loader.k_per_key, v_per_key = loader.v_per_key;
  const float k_uniform = k_per_key ? 1.f : loader.uniform_scale(p.k_scale);
  const float v_uniform = v_per_key ? 1.f : loader.uniform_scale(p.v_scale);
  // The keys each of this thread's rows may see (window, causality, the sequence's end): the
  // mask is two compares per score.
  int key_min[kRB][2], key_max[kRB][2];
  CUTE_UNROLL
  for (int rb = 0; rb < kRB; ++rb) {
    CUTE_UNROLL
    for (int j = 0; j < 2; ++j) {
      const int qpos = rows[rb][j].qpos;
      key_min[rb][j] = p.window_left >= 0 ? qpos - p.window_left : 0;
      key_max[rb][j] = p.window_right >= 0 ? min(seqlen_k - 1, qpos + p.window_right) : seqlen_k - 1;
    }
  }

  for_each_tile(my_tiles, [&](const int it, auto parity) {
    advance_pipeline<kStages, parity>(loader, my_first, my_tiles, it);

    const int stage = it % kStages;
    const char* sk = loader.stage_k(stage);
    const char* sv = loader.stage_v(stage);
    const int n0 = (my_first + it) * kBlockN;

    // S^T = K Q^T for this warp's 16 keys: (key g / g + 8) x (row 2t / 2t + 1) per row block; two
    // accumulation chains (even and odd k-blocks) halve the dependent MMA sequence.
    float s2[2][kRB][4];
    CUTE_UNROLL
    for (int c = 0; c < 2; ++c) {
      CUTE_UNROLL
      for (int rb = 0; rb < kRB; ++rb) { s2[c][rb][0] = s2[c][rb][1] = s2[c][rb][2] = s2[c][rb][3] = 0.f; }
    }
    CUTE_UNROLL
    for (int kb2 = 0; kb2 < kKB / 2; ++kb2) {
      const int byte = kb2 * 32 + 8 * t;
      const uint2 k0 = *reinterpret_cast<const uint2*>(sk + swizzled<kChunks>(key0 + g, byte / 16) + byte % 16);
      const uint2 k1 = *reinterpret_cast<const uint2*>(sk + swizzled<kChunks>(key0 + g + 8, byte / 16) + byte % 16);
      CUTE_UNROLL
      for (int h = 0; h < 2; ++h) {
        const uint32_t x0 = h == 0 ? k0.x : k0.y, x1 = h == 0 ? k1.x : k1.y;
        const uint32_t a[4] = {e4m3x2_to_f16x2<0>(x0), e4m3x2_to_f16x2<0>(x1), e4m3x2_to_f16x2<1>(x0),
                               e4m3x2_to_f16x2<1>(x1)};
        CUTE_UNROLL
        for (int rb = 0; rb < kRB; ++rb) { mma16816<Mma>(s2[h][rb], a, qf[rb][2 * kb2 + h][0], qf[rb][2 * kb2 + h][1]); }
      }
    }
    float s[kRB][4];
    CUTE_UNROLL
    for (int rb = 0; rb < kRB; ++rb) {
      CUTE_UNROLL
      for (int i = 0; i < 4; ++i) { s[rb][i] = s2[0][rb][i] + s2[1][rb][i]; }
    }

    // V^T's A operand (O^T += V^T P^T below). Thread group g owns channels [g kVB, (g + 1) kVB):
    // logical m-block mb, row g is channel g kVB + 2 mb, row g + 8 is g kVB + 2 mb + 1. It needs
    // those channels of keys 2t, 2t+1 (a0, a1) and 2t+8, 2t+9 (a2, a3): the widest aligned vector
    // of the kVB bytes per key row (one 16-byte read per row at head dim 128), then one byte
    // permute per key pair and two channels. Read before the softmax, which then covers the
    // reads' latency (16 registers held across it at head dim 128).
    constexpr int kVec = kVB % 16 == 0 ? 16 : kVB % 8 == 0 ? 8 : 4;
    uint32_t vw[kVB / kVec][4][kVec / 4];
    CUTE_UNROLL
    for (int vg = 0; vg < kVB / kVec; ++vg) {
      CUTE_UNROLL
      for (int k4 = 0; k4 < 4; ++k4) {  // keys 2t, 2t+1, 2t+8, 2t+9
        const int row = key0 + 2 * t + (k4 % 2) + 8 * (k4 / 2);
        const int byte = g * kVB + vg * kVec;
        const char* src = sv + swizzled<kChunks>(row, byte / 16) + byte % 16;
        if constexpr (kVec == 16) {
          const uint4 x = *reinterpret_cast<const uint4*>(src);
          vw[vg][k4][0] = x.x, vw[vg][k4][1] = x.y, vw[vg][k4][2] = x.z, vw[vg][k4][3] = x.w;
        } else if constexpr (kVec == 8) {
          const uint2 x = *reinterpret_cast<const uint2*>(src);
          vw[vg][k4][0] = x.x, vw[vg][k4][1] = x.y;
        } else {
          vw[vg][k4][0] = *reinterpret_cast<const uint32_t*>(src);
        }
      }
    }

    // Dequantisation scales of keys g and g + 8 (the TMA loader's pages hold a warp's 16 keys:
    // one pair per warp). A uniform V scale is applied to the output at the end instead.
    float ks[2] = {k_uniform, k_uniform}, vs[2] = {1.f, 1.f};
    if (k_per_key || v_per_key) {
      if constexpr (kTma) {
        const float2 x = *reinterpret_cast<const float2*>(loader.stage_scales(stage) + 2 * warp);
        if (k_per_key) { ks[0] = ks[1] = x.x; }
        if (v_per_key) { vs[0] = vs[1] = x.y; }
      } else {
        const float4 x = *reinterpret_cast<const float4*>(loader.stage_scales(stage) + warp * 32 + g * 4);
        if (k_per_key) { ks[0] = x.x, ks[1] = x.y; }
        if (v_per_key) { vs[0] = x.z, vs[1] = x.w; }
      }
    }

    // Logit transforms in raw score units, then log2 units; each runtime choice is one
    // warp-uniform branch. Element i: key g + 8 (i / 2), row 2t + i % 2.
    auto key_of = [&](int i) { return n0 + key0 + g + 8 * (i / 2); };
    if (softcap || alibi) {
      CUTE_UNROLL
      for (int rb = 0; rb < kRB; ++rb) {
        CUTE_UNROLL
        for (int i = 0; i < 4; ++i) {
          float x = s[rb][i] * (ks[i / 2] * kFp8Unscale);
          if (softcap) { x = fast_tanh(x * p.softcap_prescale); }
          if (alibi) { x -= rows[rb][i % 2].slope * fabsf(float(rows[rb][i % 2].qpos - key_of(i))); }
          s[rb][i] = x * p.logit_scale_log2;
        }
      }
    } else {
      const float f[2] = {ks[0] * (kFp8Unscale * p.logit_scale_log2), ks[1] * (kFp8Unscale * p.logit_scale_log2)};
      CUTE_UNROLL
      for (int rb = 0; rb < kRB; ++rb) {
        CUTE_UNROLL
        for (int i = 0; i < 4; ++i) { s[rb][i] *= f[i / 2]; }
      }
    }
    if (n0 < keys.unmasked_lo || n0 + kBlockN > keys.unmasked_hi) {
      CUTE_UNROLL
      for (int rb = 0; rb < kRB; ++rb) {
        CUTE_UNROLL
        for (int i = 0; i < 4; ++i) {
          const int key = key_of(i);
          if (key < key_min[rb][i % 2] || key > key_max[rb][i % 2]) { s[rb][i] = -INFINITY; }
        }
      }
    }

    // Online softmax: a row's 16 keys lie across the eight lane groups g.
    float correction[kRB][2];
    bool any_correction = false;
    CUTE_UNROLL
    for (int rb = 0; rb < kRB; ++rb) {
      CUTE_UNROLL
      for (int j = 0; j < 2; ++j) {
        float m = fmaxf(s[rb][j], s[rb][2 + j]);
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 4));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 8));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 16));
        m = fmaxf(m, row_max[rb][j]);
        const float m_safe = m == -INFINITY ? 0.f : m;
        correction[rb][j] = exp2f(row_max[rb][j] - m_safe);
        any_correction |= correction[rb][j] != 1.f;
        row_max[rb][j] = m;
        s[rb][j] = exp2f(s[rb][j] - m_safe);
        s[rb][2 + j] = exp2f(s[rb][2 + j] - m_safe);
        row_sum[rb][j] = row_sum[rb][j] * correction[rb][j] + (s[rb][j] + s[rb][2 + j]);
      }
    }
    // Once the running maxima settle the factors are 1: skip the rescale (warp-uniform). ptxas
    // predicates these multiplies, so they still take issue slots; a form that kept a real
    // branch measured no faster (bench/NOTES.md, session 11).
    if (__any_sync(0xffffffffu, any_correction)) {
      CUTE_UNROLL
      for (int mb = 0; mb < kMB; ++mb) {
        CUTE_UNROLL
        for (int rb = 0; rb < kRB; ++rb) {
          CUTE_UNROLL
          for (int i = 0; i < 4; ++i) { acc_o[mb][rb][i] *= correction[rb][i % 2]; }
        }
      }
    }

    // P^T (B operand: keys 2t, 2t+1 / 2t+8, 2t+9 of row g), V's scales folded in.
    uint32_t pb[kRB][2];
    CUTE_UNROLL
    for (int rb = 0; rb < kRB; ++rb) {
      CUTE_UNROLL
      for (int kh = 0; kh < 2; ++kh) {
        const float p0 = v_per_key ? s[rb][2 * kh] * vs[kh] : s[rb][2 * kh];
        const float p1 = v_per_key ? s[rb][2 * kh + 1] * vs[kh] : s[rb][2 * kh + 1];
        pb[rb][kh] = transpose8x8(pack2(p0, p1, static_cast<Mma*>(nullptr)));
      }
    }

    // O^T += V^T P^T.
    CUTE_UNROLL
    for (int vg = 0; vg < kVB / kVec; ++vg) {
      const auto& w = vw[vg];
      CUTE_UNROLL
      for (int b = 0; b < kVec; b += 2) {
        const int mb = (vg * kVec + b) / 2, wi = b / 4, sel = b % 4;
        // Bytes (sel, sel + 1) of a key pair's words -> [key 2t ch, key 2t+1 ch, key 2t ch+1,
        // key 2t+1 ch+1]: the low half is row g's operand, the high half row g + 8's.
        constexpr uint32_t kPairs = 0x5140;
        const uint32_t lo = __byte_perm(w[0][wi], w[1][wi], kPairs + sel * 0x1111);
        const uint32_t hi = __byte_perm(w[2][wi], w[3][wi], kPairs + sel * 0x1111);
        const uint32_t a[4] = {e4m3x2_to_f16x2<0>(lo), e4m3x2_to_f16x2<1>(lo), e4m3x2_to_f16x2<0>(hi),
                               e4m3x2_to_f16x2<1>(hi)};
        CUTE_UNROLL
        for (int rb = 0; rb < kRB; ++rb) { mma16816<Mma>(acc_o[mb][rb], a, pb[rb][0], pb[rb][1]); }
      }
    }
  });
  cute::cp_async_wait<0>();
  release_dependent_launch();
  __syncthreads();  // the pipeline's memory becomes the merge buffer

  // ---- merge the warps' partial results (every warp holds all the CTA's rows) ----
  const MergeBuffers<Traits::kWarps, Traits::kRows, D> buf(smem);
  CUTE_UNROLL
  for (int rb = 0; rb < kRB; ++rb) {
    CUTE_UNROLL
    for (int j = 0; j < 2; ++j) {
      float l = row_sum[rb][j];
      l += __shfl_xor_sync(0xffffffffu, l, 4);
      l += __shfl_xor_sync(0xffffffffu, l, 8);
      l += __shfl_xor_sync(0xffffffffu, l, 16);
      if (g == 0) {
        const int r = 8 * rb + 2 * t + j;
        buf.m[warp * Traits::kRows + r] = row_max[rb][j];
        buf.l[warp * Traits::kRows + r] = l;
      }
    }
  }
  CUTE_UNROLL
  for (int mb = 0; mb < kMB; ++mb) {
    CUTE_UNROLL
    for (int rb = 0; rb < kRB; ++rb) {
      CUTE_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int r = 8 * rb + 2 * t + i % 2;
        const int col = g * kVB + 2 * mb + i / 2;
        buf.o[(warp * Traits::kRows + r) * D + col] = acc_o[mb][rb][i] * v_uniform;
      }
    }
  }
  merge_slices_and_store<Element, D, Traits::kRows, 1, Traits::kWarps, kThreads, kCluster>(p, buf, batch, head_kv,
                                                                                           seqlen_k, row_first, split);
}

}  // namespace flashgen::sm80::decode
