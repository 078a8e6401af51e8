// Decode attention over a KV cache: a few query rows (the query tokens of a sequence times the
// query heads of a GQA group, packed) against a long, possibly paged, possibly FP8 cache.
//
// Bound by reading K and V, so the kernel is built around the loads: one CTA per (key split,
// KV head, block of packed rows, batch entry), a deep cp.async pipeline of 64-key stages (128
// for FP8 caches at one row tile), and the four warps splitting each stage's keys between them (each warp keeps its own running max,
// sum and output for all the CTA's rows of its row tile; they are merged once at the end).
// Any page size works: every key row is addressed on its own through the block table.
//
// FP8 (e4m3) caches are converted in registers to fp16 (exactly) and multiplied on fp16 tensor
// cores; per-key scales ride along with the rows into shared memory. Two index permutations keep
// those reads wide without a transposed copy: head-dim channels of Q and K are read in the order that
// gives each thread 8 contiguous bytes per 32 channels (the dot product does not care), and each
// thread accumulates a contiguous run of output channels (un-permuted when the output is written).
#pragma once

#include <cstdint>

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>
#include <cutlass/numeric_types.h>

#include "common/fwd_params.h"
#include "common/logit_transforms.hpp"
#include "sm80/sm80_decode_tile.h"

namespace flashgen::sm80::decode {

// Element: q and out (half_t or bfloat16_t). kKvE4m3: the cache is e4m3 (else Element).
// kRowTiles: 16-row tiles of packed rows per CTA (1 or 2); the warps not needed for rows split keys.
template <class Element_, bool kKvE4m3_, int kHeadDim_, int kRowTiles_>
struct DecodeTraits {
  using Element = Element_;
  static constexpr bool kKvE4m3 = kKvE4m3_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kRowTiles = kRowTiles_;
  static_assert(kHeadDim % 16 == 0 && kHeadDim <= 256, "decode head dims are multiples of 16 up to 256");
  static_assert(!kKvE4m3 || kHeadDim % 32 == 0, "FP8 caches need head dims that are multiples of 32");
  static_assert(kRowTiles == 1 || kRowTiles == 2, "1 or 2 row tiles");

  static constexpr int kRows = 16 * kRowTiles;
  static constexpr int kBlockN = block_n(kKvE4m3, kHeadDim, kRowTiles);  // keys per pipeline stage
  static constexpr int kKeySlices = kWarps / kRowTiles;       // warps sharing a row tile
  static constexpr int kKeysPerWarp = kBlockN / kKeySlices;   // 16 or 32 (FP8 at one row tile: 32)
  static constexpr int kKvBytes = kKvE4m3 ? 1 : 2;
  static constexpr int kRowBytes = kHeadDim * kKvBytes;       // one key's K (or V) row
  static constexpr int kChunks = kRowBytes / 16;              // 16-byte chunks per row
  static constexpr int kTileBytes = kBlockN * kRowBytes;
  static constexpr int kStageBytes = stage_bytes(kKvE4m3, kHeadDim, kRowTiles);
  static constexpr int kStages = num_stages(kKvE4m3, kHeadDim, kRowTiles);
  static constexpr int kSmemBytes = smem_bytes(kKvE4m3, kHeadDim, kRowTiles);
};

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile. Eight rows read at the same
// chunk (ldmatrix, the FP8 fragment loads) must hit eight different 16-byte bank groups: rows
// start at bank group (row * kChunks) % 8, which cycles through multiples of G = gcd(kChunks, 8)
// every 8 / G rows, and an XOR inside aligned groups of G chunks covers the rest.
template <int kChunks>
__device__ __forceinline__ int swizzled(int row, int chunk) {
  constexpr int kG = kChunks % 8 == 0 ? 8 : kChunks % 4 == 0 ? 4 : kChunks % 2 == 0 ? 2 : 1;
  constexpr int kPeriod = 8 / kG;
  return (row * kChunks + (chunk ^ ((row / kPeriod) % kG))) * 16;
}

// Two e4m3 values (the low or the high 16 bits of x) -> fp16x2. sm89 and newer convert in one
// instruction; sm80 moves the e4m3 exponent and mantissa bits into the fp16 fields, which is
// exact (subnormals included) and gives 2^-8 times the value: kFp8Unscale puts that back.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
constexpr float kFp8Unscale = 1.f;
template <int kHalf>
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t x) {
  uint32_t out;
  if constexpr (kHalf == 0) {
    asm("{\n .reg .b16 lo, hi;\n mov.b32 {lo, hi}, %1;\n cvt.rn.f16x2.e4m3x2 %0, lo;\n}" : "=r"(out) : "r"(x));
  } else {
    asm("{\n .reg .b16 lo, hi;\n mov.b32 {lo, hi}, %1;\n cvt.rn.f16x2.e4m3x2 %0, hi;\n}" : "=r"(out) : "r"(x));
  }
  return out;
}
#else
constexpr float kFp8Unscale = 256.f;
template <int kHalf>
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t x) {
  // Bytes (2 kHalf, 2 kHalf + 1) -> bytes 1 and 3.
  const uint32_t y = __byte_perm(x, 0u, kHalf == 0 ? 0x1404 : 0x3424);
  return ((y >> 1) & 0x3F803F80u) | (y & 0x80008000u);
}
#endif

__device__ __forceinline__ uint32_t pack2(float a, float b, cutlass::half_t*) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(float a, float b, cutlass::bfloat16_t*) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <class T>
__device__ __forceinline__ float2 unpack2(uint32_t x);
template <>
__device__ __forceinline__ float2 unpack2<cutlass::half_t>(uint32_t x) {
  return __half22float2(*reinterpret_cast<__half2*>(&x));
}
template <>
__device__ __forceinline__ float2 unpack2<cutlass::bfloat16_t>(uint32_t x) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&x));
}

// The multiply type: Element, or fp16 for an FP8 cache.
template <class Traits>
using MmaElement = std::conditional_t<Traits::kKvE4m3, cutlass::half_t, typename Traits::Element>;

template <class T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, cutlass::half_t>) {
    cute::SM80_16x8x16_F32F16F16F32_TN::fma(d[0], d[1], d[2], d[3], a[0], a[1], a[2], a[3], b0, b1, d[0], d[1],
                                            d[2], d[3]);
  } else {
    cute::SM80_16x8x16_F32BF16BF16F32_TN::fma(d[0], d[1], d[2], d[3], a[0], a[1], a[2], a[3], b0, b1, d[0], d[1],
                                              d[2], d[3]);
  }
}

struct RowInfo {
  int qpos;      // the query's position among the keys (bottom-right aligned)
  float slope;   // ALiBi slope in raw score units (0: none)
  bool valid;    // a real packed row (not padding)
  int head;      // query head
  int query;     // query index within the sequence
};

template <class Traits>
__global__ void __launch_bounds__(kThreads) decode_kernel(const __grid_constant__ FwdParams p) {
  using Element = typename Traits::Element;
  using Mma = MmaElement<Traits>;
  constexpr int D = Traits::kHeadDim;
  constexpr int kChunks = Traits::kChunks;
  constexpr int kStages = Traits::kStages;
  constexpr int kKeysPerWarp = Traits::kKeysPerWarp;
  constexpr int kNB = kKeysPerWarp / 8;  // key n-blocks of S per warp and stage
  constexpr int kKB = D / 16;            // k-blocks of the head dim
  constexpr int kVB = D / 8;             // n-blocks of the output
  constexpr int kBlockN = Traits::kBlockN;

  extern __shared__ __align__(128) char smem[];

  const int split = blockIdx.x;
  const int row_blocks = (p.seqlen_q * p.group_size + Traits::kRows - 1) / Traits::kRows;
  const int head_kv = blockIdx.y / row_blocks;
  const int row_block = blockIdx.y % row_blocks;
  const int batch = blockIdx.z;
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int row_tile = warp % Traits::kRowTiles;
  const int slice = warp / Traits::kRowTiles;

  // Out-of-range metadata is clamped (the host checks it unless told not to): wrong numbers at
  // worst, never an access outside the cache.
  const int seqlen_k =
      p.seqused_k != nullptr ? max(0, min(p.seqused_k[batch] + p.seqused_k_add, p.seqlen_k)) : p.seqlen_k;
  const int n_rows = p.seqlen_q * p.group_size;

  auto row_info = [&](int packed_row) {
    RowInfo r;
    r.valid = packed_row < n_rows;
    const int pr = r.valid ? packed_row : n_rows - 1;
    r.query = pr / p.group_size;
    r.head = head_kv * p.group_size + pr % p.group_size;
    r.qpos = seqlen_k - p.seqlen_q + r.query;
    r.slope = p.alibi_slopes == nullptr ? 0.f
                                        : p.alibi_slopes[batch * p.alibi_batch_stride + r.head] / p.logit_scale;
    return r;
  };

  // Keys the CTA's rows can see, and the sub-range of them where some row needs a mask.
  const int row_first = row_block * Traits::kRows;
  const int row_last = min(row_first + Traits::kRows, n_rows) - 1;
  const int qpos_min = seqlen_k - p.seqlen_q + row_first / p.group_size;
  const int qpos_max = seqlen_k - p.seqlen_q + row_last / p.group_size;
  const int key_lo = p.window_left >= 0 ? max(0, qpos_min - p.window_left) : 0;
  const int key_hi = p.window_right >= 0 ? min(seqlen_k, qpos_max + p.window_right + 1) : seqlen_k;
  const int unmasked_lo = p.window_left >= 0 ? qpos_max - p.window_left : 0;
  const int unmasked_hi = p.window_right >= 0 ? min(seqlen_k, qpos_min + p.window_right + 1) : seqlen_k;

  const int tile_lo = key_lo / kBlockN;
  const int tiles = key_hi > key_lo ? (key_hi + kBlockN - 1) / kBlockN - tile_lo : 0;
  const int per_split = (tiles + p.num_splits - 1) / p.num_splits;
  const int my_first = tile_lo + split * per_split;
  const int my_tiles = max(0, min(tiles - split * per_split, per_split));

  // ---- loads ----
  const int kv_entry_dense =
      p.kv_batch_idx != nullptr ? max(0, min(p.kv_batch_idx[batch], p.kv_batch_count - 1)) : batch;
  const bool paged = p.block_table != nullptr;
  const int* block_row = paged ? p.block_table + batch * p.block_table_batch_stride : nullptr;
  const bool pow2_pages = paged && (p.page_size & (p.page_size - 1)) == 0;
  const int page_shift = pow2_pages ? __ffs(p.page_size) - 1 : 0;
  const char* k_base = static_cast<const char*>(p.k) + int64_t(head_kv) * p.k_head_stride * Traits::kKvBytes;
  const char* v_base = static_cast<const char*>(p.v) + int64_t(head_kv) * p.v_head_stride * Traits::kKvBytes;

  auto stage_k = [&](int stage) { return smem + stage * Traits::kStageBytes; };
  auto stage_v = [&](int stage) { return smem + stage * Traits::kStageBytes + Traits::kTileBytes; };
  auto stage_scales = [&](int stage) {
    return reinterpret_cast<float*>(smem + stage * Traits::kStageBytes + 2 * Traits::kTileBytes);
  };

  auto scale_index = [&](const Fp8Scale& s, int entry, int offset) {
    int64_t i = int64_t(entry) * s.batch_stride + int64_t(head_kv) * s.head_stride;
    if (s.block_stride != 0) { i += int64_t(offset / s.block_rows) * s.block_stride; }
    return i;
  };

  // A stage's copy: each key row is taken by kLanes adjacent threads, lane l copying the row's
  // chunks l, l + kLanes, ...; a thread's rows are kRowsPerPass apart, and a row's address
  // (through the block table when paged) is worked out once per row and thread, not per chunk.
  // 16-bit caches take 8 lanes, so that a warp's copy instruction reads whole 128-byte lines
  // (32-byte pieces of 16 rows cost them 10%); FP8 caches, whose stages are bound by their
  // instruction count, take 2 (8 lanes, four times the address work, cost them 25%).
  constexpr int kLanes = Traits::kKvE4m3 ? 2 : kChunks % 8 == 0 ? 8 : kChunks % 4 == 0 ? 4 : 2;
  constexpr int kRowsPerPass = kThreads / kLanes;
  constexpr int kPasses = kBlockN / kRowsPerPass;
  static_assert(kChunks % 2 == 0 && kBlockN % kRowsPerPass == 0, "whole rows per thread group");
  const int my_row = tid / kLanes, my_lane = tid % kLanes;
  const int64_t k_row_bytes = p.k_row_stride * Traits::kKvBytes, v_row_bytes = p.v_row_stride * Traits::kKvBytes;
  const int64_t k_entry_bytes = p.k_batch_stride * Traits::kKvBytes, v_entry_bytes = p.v_batch_stride * Traits::kKvBytes;

  // Paged caches: the page of each of this thread's rows in the next two tiles to load, read
  // from the block table two stages ahead so that the table's latency (a DRAM miss behind the
  // cache stream, often) stays off the stage's issue path; tiles are loaded in order. Kept raw
  // and clamped where used.
  int pages_now[kPasses] = {}, pages_next[kPasses] = {};
  auto fetch_pages = [&](int tile, int (&dst)[kPasses]) {
    CUTE_UNROLL
    for (int i = 0; i < kPasses; ++i) {
      const int key = tile * kBlockN + my_row + i * kRowsPerPass;
      dst[i] = key < key_hi ? block_row[pow2_pages ? key >> page_shift : key / p.page_size] : 0;
    }
  };

  auto load_tile = [&](int tile, int stage) {
    const int n0 = tile * kBlockN;
    CUTE_UNROLL
    for (int i = 0; i < kPasses; ++i) {
      const int row = my_row + i * kRowsPerPass;
      const int key = n0 + row;
      const bool in = key < key_hi;  // rows past the keys are zero-filled
      int entry = kv_entry_dense, offset = key;
      if (paged) {
        entry = max(0, min(pages_now[i], p.num_pages - 1));
        offset = pow2_pages ? key & (p.page_size - 1) : key % p.page_size;
      }
      const char* k_row = in ? k_base + int64_t(entry) * k_entry_bytes + int64_t(offset) * k_row_bytes : k_base;
      const char* v_row = in ? v_base + int64_t(entry) * v_entry_bytes + int64_t(offset) * v_row_bytes : v_base;
      CUTE_UNROLL
      for (int u = 0; u < kChunks / kLanes; ++u) {
        const int chunk = my_lane + kLanes * u;
        const int dst = swizzled<kChunks>(row, chunk);
        cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(
            *reinterpret_cast<const cute::uint128_t*>(k_row + (in ? chunk * 16 : 0)),
            *reinterpret_cast<cute::uint128_t*>(stage_k(stage) + dst), in);
        cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(
            *reinterpret_cast<const cute::uint128_t*>(v_row + (in ? chunk * 16 : 0)),
            *reinterpret_cast<cute::uint128_t*>(stage_v(stage) + dst), in);
      }
      if constexpr (Traits::kKvE4m3) {
        // Per-key scales travel with the rows, asynchronously (a dependent load would stall the
        // stage's issue): the row's lane 0 copies its K scale, lane 1 its V scale. A missing
        // scale is never read (it counts as 1).
        const Fp8Scale& sc = my_lane != 0 ? p.v_scale : p.k_scale;
        if (my_lane < 2 && sc.scale != nullptr) {
          cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<uint32_t>::copy(
              *reinterpret_cast<const uint32_t*>(sc.scale + (in ? scale_index(sc, entry, offset) : 0)),
              *reinterpret_cast<uint32_t*>(stage_scales(stage) + my_lane * kBlockN + row), in);
        }
      }
    }
    if (paged) {
      CUTE_UNROLL
      for (int i = 0; i < kPasses; ++i) { pages_now[i] = pages_next[i]; }
      if (tile + 2 < my_first + my_tiles) { fetch_pages(tile + 2, pages_next); }
    }
  };

  // Start the pipeline before touching Q.
  if (paged) {
    if (my_tiles > 0) { fetch_pages(my_first, pages_now); }
    if (my_tiles > 1) { fetch_pages(my_first + 1, pages_next); }
  }
  CUTE_UNROLL
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < my_tiles) { load_tile(my_first + s, s); }
    cute::cp_async_fence();
  }

  // ---- Q fragments (A operand, rows g and g + 8 of this warp's row tile) ----
  const RowInfo rows[2] = {row_info(row_first + row_tile * 16 + g), row_info(row_first + row_tile * 16 + g + 8)};
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
      for (int half = 0; half < 2; ++half) {  // logical channels 2t.. (half 0) and 2t+8.. (half 1)
        const int col = Traits::kKvE4m3 ? (kb / 2) * 32 + 8 * t + (kb % 2) * 4 + 2 * half : kb * 16 + 2 * t + 8 * half;
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          uint32_t x = rows[r].valid ? *reinterpret_cast<const uint32_t*>(qrow[r] + col) : 0u;
          if constexpr (Traits::kKvE4m3 && !std::is_same_v<Element, cutlass::half_t>) {
            const float2 f = unpack2<Element>(x);
            x = pack2(f.x, f.y, static_cast<cutlass::half_t*>(nullptr));
          }
          qf[kb][2 * half + r] = x;
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

  // FP8: multiplies each key's column of an accumulator by its dequantisation scale (from the
  // stage's scale array; 1 without scales) times the conversion's factor.
  auto scale_keys = [&](float (&acc)[kNB][4], const float* scales, bool present, int key0) {
    if (!present && kFp8Unscale == 1.f) { return; }  // warp-uniform
    CUTE_UNROLL
    for (int nb = 0; nb < kNB; ++nb) {
      float2 sc = make_float2(1.f, 1.f);
      if (present) { sc = *reinterpret_cast<const float2*>(scales + key0 + nb * 8 + 2 * t); }
      acc[nb][0] *= sc.x * kFp8Unscale;
      acc[nb][1] *= sc.y * kFp8Unscale;
      acc[nb][2] *= sc.x * kFp8Unscale;
      acc[nb][3] *= sc.y * kFp8Unscale;
    }
  };

  for (int it = 0; it < my_tiles; ++it) {
    cute::cp_async_wait<kStages - 2>();
    __syncthreads();
    if (it + kStages - 1 < my_tiles) { load_tile(my_first + it + kStages - 1, (it + kStages - 1) % kStages); }
    cute::cp_async_fence();

    const int stage = it % kStages;
    const char* sk = stage_k(stage);
    const char* sv = stage_v(stage);
    const int n0 = (my_first + it) * kBlockN;
    const int key0 = slice * kKeysPerWarp;  // first key of this warp within the tile

    // S = Q K^T for this warp's keys: (16 rows, kKeysPerWarp keys)
    float s[kNB][4];
    CUTE_UNROLL
    for (int nb = 0; nb < kNB; ++nb) { s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f; }
    if constexpr (!Traits::kKvE4m3) {
      CUTE_UNROLL
      for (int kb = 0; kb < kKB; ++kb) {
        CUTE_UNROLL
        for (int np = 0; np < kNB / 2; ++np) {
          // Matrices: keys 0-7 / 8-15 of the pair, channels 8 * (2 kb) and 8 * (2 kb + 1).
          const int mat = lane / 8;
          const int row = key0 + np * 16 + (mat / 2) * 8 + lane % 8;
          const int chunk = 2 * kb + mat % 2;
          uint32_t b[4];
          cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(sk + swizzled<kChunks>(row, chunk)),
                                        b[0], b[1], b[2], b[3]);
          mma16816<Mma>(s[2 * np], qf[kb], b[0], b[1]);
          mma16816<Mma>(s[2 * np + 1], qf[kb], b[2], b[3]);
        }
      }
    } else {
      CUTE_UNROLL
      for (int nb = 0; nb < kNB; ++nb) {
        const int row = key0 + nb * 8 + g;
        CUTE_UNROLL
        for (int kb2 = 0; kb2 < kKB / 2; ++kb2) {
          const int byte = kb2 * 32 + 8 * t;
          const uint2 raw = *reinterpret_cast<const uint2*>(sk + swizzled<kChunks>(row, byte / 16) + byte % 16);
          mma16816<Mma>(s[nb], qf[2 * kb2], e4m3x2_to_f16x2<0>(raw.x), e4m3x2_to_f16x2<1>(raw.x));
          mma16816<Mma>(s[nb], qf[2 * kb2 + 1], e4m3x2_to_f16x2<0>(raw.y), e4m3x2_to_f16x2<1>(raw.y));
        }
      }
    }
    if constexpr (Traits::kKvE4m3) { scale_keys(s, stage_scales(stage), p.k_scale.scale != nullptr, key0); }

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
    if (n0 < unmasked_lo || n0 + kBlockN > unmasked_hi) {
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

    if constexpr (Traits::kKvE4m3) {
      scale_keys(s, stage_scales(stage) + kBlockN, p.v_scale.scale != nullptr, key0);
    }

    // O += P V, 16 keys at a time.
    CUTE_UNROLL
    for (int kc = 0; kc < kNB / 2; ++kc) {
      const uint32_t a[4] = {pack2(s[2 * kc][0], s[2 * kc][1], static_cast<Mma*>(nullptr)),
                             pack2(s[2 * kc][2], s[2 * kc][3], static_cast<Mma*>(nullptr)),
                             pack2(s[2 * kc + 1][0], s[2 * kc + 1][1], static_cast<Mma*>(nullptr)),
                             pack2(s[2 * kc + 1][2], s[2 * kc + 1][3], static_cast<Mma*>(nullptr))};
      const int kbase = key0 + kc * 16;
      if constexpr (!Traits::kKvE4m3) {
        CUTE_UNROLL
        for (int vp = 0; vp < kVB / 2; ++vp) {
          // Matrices: keys 0-7 / 8-15 at channels 8 vp2, then the same at 8 (vp2 + 1).
          const int mat = lane / 8;
          const int row = kbase + (mat % 2) * 8 + lane % 8;
          const int chunk = 2 * vp + mat / 2;
          uint32_t b[4];
          cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(sv + swizzled<kChunks>(row, chunk)),
                                        b[0], b[1], b[2], b[3]);
          mma16816<Mma>(acc_o[2 * vp], a, b[0], b[1]);
          mma16816<Mma>(acc_o[2 * vp + 1], a, b[2], b[3]);
        }
      } else {
        // Thread g owns output channels [g * kVB, (g + 1) * kVB): logical n-block vb, column g is
        // channel g * kVB + vb. Its B operand needs keys 2t, 2t+1 (b0) and 2t+8, 2t+9 (b1).
        // Widest aligned vector of those kVB bytes per row: one LDS.128 per row at head dim 128.
        constexpr int kVec = kVB % 16 == 0 ? 16 : kVB % 8 == 0 ? 8 : 4;
        CUTE_UNROLL
        for (int vg = 0; vg < kVB / kVec; ++vg) {
          uint32_t w[4][kVec / 4];
          CUTE_UNROLL
          for (int k4 = 0; k4 < 4; ++k4) {  // keys 2t, 2t+1, 2t+8, 2t+9
            const int row = kbase + 2 * t + (k4 % 2) + 8 * (k4 / 2);
            const int byte = g * kVB + vg * kVec;
            const char* src = sv + swizzled<kChunks>(row, byte / 16) + byte % 16;
            if constexpr (kVec == 16) {
              const uint4 x = *reinterpret_cast<const uint4*>(src);
              w[k4][0] = x.x, w[k4][1] = x.y, w[k4][2] = x.z, w[k4][3] = x.w;
            } else if constexpr (kVec == 8) {
              const uint2 x = *reinterpret_cast<const uint2*>(src);
              w[k4][0] = x.x, w[k4][1] = x.y;
            } else {
              w[k4][0] = *reinterpret_cast<const uint32_t*>(src);
            }
          }
          CUTE_UNROLL
          for (int b = 0; b < kVec; b += 2) {
            const int vb = vg * kVec + b, wi = b / 4, sel = b % 4;
            // One permute per key pair and two channels: bytes (sel, sel + 1) of the words give
            // [key 2t ch, key 2t+1 ch, key 2t ch+1, key 2t+1 ch+1] (keys 2t+8, 2t+9 for b1); the
            // low half converts to channel vb's operand, the high half to vb + 1's.
            constexpr uint32_t kPairs = 0x5140;
            const uint32_t lo = __byte_perm(w[0][wi], w[1][wi], kPairs + sel * 0x1111);
            const uint32_t hi = __byte_perm(w[2][wi], w[3][wi], kPairs + sel * 0x1111);
            mma16816<Mma>(acc_o[vb], a, e4m3x2_to_f16x2<0>(lo), e4m3x2_to_f16x2<0>(hi));
            mma16816<Mma>(acc_o[vb + 1], a, e4m3x2_to_f16x2<1>(lo), e4m3x2_to_f16x2<1>(hi));
          }
        }
      }
    }
  }
  cute::cp_async_wait<0>();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The split-KV combine (a programmatic dependent launch) may be scheduled now; it waits for
  // this grid's completion before reading the partials.
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  __syncthreads();  // the pipeline's memory becomes the merge buffer

  // ---- merge the key slices' partial results ----
  float* merge_o = reinterpret_cast<float*>(smem);                 // (warp, 16 rows, D)
  float* merge_m = merge_o + kWarps * 16 * D;                      // (warp, 16 rows)
  float* merge_l = merge_m + kWarps * 16;
  float* merge_f = merge_l + kWarps * 16;                           // per (warp, row) factor
  CUTE_UNROLL
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    if (t == 0) {
      merge_m[warp * 16 + g + 8 * r] = row_max[r];
      merge_l[warp * 16 + g + 8 * r] = row_sum[r];
    }
  }
  CUTE_UNROLL
  for (int vb = 0; vb < kVB; ++vb) {
    CUTE_UNROLL
    for (int i = 0; i < 4; ++i) {
      const int r = g + 8 * (i / 2);
      const int n = 2 * t + i % 2;
      const int col = Traits::kKvE4m3 ? n * kVB + vb : vb * 8 + n;
      merge_o[(warp * 16 + r) * D + col] = acc_o[vb][i];
    }
  }
  __syncthreads();

  const bool split_out = p.num_splits > 1;
  const int64_t split_stride = int64_t(p.num_heads_q) * p.total_q;
  // One thread per CTA row: the row's max, sum and each slice's factor.
  if (tid < Traits::kRows) {
    const int rt = tid / 16, r = tid % 16;
    const RowInfo info = row_info(row_first + tid);
    float m = -INFINITY;
    for (int sl = 0; sl < Traits::kKeySlices; ++sl) { m = fmaxf(m, merge_m[(sl * Traits::kRowTiles + rt) * 16 + r]); }
    const float sink = (!split_out && p.sinks != nullptr) ? p.sinks[info.head] * float(M_LOG2E) : -INFINITY;
    const float ref = fmaxf(m, sink);
    float l = 0.f;
    if (ref != -INFINITY) {
      for (int sl = 0; sl < Traits::kKeySlices; ++sl) {
        const int w = sl * Traits::kRowTiles + rt;
        l += merge_l[w * 16 + r] * exp2f(merge_m[w * 16 + r] - ref);
      }
      if (sink != -INFINITY) { l += exp2f(sink - ref); }
    }
    const bool empty = !(l > 0.f);
    const float inv_l = empty ? 0.f : 1.f / l;
    for (int sl = 0; sl < Traits::kKeySlices; ++sl) {
      const int w = sl * Traits::kRowTiles + rt;
      merge_f[w * 16 + r] = empty ? 0.f : exp2f(merge_m[w * 16 + r] - ref) * inv_l;
    }
    if (info.valid) {
      const float lse = empty ? (split_out ? -INFINITY : INFINITY) : (ref + __log2f(l)) * float(M_LN2);
      const int64_t q_row = int64_t(batch) * p.seqlen_q + info.query;
      if (split_out) {
        p.lse_accum[split * split_stride + int64_t(info.head) * p.total_q + q_row] = lse;
      } else if (p.lse != nullptr) {
        p.lse[int64_t(batch) * p.lse_batch_stride + int64_t(info.head) * p.lse_head_stride + info.query] = lse;
      }
    }
  }
  __syncthreads();

  // Every thread: 8 consecutive channels of one row at a time.
  constexpr int kVecs = Traits::kRows * D / 8;
  for (int v = tid; v < kVecs; v += kThreads) {
    const int row = v / (D / 8), col = (v % (D / 8)) * 8;
    const int rt = row / 16, r = row % 16;
    const RowInfo info = row_info(row_first + row);
    if (!info.valid) { continue; }
    float o[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int sl = 0; sl < Traits::kKeySlices; ++sl) {
      const int w = sl * Traits::kRowTiles + rt;
      const float f = merge_f[w * 16 + r];
      const float4* src = reinterpret_cast<const float4*>(merge_o + (w * 16 + r) * D + col);
      const float4 x0 = src[0], x1 = src[1];
      o[0] += f * x0.x; o[1] += f * x0.y; o[2] += f * x0.z; o[3] += f * x0.w;
      o[4] += f * x1.x; o[5] += f * x1.y; o[6] += f * x1.z; o[7] += f * x1.w;
    }
    if (split_out) {
      const int64_t q_row = int64_t(batch) * p.seqlen_q + info.query;
      float4* dst = reinterpret_cast<float4*>(p.out_accum + ((split * split_stride + int64_t(info.head) * p.total_q + q_row) * D + col));
      dst[0] = make_float4(o[0], o[1], o[2], o[3]);
      dst[1] = make_float4(o[4], o[5], o[6], o[7]);
    } else {
      uint4 packed;
      packed.x = pack2(o[0], o[1], static_cast<Element*>(nullptr));
      packed.y = pack2(o[2], o[3], static_cast<Element*>(nullptr));
      packed.z = pack2(o[4], o[5], static_cast<Element*>(nullptr));
      packed.w = pack2(o[6], o[7], static_cast<Element*>(nullptr));
      Element* out = static_cast<Element*>(p.out) + int64_t(batch) * p.out_batch_stride +
                     int64_t(info.query) * p.out_row_stride + int64_t(info.head) * p.out_head_stride + col;
      *reinterpret_cast<uint4*>(out) = packed;
    }
  }
}

}  // namespace flashgen::sm80::decode
