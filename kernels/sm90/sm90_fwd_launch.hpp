// Host-side launch of the Hopper forward kernel: builds the TMA descriptors from the call's
// pointers, extents and strides, then launches one CTA per (query block, head, batch entry).
// A generated translation unit includes this header and instantiates run_fwd for one spec.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <cuda_runtime_api.h>

#include "api/launch_status.h"
#include "common/fwd_combine.h"
#include "common/fwd_params.h"
#include "sm90/sm90_fwd_kernel.hpp"
#include "sm90/sm90_tma_views.hpp"

namespace flashgen::sm90 {

// FLASHGEN_SM90_FWD_GRID=persistent|per_tile overrides the grid's shape (a tuning knob for the
// benchmarks; read once). 0: auto, 1: persistent, 2: one CTA per tile.
inline int fwd_grid_override() {
  static const int mode = [] {
    const char* v = std::getenv("FLASHGEN_SM90_FWD_GRID");
    if (v == nullptr) { return 0; }
    return std::strcmp(v, "persistent") == 0 ? 1 : std::strcmp(v, "per_tile") == 0 ? 2 : 0;
  }();
  return mode;
}

template <class Traits, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi, bool kHasDropout, bool kIsPaged,
          bool kPackGqa = false>
flashgen_status_t launch_fwd(const FwdParams& params, cudaStream_t stream) {
  using Element = typename Traits::Element;
  constexpr int kHeadDimQK = Traits::kHeadDimQK;
  constexpr int kHeadDimV = Traits::kHeadDimV;
  auto* kernel = &fwd_kernel<Traits, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, kIsPaged, kPackGqa>;
  if ((kPackGqa && params.group_size < 2) || params.num_splits < 1 ||
      (params.num_splits > 1 && params.out_accum == nullptr) || (params.block_table != nullptr) != kIsPaged ||
      (kIsPaged && (params.page_size % Traits::kBlockN != 0 || params.num_pages <= 0))) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "internal: the sm90 forward kernel got a plan it does not run (packed rows without GQA, splits "
                     "without workspace, or pages that are not a multiple of its %d-key blocks)",
                     Traits::kBlockN);
  }
  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(kernel), Traits::kSmemBytes);
  if (status != FLASHGEN_STATUS_OK) { return status; }

  FwdKernelParams<Traits> kp;
  kp.fwd = params;
  const bool varlen = params.cu_seqlens_q != nullptr;
  // TMA extents: a varlen call addresses its packed rows as one batch entry. Extents are at
  // least 1 and a missing K/V (no keys at all) borrows Q's address: such a call loads nothing.
  kp.q_rows = std::max(1, varlen ? params.total_q : params.seqlen_q);
  kp.q_batches = varlen ? 1 : std::max(1, params.batch);
  // Paged: K and V as (page_size rows, ..., num_pages), pages in place of batch entries.
  kp.k_rows = kIsPaged ? params.page_size : std::max(1, params.seqlen_k);
  kp.k_batches = kIsPaged ? params.num_pages
                 : varlen ? 1
                          : std::max(1, params.kv_batch_idx != nullptr ? params.kv_batch_count : params.batch);
  auto kv_batch_stride = [&](int64_t stride, int64_t row_stride) {
    return kIsPaged ? stride : tma_batch_stride(varlen, stride, row_stride, kp.k_rows);
  };
  auto const* q = static_cast<Element const*>(params.q);
  auto const* k = static_cast<Element const*>(params.k != nullptr ? params.k : params.q);
  auto const* v = static_cast<Element const*>(params.v != nullptr ? params.v : params.q);
  Tensor mQ = tma_rows_view(q, kp.q_rows, kHeadDimQK, params.num_heads_q, kp.q_batches, params.q_row_stride,
                            params.q_head_stride,
                            tma_batch_stride(varlen, params.q_batch_stride, params.q_row_stride, kp.q_rows));
  Tensor mK = tma_rows_view(k, kp.k_rows, kHeadDimQK, params.num_heads_kv, kp.k_batches, params.k_row_stride,
                            params.k_head_stride, kv_batch_stride(params.k_batch_stride, params.k_row_stride));
  // V as (head_dim_v, keys, heads, batches): a strided view of (keys, heads, head_dim_v) for
  // 16 bits; for FP8 the PV layout itself, keys contiguous and v_row_stride between channels.
  auto make_vt = [&]() {
    if constexpr (Traits::kIsFp8) {
      kp.v_cols = std::max(1, params.v_cols);
      const int64_t whole = params.v_head_stride * std::max(1, params.num_heads_kv);
      return make_tensor(make_gmem_ptr(v), make_shape(kHeadDimV, kp.v_cols, params.num_heads_kv, kp.k_batches),
                         make_stride(params.v_row_stride, _1{}, params.v_head_stride,
                                     kIsPaged || !(varlen || params.v_batch_stride == 0) ? params.v_batch_stride
                                                                                       : whole));
    } else {
      kp.v_cols = kp.k_rows;
      return make_tensor(make_gmem_ptr(v), make_shape(kHeadDimV, kp.k_rows, params.num_heads_kv, kp.k_batches),
                         make_stride(_1{}, params.v_row_stride, params.v_head_stride,
                                     kv_batch_stride(params.v_batch_stride, params.v_row_stride)));
    }
  };
  Tensor mVt = make_vt();
  kp.tma_q = make_tma_copy(SM90_TMA_LOAD{}, mQ, typename Traits::SmemLayoutQ{},
                           Shape<Int<Traits::kBlockM>, Int<kHeadDimQK>>{}, _1{});
  kp.tma_k = make_tma_copy(SM90_TMA_LOAD{}, mK, typename Traits::SmemLayoutKStage{},
                           Shape<Int<Traits::kBlockN>, Int<kHeadDimQK>>{}, _1{});
  kp.tma_v = make_tma_copy(SM90_TMA_LOAD{}, mVt, typename Traits::SmemLayoutVtStage{},
                           Shape<Int<kHeadDimV>, Int<Traits::kBlockN>>{}, _1{});

  // The output by TMA stores: fixed-length rows (the descriptor's row extent then clips each
  // entry's tail), one split, and the 16-byte alignment TMA needs; other calls store by thread.
  kp.tma_out = false;
  if constexpr (Traits::kTmaStoreO && !kPackGqa) {
    using ElementO = typename Traits::ElementO;
    constexpr int64_t kBytes = int64_t(sizeof(ElementO));
    auto* out = static_cast<ElementO*>(params.out);
    const int64_t out_batch_stride = tma_batch_stride(params.batch <= 1, params.out_batch_stride,
                                                      params.out_row_stride, std::max(1, params.seqlen_q));
    const bool aligned = reinterpret_cast<uintptr_t>(out) % 16 == 0 && (params.out_row_stride * kBytes) % 16 == 0 &&
                         (params.out_head_stride * kBytes) % 16 == 0 && (out_batch_stride * kBytes) % 16 == 0;
    if (out != nullptr && !varlen && params.num_splits == 1 && aligned) {
      kp.tma_out = true;
      kp.o_rows = std::max(1, params.seqlen_q);
      kp.o_batches = std::max(1, params.batch);
      Tensor mO = make_tensor(make_gmem_ptr(out), make_shape(kp.o_rows, int(kHeadDimV), params.num_heads_q, kp.o_batches),
                              make_stride(params.out_row_stride, _1{}, params.out_head_stride, out_batch_stride));
      kp.tma_o = make_tma_copy(SM90_TMA_STORE{}, mO, typename Traits::SmemLayoutORows{},
                               Shape<_64, Int<kHeadDimV>>{}, _1{});
    }
  }

  // Packed: a tile's rows are (query token, head of the group) pairs of one KV head.
  const int group = kPackGqa ? params.group_size : 1;
  const int tile_heads = kPackGqa ? params.num_heads_kv : params.num_heads_q;
  const int m_blocks = int((int64_t(params.seqlen_q) * group + Traits::kBlockM - 1) / Traits::kBlockM);
  const int64_t num_tiles = int64_t(m_blocks) * tile_heads * params.batch * params.num_splits;
  if (num_tiles > INT32_MAX) { return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "too many query tiles for one call"); }
  // Causal-like masks (keys bounded on the right only) give each query block its own length:
  // those tiles go longest first over L2-sized sections of heads (+3-10% causal, H100); tiles
  // of one length keep the unit-major order, whose fewer heads in flight share L2 better (the
  // sections cost non-causal 2-5%). A section holds K and V of `section` units (the heads of a
  // GQA group share them; a split reads its share).
  const bool lengths_vary = tile_lengths_vary(kIsCausal, params.window_left, params.window_right);
  const int64_t unit_bytes = int64_t(params.seqlen_k) * (kHeadDimQK + kHeadDimV) * int64_t(sizeof(Element)) /
                             (int64_t(kPackGqa ? 1 : std::max(1, params.group_size)) * params.num_splits);
  const int units = int(num_tiles / std::max(1, m_blocks));
  kp.order = FwdTileOrder{int(num_tiles), m_blocks, tile_heads, params.num_splits,
                          lengths_vary ? section_units(unit_bytes, units) : 1};
  // Persistent (one CTA per SM, tiles from the atomic counter in the workspace) so that a tile's
  // prologue and epilogue overlap the next one's loads: +3-6% at hdim 128 non-causal, +1-6%
  // causal, even at hdim 256 (H100, bench/NOTES.md). Without a workspace the hardware's
  // greedy block scheduler beats a static round-robin: one CTA per tile.
  const int grid_mode = fwd_grid_override();
  const bool persistent = grid_mode == 0 ? params.tile_counter != nullptr : grid_mode == 1;
  const dim3 grid(unsigned(persistent ? std::min<int64_t>(num_tiles, std::max(1, params.num_sms)) : num_tiles));
  kp.fwd.tile_counter = persistent ? params.tile_counter : nullptr;
  if (kp.fwd.tile_counter != nullptr && cudaMemsetAsync(kp.fwd.tile_counter, 0, sizeof(int), stream) != cudaSuccess) {
    return check_launch("sm90 forward tile counter reset");
  }
#ifdef FLASHGEN_FWD_TRACE
  const char* trace_env = std::getenv("FLASHGEN_FWD_TRACE");
  kp.trace = trace_env != nullptr ? reinterpret_cast<unsigned long long*>(std::strtoull(trace_env, nullptr, 10)) : nullptr;
  const char* flags_env = std::getenv("FLASHGEN_FWD_TRACE_FLAGS");
  kp.trace_flags = flags_env != nullptr ? std::atoi(flags_env) : 0;
  if (kp.trace_flags & kTraceThreadStores) { kp.tma_out = false; }
#endif
  kernel<<<grid, Traits::kNumThreads, Traits::kSmemBytes, stream>>>(kp);
  status = check_launch("sm90 forward kernel");
  if (status != FLASHGEN_STATUS_OK || params.num_splits == 1) { return status; }
  // The combine kernel writes out in the output's type (FP8 kernels write 16 bits).
  const bool out_fp16 = Traits::kIsFp8 ? params.out_fp16 : std::is_same_v<Element, cutlass::half_t>;
  return run_fwd_combine(params, out_fp16 ? FLASHGEN_DTYPE_FP16 : FLASHGEN_DTYPE_BF16, stream);
}

// The tile follows the spec (sm90_fwd_tile.h); a causal kernel whose tall tiles (three
// consumers) lose on short queries also holds the 128-row kernel and picks per call, by the
// planner's choice (FwdParams::sm90_tall), with which it sized the split workspace. FP8 head
// dim 128 kernels hold a 192-key instantiation too (FwdParams::sm90_long_keys). Packed GQA
// rows (FwdParams::pack_gqa, short queries) have one instantiation of their own, whose rows
// fwd_packed_tall chooses (no ALiBi or dropout kernel packs: their slopes and streams are
// per head).
template <class Element, int kHeadDimQK, int kHeadDimV, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi,
          bool kHasDropout, bool kIsPaged>
flashgen_status_t run_fwd(const FwdParams& params, cudaStream_t stream) {
  constexpr bool kWide = fwd_wide_keys(kIsCausal, kIsPaged, kHasDropout, int(sizeof(Element)));
  using Tall = FwdTraits<Element, kHeadDimQK, kHeadDimV, kWide, /*kTallRows=*/true>;
  using Short = FwdTraits<Element, kHeadDimQK, kHeadDimV, kWide, /*kTallRows=*/false>;
  if constexpr (!kHasAlibi && !kHasDropout) {
    if (params.pack_gqa) {
      using Packed = std::conditional_t<fwd_packed_tall(kIsCausal), Tall, Short>;
      return launch_fwd<Packed, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, kIsPaged, /*kPackGqa=*/true>(params,
                                                                                                           stream);
    }
  }
  if constexpr (fwd_has_long_keys(kHeadDimQK, kHeadDimV, int(sizeof(Element)), kWide)) {
    using Long = FwdTraits<Element, kHeadDimQK, kHeadDimV, kWide, /*kTallRows=*/true, /*kLongKeys=*/true>;
    static_assert(Long::kBlockM == Tall::kBlockM && Tall::kBlockM == Short::kBlockM);
    if (params.sm90_long_keys) {
      return launch_fwd<Long, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, kIsPaged>(params, stream);
    }
  }
  if constexpr (kIsCausal && Tall::kBlockM != Short::kBlockM) {
    if (!params.sm90_tall) {
      return launch_fwd<Short, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, kIsPaged>(params, stream);
    }
  }
  return launch_fwd<Tall, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, kIsPaged>(params, stream);
}

}  // namespace flashgen::sm90
