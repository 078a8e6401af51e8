// What the two decode kernels (16-bit caches: sm80_decode_kernel.hpp; FP8 caches:
// sm80_decode_fp8_kernel.hpp) share: the key range a CTA covers, the cp.async stage loader (any
// page size: every key row is addressed on its own through the block table), fragment helpers,
// and the final merge of the warps' partial results into the output or split-KV partials.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>
#include <cutlass/numeric_types.h>

#include "common/fwd_params.h"
#include "common/logit_transforms.hpp"
#include "sm80/sm80_decode_tile.h"

namespace flashgen::sm80::decode {

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

// The same for a tile that Hopper's TMA loader left (sm90/sm90_decode_tma.hpp): rows of at most
// 128 bytes are swizzled<kChunks>'s layout; longer rows lie as 128-byte column blocks of kBlockN
// rows each, the 128-byte swizzle (chunk ^ row % 8) inside, so eight rows at one chunk still
// hit eight bank groups.
template <int kChunks, int kBlockN>
__device__ __forceinline__ int tma_swizzled(int row, int chunk) {
  if constexpr (kChunks <= 8) {
    return swizzled<kChunks>(row, chunk);
  } else {
    return ((chunk / 8) * kBlockN * 8 + row * 8 + ((chunk % 8) ^ (row % 8))) * 16;
  }
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

// Packed row -> (query, head) and what the mask and ALiBi need. Rows past the real ones repeat
// the last real row (valid = false), so their loads stay in bounds.
__device__ __forceinline__ RowInfo row_info(const FwdParams& p, int batch, int head_kv, int seqlen_k, int packed_row) {
  const int n_rows = p.seqlen_q * p.group_size;
  RowInfo r;
  r.valid = packed_row < n_rows;
  const int pr = r.valid ? packed_row : n_rows - 1;
  r.query = pr / p.group_size;
  r.head = head_kv * p.group_size + pr % p.group_size;
  r.qpos = seqlen_k - p.seqlen_q + r.query;
  r.slope = p.alibi_slopes == nullptr ? 0.f : p.alibi_slopes[batch * p.alibi_batch_stride + r.head] / p.logit_scale;
  return r;
}

// What a CTA works on: grid (KV head x block of packed rows, split, batch entry), or with
// splits in x (p.decode_splits_in_x, and the cluster launch, whose clusters span the splits:
// kCluster) (split, KV head x block of packed rows, batch entry); the keys its rows can see,
// the sub-range where no row needs a mask, and its split of the key tiles. With the heads in x
// the KV heads of one (sequence, split) are neighbours in launch order and read the same pages
// (rows of a dense cache) at about the same time: H100, FP8 pages of 16 at batch 8-16 x 32k-64k,
// 12-22% faster than with the splits in x (bench/NOTES.md, session 34).
struct CtaWork {
  int split, head_kv, batch, row_first;
  int seqlen_k, key_lo, key_hi, unmasked_lo, unmasked_hi;
  int my_first, my_tiles;  // first key tile of this split, and how many
};

template <bool kCluster>
__device__ __forceinline__ CtaWork cta_work(const FwdParams& p, int rows_per_cta, int block_n) {
  CtaWork k;
  const int n_rows = p.seqlen_q * p.group_size;
  const int row_blocks = (n_rows + rows_per_cta - 1) / rows_per_cta;
  const bool splits_in_x = kCluster || p.decode_splits_in_x;
  const int head_block = splits_in_x ? blockIdx.y : blockIdx.x;
  k.split = splits_in_x ? blockIdx.x : blockIdx.y;
  k.head_kv = head_block / row_blocks;
  k.row_first = (head_block % row_blocks) * rows_per_cta;
  k.batch = blockIdx.z;
  // Out-of-range metadata is clamped (the host checks it unless told not to): wrong numbers at
  // worst, never an access outside the cache.
  k.seqlen_k =
      p.seqused_k != nullptr ? max(0, min(p.seqused_k[k.batch] + p.seqused_k_add, p.seqlen_k)) : p.seqlen_k;
  const int row_last = min(k.row_first + rows_per_cta, n_rows) - 1;
  const int qpos_min = k.seqlen_k - p.seqlen_q + k.row_first / p.group_size;
  const int qpos_max = k.seqlen_k - p.seqlen_q + row_last / p.group_size;
  k.key_lo = p.window_left >= 0 ? max(0, qpos_min - p.window_left) : 0;
  k.key_hi = p.window_right >= 0 ? min(k.seqlen_k, qpos_max + p.window_right + 1) : k.seqlen_k;
  k.unmasked_lo = p.window_left >= 0 ? qpos_max - p.window_left : 0;
  k.unmasked_hi = p.window_right >= 0 ? min(k.seqlen_k, qpos_min + p.window_right + 1) : k.seqlen_k;
  const int tile_lo = k.key_lo / block_n;
  const int tiles = k.key_hi > k.key_lo ? (k.key_hi + block_n - 1) / block_n - tile_lo : 0;
  const int per_split = (tiles + p.num_splits - 1) / p.num_splits;
  k.my_first = tile_lo + k.split * per_split;
  k.my_tiles = max(0, min(tiles - k.split * per_split, per_split));
  return k;
}

// A 16-byte cp.async (L2 prefetch of 128 bytes) from src + kOffset, zero-filled when !in. The
// offset is part of the instruction (an address register shared by a row's chunks).
template <int kOffset>
__device__ __forceinline__ void cp_async_16(void* smem_dst, const char* src, bool in) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1 + %2], 16, %3;\n" ::"r"(dst), "l"(src), "n"(kOffset),
               "r"(in ? 16 : 0));
}

template <int kFirst, int kLast, class F>
__device__ __forceinline__ void static_for(F&& f) {
  if constexpr (kFirst < kLast) {
    f(std::integral_constant<int, kFirst>{});
    static_for<kFirst + 1, kLast>(f);
  }
}

// Where an FP8 dequantisation scale of (cache entry, KV head, row offset in the entry) lies in
// s.scale (both stage loaders: StageLoader below, sm90/sm90_decode_tma.hpp's TmaStageLoader).
__device__ __forceinline__ int64_t fp8_scale_index(const Fp8Scale& s, int entry, int head_kv, int offset) {
  int64_t i = int64_t(entry) * s.batch_stride + int64_t(head_kv) * s.head_stride;
  if (s.block_stride != 0) { i += int64_t(offset / s.block_rows) * s.block_stride; }
  return i;
}

// cp.async copies of a stage: K and V tiles of Traits::kBlockN keys (16-byte chunks, swizzled)
// and, for FP8 caches, each key's K and V scale at Traits::scale_slot(row, is_v). Each key row
// is taken by kLanes adjacent threads, lane l copying the row's chunks l, l + kLanes, ...; a
// thread's rows are kRowsPerPass apart, and a row's address (through the block table when paged)
// is worked out once per row and thread, not per chunk. 16-bit caches take 8 lanes, so that a
// warp's copy instruction reads whole 128-byte lines (32-byte pieces of 16 rows cost them 10%);
// FP8 caches, whose stages are bound by their instruction count, take 2 (8 lanes, four times
// the address work, cost them 25%).
template <class Traits>
struct StageLoader {
  static constexpr int kChunks = Traits::kChunks;
  static constexpr int kLanes = Traits::kKvE4m3 ? 2 : kChunks % 8 == 0 ? 8 : kChunks % 4 == 0 ? 4 : 2;
  static constexpr int kRowsPerPass = Traits::kThreads / kLanes;
  static constexpr int kPasses = Traits::kBlockN / kRowsPerPass;
  static_assert(kChunks % 2 == 0 && Traits::kBlockN % kRowsPerPass == 0, "whole rows per thread group");

  const FwdParams& p;
  char* smem;
  const char* k_base;
  const char* v_base;
  int64_t k_row_bytes, v_row_bytes, k_entry_bytes, v_entry_bytes;
  const int* block_row;  // this sequence's block table row (paged), else nullptr
  int kv_entry_dense, head_kv, key_hi, end_tile, page_shift;
  bool pow2_pages;
  int my_row, my_lane;
  // FP8 scales that differ between the CTA's keys (per page, or per block of keys): copied with
  // each row. The others are one number for the whole CTA (uniform_scale).
  bool k_per_key, v_per_key;
  // Paged caches: the page of each of this thread's rows in the next two tiles to load, read
  // from the block table two stages ahead so that the table's latency (a DRAM miss behind the
  // cache stream, often) stays off the stage's issue path; tiles are loaded in order. Kept raw
  // and clamped where used. Tile my_first + i uses slot i % 2, a compile-time index when the
  // main loop is unrolled by two (the FP8 kernel: moving the slots instead made its loop wait
  // for each table read at the end of the iteration that issued it); kSlot = -1 moves them (the
  // 16-bit kernel, which measured slower unrolled).
  int pages[2][kPasses];

  __device__ __forceinline__ StageLoader(const FwdParams& params, char* smem_, const CtaWork& keys)
      : p(params), smem(smem_), head_kv(keys.head_kv), key_hi(keys.key_hi), end_tile(keys.my_first + keys.my_tiles) {
    const int batch = keys.batch;
    constexpr int kBytes = Traits::kKvBytes;
    k_base = static_cast<const char*>(p.k) + int64_t(head_kv) * p.k_head_stride * kBytes;
    v_base = static_cast<const char*>(p.v) + int64_t(head_kv) * p.v_head_stride * kBytes;
    k_row_bytes = p.k_row_stride * kBytes, v_row_bytes = p.v_row_stride * kBytes;
    k_entry_bytes = p.k_batch_stride * kBytes, v_entry_bytes = p.v_batch_stride * kBytes;
    kv_entry_dense = p.kv_batch_idx != nullptr ? max(0, min(p.kv_batch_idx[batch], p.kv_batch_count - 1)) : batch;
    block_row = p.block_table != nullptr ? p.block_table + batch * p.block_table_batch_stride : nullptr;
    pow2_pages = block_row != nullptr && (p.page_size & (p.page_size - 1)) == 0;
    page_shift = pow2_pages ? __ffs(p.page_size) - 1 : 0;
    my_row = threadIdx.x / kLanes, my_lane = threadIdx.x % kLanes;
    auto per_key = [&](const Fp8Scale& sc) {
      return Traits::kKvE4m3 && sc.scale != nullptr && (sc.block_stride != 0 || (block_row != nullptr && sc.batch_stride != 0));
    };
    k_per_key = per_key(p.k_scale), v_per_key = per_key(p.v_scale);
    CUTE_UNROLL
    for (int i = 0; i < kPasses; ++i) { pages[0][i] = pages[1][i] = 0; }
  }

  __device__ __forceinline__ char* stage_k(int stage) const { return smem + stage * Traits::kStageBytes; }
  __device__ __forceinline__ char* stage_v(int stage) const { return stage_k(stage) + Traits::kTileBytes; }
  __device__ __forceinline__ float* stage_scales(int stage) const {
    return reinterpret_cast<float*>(stage_k(stage) + 2 * Traits::kTileBytes);
  }
  // The cp.async groups are the whole wait (the TMA loader waits on a barrier here).
  __device__ __forceinline__ void wait(int /*tile*/, int /*it*/) const {}

  __device__ __forceinline__ int64_t scale_index(const Fp8Scale& s, int entry, int offset) const {
    return fp8_scale_index(s, entry, head_kv, offset);
  }

  // A scale that is the same for every key of the CTA (!k_per_key / !v_per_key): 1 when absent.
  __device__ __forceinline__ float uniform_scale(const Fp8Scale& s) const {
    return s.scale == nullptr ? 1.f : s.scale[scale_index(s, kv_entry_dense, 0)];
  }

  __device__ __forceinline__ void fetch_pages(int tile, int (&dst)[kPasses]) const {
    CUTE_UNROLL
    for (int i = 0; i < kPasses; ++i) {
      const int key = tile * Traits::kBlockN + my_row + i * kRowsPerPass;
      dst[i] = key < key_hi ? block_row[pow2_pages ? key >> page_shift : key / p.page_size] : 0;
    }
  }

  // Before the first load_tile: the pages of the first two tiles.
  __device__ __forceinline__ void start(int first_tile) {
    if (block_row == nullptr) { return; }
    if (first_tile < end_tile) { fetch_pages(first_tile, pages[0]); }
    if (first_tile + 1 < end_tile) { fetch_pages(first_tile + 1, pages[1]); }
  }

  // kSlot: (tile - first tile) % 2, or -1: use slot 0 and move slot 1 into it.
  template <int kSlot>
  __device__ __forceinline__ void load_tile(int tile, int stage) {
    const int n0 = tile * Traits::kBlockN;
    const bool paged = block_row != nullptr;
    CUTE_UNROLL
    for (int i = 0; i < kPasses; ++i) {
      const int row = my_row + i * kRowsPerPass;
      const int key = n0 + row;
      const bool in = key < key_hi;  // rows past the keys are zero-filled
      int entry = kv_entry_dense, offset = key;
      if (paged) {
        entry = max(0, min(pages[kSlot < 0 ? 0 : kSlot][i], p.num_pages - 1));
        offset = pow2_pages ? key & (p.page_size - 1) : key % p.page_size;
      }
      // A row past the keys points at the cache's first row (any valid address; zero-filled),
      // so every chunk of the thread's is an immediate offset from one address.
      const char* k_src = (in ? k_base + int64_t(entry) * k_entry_bytes + int64_t(offset) * k_row_bytes : k_base) +
                          my_lane * 16;
      const char* v_src = (in ? v_base + int64_t(entry) * v_entry_bytes + int64_t(offset) * v_row_bytes : v_base) +
                          my_lane * 16;
      static_for<0, kChunks / kLanes>([&](auto u) {
        const int dst = swizzled<kChunks>(row, my_lane + kLanes * u);
        cp_async_16<kLanes * 16 * u>(stage_k(stage) + dst, k_src, in);
        cp_async_16<kLanes * 16 * u>(stage_v(stage) + dst, v_src, in);
      });
      if constexpr (Traits::kKvE4m3) {
        // Per-key scales travel with the rows, asynchronously (a dependent load would stall the
        // stage's issue): the row's lane 0 copies its K scale, lane 1 its V scale.
        const Fp8Scale& sc = my_lane != 0 ? p.v_scale : p.k_scale;
        if (my_lane < 2 && (my_lane != 0 ? v_per_key : k_per_key)) {
          cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<uint32_t>::copy(
              *reinterpret_cast<const uint32_t*>(sc.scale + (in ? scale_index(sc, entry, offset) : 0)),
              *reinterpret_cast<uint32_t*>(stage_scales(stage) + Traits::scale_slot(row, my_lane != 0)), in);
        }
      }
    }
    if (paged) {
      if constexpr (kSlot < 0) {
        CUTE_UNROLL
        for (int i = 0; i < kPasses; ++i) { pages[0][i] = pages[1][i]; }
      }
      if (tile + 2 < end_tile) { fetch_pages(tile + 2, pages[kSlot < 0 ? 1 : kSlot]); }
    }
  }
};

// The pipeline's first kStages - 1 tiles (one commit group each, empty past the split's tiles).
// kMoveSlots: the loader's page slots move (kSlot = -1) instead of alternating.
template <int kStages, bool kMoveSlots, class Loader>
__device__ __forceinline__ void load_prologue(Loader& loader, int first_tile, int tiles) {
  loader.start(first_tile);
  static_for<0, kStages - 1>([&](auto s) {
    if (s < tiles) { loader.template load_tile<kMoveSlots ? -1 : s % 2>(first_tile + s, s); }
    cute::cp_async_fence();
  });
}

// The main loop, unrolled by two so that the loader's page slots are compile-time indices:
// step(it, parity) with parity = it % 2 as an integral constant.
template <class Step>
__device__ __forceinline__ void for_each_tile(int tiles, Step&& step) {
  for (int it = 0; it < tiles; it += 2) {
    step(it, std::integral_constant<int, 0>{});
    if (it + 1 < tiles) { step(it + 1, std::integral_constant<int, 1>{}); }
  }
}

// At the top of step `it`: wait for its tile, then refill the stage freed by step it - 1.
// kParity: it % 2 in a loop unrolled by two, or -1 (the page slots move).
template <int kStages, int kParity, class Loader>
__device__ __forceinline__ void advance_pipeline(Loader& loader, int first_tile, int tiles, int it) {
  cute::cp_async_wait<kStages - 2>();
  loader.wait(first_tile + it, it);
  __syncthreads();
  const int next = it + kStages - 1;
  constexpr int kSlot = kParity < 0 ? -1 : (kParity + kStages - 1) % 2;
  if (next < tiles) { loader.template load_tile<kSlot>(first_tile + next, next % kStages); }
  cute::cp_async_fence();
}

// Shared-memory buffers of the final merge (they reuse the pipeline's memory): partial outputs
// (warp, kTileRows, D), and per (warp, row) the running max, the sum and the merge factor.
template <int kWarps, int kTileRows, int D>
struct MergeBuffers {
  float* o;
  float* m;
  float* l;
  float* f;
  __device__ __forceinline__ explicit MergeBuffers(char* smem) {
    o = reinterpret_cast<float*>(smem);
    m = o + kWarps * kTileRows * D;
    l = m + kWarps * kTileRows;
    f = l + kWarps * kTileRows;
  }
};

// Every thread of the cluster: the shared-memory writes before it are visible to every CTA of
// the cluster after it (release / acquire; the clobber keeps the compiler's stores before it).
__device__ __forceinline__ void cluster_barrier() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

// The splits of one (KV head, row block, batch entry) as one thread-block cluster (sm90, the
// kernels' kCluster instantiations, which the host launches so): after each CTA has left its
// merged partial in its own shared memory (rows x D floats, then one LSE per row), CTA `rank`
// combines a 1 / num_splits share of the (row, 4 channels) pieces, reading every split's partial
// through distributed shared memory with all the splits' loads in flight together, and writes
// the output and the LSE (the sinks added here, as the combine kernel does). No partial reaches
// global memory and no second kernel runs; the cluster waits for its slowest split, as the
// combine kernel waited for the whole grid.
template <class Element, int D, int kRows, int kThreads>
__device__ __forceinline__ void combine_in_cluster(const FwdParams& p, float* part_o, int batch, int head_kv,
                                                   int seqlen_k, int row_first) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  static_assert(D % 4 == 0, "pieces of 4 channels");
  constexpr int kS = kMaxClusterSplits;
  cluster_barrier();  // every split's partial is in its shared memory
  const int splits = p.num_splits;  // the cluster's size (the host launches it so)
  int rank;
  asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  const uint32_t o_local = static_cast<uint32_t>(__cvta_generic_to_shared(part_o));
  uint32_t at[kS];  // shared::cluster address of each split's partial (its LSEs follow, kRows * D floats on)
  CUTE_UNROLL
  for (int s = 0; s < kS; ++s) {
    asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(at[s]) : "r"(o_local), "r"(s < splits ? s : 0));
  }
  constexpr int kPieces = kRows * D / 4;
  const int per_cta = (kPieces + splits - 1) / splits;
  const int end = min(kPieces, (rank + 1) * per_cta);
  for (int v = rank * per_cta + int(threadIdx.x); v < end; v += kThreads) {
    const int row = v / (D / 4), col = (v % (D / 4)) * 4;
    const RowInfo info = row_info(p, batch, head_kv, seqlen_k, row_first + row);
    if (!info.valid) { continue; }
    float lse[kS];
    float4 x[kS];
    CUTE_UNROLL
    for (int s = 0; s < kS; ++s) {
      lse[s] = -INFINITY;
      x[s] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (s < splits) {
        asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(lse[s]) : "r"(at[s] + 4u * (kRows * D + row)));
        asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
                     : "=f"(x[s].x), "=f"(x[s].y), "=f"(x[s].z), "=f"(x[s].w)
                     : "r"(at[s] + 4u * (row * D + col)));
      }
    }
    float max_lse = -INFINITY;
    CUTE_UNROLL
    for (int s = 0; s < kS; ++s) { max_lse = fmaxf(max_lse, lse[s]); }
    const float sink = p.sinks == nullptr ? -INFINITY : p.sinks[info.head];
    const float ref = fmaxf(max_lse, sink);
    float sum = 0.f;
    if (ref != -INFINITY) {
      CUTE_UNROLL
      for (int s = 0; s < kS; ++s) { sum += __expf(lse[s] - ref); }
      if (sink != -INFINITY) { sum += __expf(sink - ref); }
    }
    const bool empty = !(sum > 0.f);
    const float out_lse = empty ? INFINITY : ref + __logf(sum);
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    CUTE_UNROLL
    for (int s = 0; s < kS; ++s) {
      const float w = empty ? 0.f : __expf(lse[s] - out_lse);
      if (w > 0.f) {  // a split without keys left -inf and whatever its rows hold: never multiplied
        acc.x += w * x[s].x;
        acc.y += w * x[s].y;
        acc.z += w * x[s].z;
        acc.w += w * x[s].w;
      }
    }
    uint2 packed;
    packed.x = pack2(acc.x, acc.y, static_cast<Element*>(nullptr));
    packed.y = pack2(acc.z, acc.w, static_cast<Element*>(nullptr));
    Element* out = static_cast<Element*>(p.out) + int64_t(batch) * p.out_batch_stride +
                   int64_t(info.query) * p.out_row_stride + int64_t(info.head) * p.out_head_stride + col;
    *reinterpret_cast<uint2*>(out) = packed;
    if (col == 0 && p.lse != nullptr) {
      p.lse[int64_t(batch) * p.lse_batch_stride + int64_t(info.head) * p.lse_head_stride + info.query] = out_lse;
    }
  }
  cluster_barrier();  // each CTA's shared memory outlives its peers' reads of it
#endif
}

// After every warp has staged its (max, sum, output) per row in `buf` (warp w = key slice s of
// row tile rt is w = s * kRowTiles + rt): one thread per CTA row combines the slices (and the
// sinks when the call is not split), then every thread writes 8 consecutive channels of one row
// at a time, to the output, to this split's partials, or (kCluster) to this CTA's partial after
// the merge buffers, which combine_in_cluster then combines with the other splits'.
template <class Element, int D, int kTileRows, int kRowTiles, int kSlices, int kThreads, bool kCluster>
__device__ __forceinline__ void merge_slices_and_store(const FwdParams& p,
                                                       const MergeBuffers<kSlices * kRowTiles, kTileRows, D>& buf,
                                                       int batch, int head_kv, int seqlen_k, int row_first,
                                                       int split) {
  constexpr int kRows = kTileRows * kRowTiles;
  const int tid = threadIdx.x;
  __syncthreads();
  const bool split_out = p.num_splits > 1;
  float* const part_o = buf.o + merge_bytes(kSlices * kRowTiles, kTileRows, D) / 4;
  float* const part_lse = part_o + kRows * D;
  const int64_t split_stride = int64_t(p.num_heads_q) * p.total_q;
  if (tid < kRows) {
    const int rt = tid / kTileRows, r = tid % kTileRows;
    const RowInfo info = row_info(p, batch, head_kv, seqlen_k, row_first + tid);
    float m = -INFINITY;
    for (int sl = 0; sl < kSlices; ++sl) { m = fmaxf(m, buf.m[(sl * kRowTiles + rt) * kTileRows + r]); }
    const float sink = (!split_out && p.sinks != nullptr) ? p.sinks[info.head] * float(M_LOG2E) : -INFINITY;
    const float ref = fmaxf(m, sink);
    float l = 0.f;
    if (ref != -INFINITY) {
      for (int sl = 0; sl < kSlices; ++sl) {
        const int w = sl * kRowTiles + rt;
        l += buf.l[w * kTileRows + r] * exp2f(buf.m[w * kTileRows + r] - ref);
      }
      if (sink != -INFINITY) { l += exp2f(sink - ref); }
    }
    const bool empty = !(l > 0.f);
    const float inv_l = empty ? 0.f : 1.f / l;
    for (int sl = 0; sl < kSlices; ++sl) {
      const int w = sl * kRowTiles + rt;
      buf.f[w * kTileRows + r] = empty ? 0.f : exp2f(buf.m[w * kTileRows + r] - ref) * inv_l;
    }
    if (info.valid) {
      const float lse = empty ? (split_out ? -INFINITY : INFINITY) : (ref + __log2f(l)) * float(M_LN2);
      const int64_t q_row = int64_t(batch) * p.seqlen_q + info.query;
      if constexpr (kCluster) {
        part_lse[tid] = lse;
      } else if (split_out) {
        p.lse_accum[split * split_stride + int64_t(info.head) * p.total_q + q_row] = lse;
      } else if (p.lse != nullptr) {
        p.lse[int64_t(batch) * p.lse_batch_stride + int64_t(info.head) * p.lse_head_stride + info.query] = lse;
      }
    }
  }
  __syncthreads();

  constexpr int kVecs = kRows * D / 8;
  for (int v = tid; v < kVecs; v += kThreads) {
    const int row = v / (D / 8), col = (v % (D / 8)) * 8;
    const int rt = row / kTileRows, r = row % kTileRows;
    const RowInfo info = row_info(p, batch, head_kv, seqlen_k, row_first + row);
    if (!info.valid) { continue; }
    float o[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int sl = 0; sl < kSlices; ++sl) {
      const int w = sl * kRowTiles + rt;
      const float f = buf.f[w * kTileRows + r];
      const float4* src = reinterpret_cast<const float4*>(buf.o + (w * kTileRows + r) * D + col);
      const float4 x0 = src[0], x1 = src[1];
      o[0] += f * x0.x; o[1] += f * x0.y; o[2] += f * x0.z; o[3] += f * x0.w;
      o[4] += f * x1.x; o[5] += f * x1.y; o[6] += f * x1.z; o[7] += f * x1.w;
    }
    if constexpr (kCluster) {
      float4* dst = reinterpret_cast<float4*>(part_o + row * D + col);
      dst[0] = make_float4(o[0], o[1], o[2], o[3]);
      dst[1] = make_float4(o[4], o[5], o[6], o[7]);
    } else if (split_out) {
      const int64_t q_row = int64_t(batch) * p.seqlen_q + info.query;
      float4* dst = reinterpret_cast<float4*>(
          p.out_accum + ((split * split_stride + int64_t(info.head) * p.total_q + q_row) * D + col));
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
  if constexpr (kCluster) {
    combine_in_cluster<Element, D, kRows, kThreads>(p, part_o, batch, head_kv, seqlen_k, row_first);
  }
}

// After the main loop: the split-KV combine (a programmatic dependent launch) may be scheduled
// now; it waits for this grid's completion before reading the partials.
__device__ __forceinline__ void release_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

}  // namespace flashgen::sm80::decode
