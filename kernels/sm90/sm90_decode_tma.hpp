// TMA loads for the decode kernels (sm80/sm80_decode_fp8_kernel.hpp, sm80/sm80_decode_kernel.hpp)
// on Hopper.
//
// The FP8 kernel is bound by its instruction issue, not by its loads, and its cp.async loader cost
// every thread a block-table read, a row address and eight 16-byte copies per stage. Here warp 0
// alone loads a stage: one TMA box per page of the stage's keys (per stage for a dense cache)
// and 128-byte column block of the rows, K and V, completed on one mbarrier per stage, and the
// other warps only wait. The 16-bit kernel can take it too (FLASHGEN_DECODE_TMA_16BIT).
// - The tensor maps see a cache as (row bytes, KV heads, rows, entries): entries are pages (rows:
//   the page size) or the dense cache's batch entries (rows: its capacity). Rows of 64 or 128
//   bytes with the 64- or 128-byte swizzle are exactly the layout of the kernels' own swizzle
//   (`swizzled<kChunks>`), so the fragment reads do not change; longer rows (16-bit head dim
//   128: 256 bytes) land as one 128-byte-wide box per column block, each holding the stage's
//   rows, which the kernel reads through `tma_swizzled`.
// - Pages: powers of two of at least 16 keys (a 16-key warp slice then lies in one page, and so
//   shares one per-page scale); other page sizes, head dim 256 and pre-Hopper GPUs keep the
//   cp.async loader.
// - TMA zero-fills only what lies outside the tensor; the rows of a stage past the sequence's
//   keys are real cache bytes (an e4m3 NaN there would survive P = 0): the kernel masks their
//   scores, and the waiting threads zero those V rows of the sequence's last stage.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cute/arch/copy_sm80.hpp>

#include "common/fwd_params.h"
#include "sm80/sm80_decode_common.hpp"

namespace flashgen::sm90::decode_tma {

// Kernel parameter next to FwdParams (the tensor maps must live in parameter, constant or global
// memory; a __grid_constant__ parameter is what CUTLASS uses too).
struct DecodeTmaMaps {
  CUtensorMap k;
  CUtensorMap v;
  int box_rows;   // rows per box: min(page size, keys per stage), or keys per stage (dense)
  int box_shift;  // log2(box_rows)
  int boxes;      // boxes per stage and tensor
};

// ---- device side: PTX of sm_90 (TMA, mbarrier transactions) ----

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FLASHGEN_DECODE_TMA_DEVICE 1
#endif

__device__ __forceinline__ uint32_t smem_u32(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

__device__ __forceinline__ void barrier_init(uint64_t* bar, int count) {
#ifdef FLASHGEN_DECODE_TMA_DEVICE
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count));
#endif
}

// Makes the initialised barriers visible to the async proxy (TMA) and the other threads.
__device__ __forceinline__ void barrier_init_fence() {
#ifdef FLASHGEN_DECODE_TMA_DEVICE
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

__device__ __forceinline__ void barrier_arrive_expect(uint64_t* bar, uint32_t bytes) {
#ifdef FLASHGEN_DECODE_TMA_DEVICE
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ void barrier_wait(uint64_t* bar, int parity) {
#ifdef FLASHGEN_DECODE_TMA_DEVICE
  asm volatile(
      "{\n .reg .pred done;\n"
      "WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      " @!done bra WAIT_%=;\n}" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
#else
  __trap();  // the host never launches the TMA kernel on a build without it
#endif
}

// One box of `map` at (col, head, row, entry) into shared memory, completing on `bar`.
__device__ __forceinline__ void load_box(const CUtensorMap* map, uint64_t* bar, void* dst, int col, int head,
                                         int row, int entry) {
#ifdef FLASHGEN_DECODE_TMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(col), "r"(head), "r"(row), "r"(entry)
      : "memory");
#endif
}

// Stage loads of a decode kernel through TMA. Same interface as sm80::decode::StageLoader
// (load_tile<kSlot>(tile, stage), stage_k / stage_v / stage_scales); an FP8 stage's per-key scales
// are one (K, V) pair per 16-key warp slice, at stage_scales(stage)[2 * slice + is_v]. The few lines
// both loaders hold alike (stage addresses, the CTA's cache entry and scale kinds) stay written
// in each: a common base class moved ptxas to 128 registers and a spill in the measured loop.
template <class Traits>
struct TmaStageLoader {
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kSlices = kBlockN / 16;
  // Rows longer than 128 bytes: one box per 128-byte column block (sm80::decode::tma_swizzled).
  static constexpr int kBoxBytes = Traits::kRowBytes < 128 ? Traits::kRowBytes : 128;
  static constexpr int kColBoxes = Traits::kRowBytes / kBoxBytes;
  static_assert(kColBoxes * kBoxBytes == Traits::kRowBytes, "rows of whole 128-byte column blocks");
  static_assert(kSlices <= 16, "lanes 0..15 of warp 0 copy the slices' scales");

  const FwdParams& p;
  const DecodeTmaMaps& maps;
  char* smem;
  uint64_t* full;  // one barrier per stage, after the pipeline
  const int* block_row;
  int head_kv, key_hi, end_tile, entry_dense, page_mask, page_shift;
  bool k_per_key, v_per_key;
  int lane;
  bool loader_warp;
  // Warp 0, lane l < boxes: the page of box l of the next two tiles (slot = (tile - first) % 2).
  int pages[2];

  // keys: the CTA's work (sm80::decode::CtaWork).
  template <class Keys>
  __device__ __forceinline__ TmaStageLoader(const FwdParams& params, const DecodeTmaMaps& maps_, char* smem_,
                                            const Keys& keys)
      : p(params), maps(maps_), smem(smem_), head_kv(keys.head_kv), key_hi(keys.key_hi),
        end_tile(keys.my_first + keys.my_tiles) {
    const int batch = keys.batch;
    full = reinterpret_cast<uint64_t*>(smem + Traits::kStages * Traits::kStageBytes);
    entry_dense = p.kv_batch_idx != nullptr ? max(0, min(p.kv_batch_idx[batch], p.kv_batch_count - 1)) : batch;
    block_row = p.block_table != nullptr ? p.block_table + batch * p.block_table_batch_stride : nullptr;
    page_mask = block_row != nullptr ? p.page_size - 1 : 0;
    page_shift = block_row != nullptr ? __ffs(p.page_size) - 1 : 0;
    auto per_key = [&](const Fp8Scale& sc) {
      return sc.scale != nullptr && (sc.block_stride != 0 || (block_row != nullptr && sc.batch_stride != 0));
    };
    k_per_key = per_key(p.k_scale), v_per_key = per_key(p.v_scale);
    lane = threadIdx.x % 32;
    loader_warp = threadIdx.x < 32;
    pages[0] = pages[1] = 0;
    // (The TMA unit swizzles by shared-memory address bits, so the stages must start on 1024
    // bytes, as dynamic shared memory does in a kernel without static shared memory, this one; a
    // device check here changed ptxas's schedule of the measured loop, so the test against the
    // cp.async loader, bitwise, is what guards it.)
    if (threadIdx.x < Traits::kStages) { barrier_init(&full[threadIdx.x], 1); }
    barrier_init_fence();
    __syncthreads();
  }

  __device__ __forceinline__ char* stage_k(int stage) const { return smem + stage * Traits::kStageBytes; }
  __device__ __forceinline__ char* stage_v(int stage) const { return stage_k(stage) + Traits::kTileBytes; }
  __device__ __forceinline__ float* stage_scales(int stage) const {
    return reinterpret_cast<float*>(stage_k(stage) + 2 * Traits::kTileBytes);
  }

  __device__ __forceinline__ int64_t scale_index(const Fp8Scale& s, int entry, int offset) const {
    return sm80::decode::fp8_scale_index(s, entry, head_kv, offset);
  }
  // A scale that is the same for every key of the CTA (!k_per_key / !v_per_key): 1 when absent.
  __device__ __forceinline__ float uniform_scale(const Fp8Scale& s) const {
    return s.scale == nullptr ? 1.f : s.scale[scale_index(s, entry_dense, 0)];
  }

  // Warp 0: the page of this lane's box of `tile` (rows past the keys read page 0: masked).
  __device__ __forceinline__ int fetch_page(int tile) const {
    const int key = tile * kBlockN + lane * maps.box_rows;
    return lane < maps.boxes && key < key_hi ? block_row[key >> page_shift] : 0;
  }

  __device__ __forceinline__ void start(int first_tile) {
    if (!loader_warp || block_row == nullptr) { return; }
    if (first_tile < end_tile) { pages[0] = fetch_page(first_tile); }
    if (first_tile + 1 < end_tile) { pages[1] = fetch_page(first_tile + 1); }
  }

  // kSlot: (tile - first tile) % 2, or -1: use slot 0 and move slot 1 into it (the 16-bit
  // kernel's loop is not unrolled by two).
  template <int kSlot>
  __device__ __forceinline__ void load_tile(int tile, int stage) {
    constexpr int kUse = kSlot < 0 ? 0 : kSlot;
    if (!loader_warp) { return; }
    const int n0 = tile * kBlockN;
    const bool paged = block_row != nullptr;
    if (lane == 0) { barrier_arrive_expect(&full[stage], 2 * Traits::kTileBytes); }
    const int page = paged ? max(0, min(pages[kUse], p.num_pages - 1)) : entry_dense;
    if (lane < maps.boxes) {
      const int row = paged ? (n0 + lane * maps.box_rows) & page_mask : n0;
      const int dst = lane * maps.box_rows * kBoxBytes;
      CUTE_UNROLL
      for (int cb = 0; cb < kColBoxes; ++cb) {
        const int at = dst + cb * kBlockN * kBoxBytes;
        load_box(&maps.k, &full[stage], stage_k(stage) + at, cb * kBoxBytes, head_kv, row, page);
        load_box(&maps.v, &full[stage], stage_v(stage) + at, cb * kBoxBytes, head_kv, row, page);
      }
    }
    if constexpr (Traits::kKvE4m3) {
      load_scales(n0, stage, paged, page);
    }
    if constexpr (kSlot < 0) {
      if (paged) { pages[0] = pages[1]; }
    }
    if (paged && tile + 2 < end_tile) { pages[kSlot < 0 ? 1 : kSlot] = fetch_page(tile + 2); }
  }

  // FP8: the stage's per-slice K and V scales, where they differ between the CTA's keys.
  __device__ __forceinline__ void load_scales(int n0, int stage, bool paged, int page) {
    if (k_per_key || v_per_key) {
      // Lane s (< kSlices) copies slice s's K scale, lane kSlices + s its V scale.
      const int slice = lane % kSlices;
      const bool is_v = lane >= kSlices;
      const int key = n0 + 16 * slice;
      const int slice_page = paged ? __shfl_sync(0xffffffffu, page, (16 * slice) >> maps.box_shift) : entry_dense;
      const Fp8Scale& sc = is_v ? p.v_scale : p.k_scale;
      if (lane < 2 * kSlices && (is_v ? v_per_key : k_per_key)) {
        const bool in = key < key_hi;
        const int offset = paged ? key & page_mask : key;
        cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<uint32_t>::copy(
            *reinterpret_cast<const uint32_t*>(sc.scale + (in ? scale_index(sc, slice_page, offset) : 0)),
            *reinterpret_cast<uint32_t*>(stage_scales(stage) + 2 * slice + is_v), in);
      }
    }
  }

  // Step it (tile `tile`) may read its stage. A stage that ends past the keys (only the last)
  // gets zeros in those V rows: the __syncthreads after this orders them before the reads.
  __device__ __forceinline__ void wait(int tile, int it) {
    const int stage = it % Traits::kStages;
    barrier_wait(&full[stage], (it / Traits::kStages) & 1);
    const int valid = key_hi - tile * kBlockN;
    if (valid < kBlockN) {
      constexpr int kVecs = kBoxBytes / 16;  // per row and column block
      for (int i = max(valid, 0) * kVecs + int(threadIdx.x); i < kBlockN * kVecs; i += Traits::kThreads) {
        CUTE_UNROLL
        for (int cb = 0; cb < kColBoxes; ++cb) {
          reinterpret_cast<uint4*>(stage_v(stage))[cb * kBlockN * kVecs + i] = make_uint4(0u, 0u, 0u, 0u);
        }
      }
    }
  }
};

// ---- host side ----

#if !defined(__CUDACC_RTC__)
// Why a call cannot take the TMA loader (nullptr: it can), for FLASHGEN_DECODE_TMA=on's error.
// row_bytes: one key's K (or V) row; elem_bytes: the cache's element size.
inline const char* unusable_reason(const FwdParams& p, int row_bytes, int elem_bytes) {
  if (row_bytes != 64 && row_bytes != 128 && row_bytes != 256) {
    return "head dims 64 and 128 only";
  }
  if (p.block_table != nullptr &&
      (!sm80::decode::tma_page_size_ok(p.page_size) || p.num_pages < 1)) {
    return "page sizes that are powers of two >= 16 only";
  }
  auto per_key_ok = [&](const Fp8Scale& s) {
    return s.scale == nullptr || s.block_stride == 0 || s.block_rows % 16 == 0;
  };
  if (!per_key_ok(p.k_scale) || !per_key_ok(p.v_scale)) { return "scale blocks of a multiple of 16 keys only"; }
  auto stride_ok = [&](int64_t s) {
    return s > 0 && s * elem_bytes % 16 == 0 && s * elem_bytes < (int64_t(1) << 40);
  };
  const bool dense = p.block_table == nullptr;
  if (dense && p.seqlen_k < 1) { return "an empty cache"; }
  for (const auto* t : {&p.k, &p.v}) {
    if (reinterpret_cast<uintptr_t>(*t) % 16 != 0) { return "16-byte aligned caches only"; }
  }
  const int64_t strides[] = {p.k_head_stride, p.k_row_stride, p.k_batch_stride,
                             p.v_head_stride, p.v_row_stride, p.v_batch_stride};
  for (int64_t s : strides) {
    if (!stride_ok(s)) { return "cache strides that are positive multiples of 16 bytes only"; }
  }
  return nullptr;
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (no link against libcuda).
using EncodeTiled = decltype(&::cuTensorMapEncodeTiled);
inline EncodeTiled encode_tiled_fn() {
  static const EncodeTiled fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      ptr = nullptr;
    }
    return reinterpret_cast<EncodeTiled>(ptr);
  }();
  return fn;
}

// Encodes the call's K and V maps (rows of row_bytes; strides in elements of elem_bytes); false
// when the driver refuses (the caller falls back).
inline bool encode(const FwdParams& p, int row_bytes, int elem_bytes, int block_n, DecodeTmaMaps* maps) {
  const EncodeTiled fn = encode_tiled_fn();
  if (fn == nullptr) { return false; }
  const bool paged = p.block_table != nullptr;
  maps->box_rows = paged ? (p.page_size < block_n ? p.page_size : block_n) : block_n;
  maps->box_shift = 0;
  while ((1 << maps->box_shift) < maps->box_rows) { ++maps->box_shift; }
  maps->boxes = block_n / maps->box_rows;
  const int rows = paged ? p.page_size : p.seqlen_k;
  const int entries = paged ? p.num_pages : (p.kv_batch_idx != nullptr ? p.kv_batch_count : p.batch);
  const CUtensorMapSwizzle swizzle = row_bytes >= 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B;
  const int box_bytes = row_bytes < 128 ? row_bytes : 128;
  auto one = [&](CUtensorMap* map, const void* base, int64_t head_stride, int64_t row_stride, int64_t batch_stride) {
    const cuuint64_t dims[4] = {cuuint64_t(row_bytes), cuuint64_t(p.num_heads_kv), cuuint64_t(rows),
                                cuuint64_t(entries < 1 ? 1 : entries)};
    const cuuint64_t strides[3] = {cuuint64_t(head_stride * elem_bytes), cuuint64_t(row_stride * elem_bytes),
                                   cuuint64_t(batch_stride * elem_bytes)};
    const cuuint32_t box[4] = {cuuint32_t(box_bytes), 1u, cuuint32_t(maps->box_rows), 1u};
    const cuuint32_t unit[4] = {1u, 1u, 1u, 1u};
    return fn(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, const_cast<void*>(base), dims, strides, box, unit,
              CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
  };
  return one(&maps->k, p.k, p.k_head_stride, p.k_row_stride, p.k_batch_stride) &&
         one(&maps->v, p.v, p.v_head_stride, p.v_row_stride, p.v_batch_stride);
}
#endif

}  // namespace flashgen::sm90::decode_tma
