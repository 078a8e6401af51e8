// Host-side launch of the Hopper backward kernel: the SM80 path's preprocess (D, zeroed dQ
// accumulator), TMA descriptors, the kernel, then the dQ conversion and the sinks' gradient.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <cuda_runtime_api.h>

#include "api/launch_status.h"
#include "common/bwd_aux.h"
#include "common/bwd_params.h"
#include "sm90/sm90_bwd_kernel.hpp"
#include "sm90/sm90_tma_views.hpp"

namespace flashgen::sm90 {

template <class Element, int kHeadDim, int kHeadDimV, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi, bool kHasDropout>
flashgen_status_t run_bwd(const BwdParams& params, cudaStream_t stream) {
  using Traits = BwdTraits<Element, kHeadDim, kHeadDimV, /*kAllowPersistent=*/!kIsCausal>;
  auto* kernel = &bwd_kernel<Traits, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout>;
  constexpr flashgen_dtype_t kDtype =
      std::is_same_v<Element, cutlass::half_t> ? FLASHGEN_DTYPE_FP16 : FLASHGEN_DTYPE_BF16;
  if (params.head_dim_qk != kHeadDim || params.head_dim_v != kHeadDimV || (params.dropout_p > 0.f) != kHasDropout ||
      (params.softcap > 0.f) != kHasSoftcap || (params.alibi_slopes != nullptr) != kHasAlibi ||
      (params.deterministic && params.num_m_blocks * Traits::kBlockM < params.seqlen_q)) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "internal: the sm90 backward kernel got a call it does not run (head dims, dropout, softcap "
                     "or ALiBi flags, or too few deterministic-mode counters)");
  }
  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(kernel), Traits::kSmemBytes);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  status = run_bwd_preprocess(params, kDtype, stream);
  if (status != FLASHGEN_STATUS_OK) { return status; }

  BwdKernelParams<Traits> kp;
  kp.bwd = params;
  const bool varlen = params.cu_seqlens_q != nullptr;
  kp.q_rows = std::max(1, varlen ? params.total_q : params.seqlen_q);
  kp.q_batches = varlen ? 1 : std::max(1, params.batch);
  kp.k_rows = std::max(1, params.seqlen_k);
  kp.k_batches = varlen ? 1 : std::max(1, params.batch);
  auto rows_tensor = [&](const void* ptr, int rows, int dim, int heads, int batches, int64_t row_stride,
                         int64_t head_stride, int64_t batch_stride) {
    return tma_rows_view(static_cast<Element const*>(ptr), rows, dim, heads, batches, row_stride, head_stride,
                         tma_batch_stride(varlen, batch_stride, row_stride, rows));
  };
  auto mQ = rows_tensor(params.q, kp.q_rows, kHeadDim, params.num_heads_q, kp.q_batches, params.q_row_stride,
                        params.q_head_stride, params.q_batch_stride);
  auto mdO = rows_tensor(params.dout, kp.q_rows, kHeadDimV, params.num_heads_q, kp.q_batches,
                         params.dout_row_stride, params.dout_head_stride, params.dout_batch_stride);
  auto mK = rows_tensor(params.k, kp.k_rows, kHeadDim, params.num_heads_kv, kp.k_batches, params.k_row_stride,
                        params.k_head_stride, params.k_batch_stride);
  auto mV = rows_tensor(params.v, kp.k_rows, kHeadDimV, params.num_heads_kv, kp.k_batches, params.v_row_stride,
                        params.v_head_stride, params.v_batch_stride);
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  kp.tma_q = make_tma_copy(SM90_TMA_LOAD{}, mQ, typename Traits::SmemLayoutQStage{},
                           Shape<Int<kBlockM>, Int<kHeadDim>>{}, _1{});
  kp.tma_do = make_tma_copy(SM90_TMA_LOAD{}, mdO, typename Traits::SmemLayoutdOStage{},
                            Shape<Int<kBlockM>, Int<kHeadDimV>>{}, _1{});
  kp.tma_k = make_tma_copy(SM90_TMA_LOAD{}, mK, typename Traits::SmemLayoutK{}, Shape<Int<kBlockN>, Int<kHeadDim>>{},
                           _1{});
  kp.tma_v = make_tma_copy(SM90_TMA_LOAD{}, mV, typename Traits::SmemLayoutV{}, Shape<Int<kBlockN>, Int<kHeadDimV>>{},
                           _1{});

  if constexpr (Traits::kDqTma) {
    auto mdQ = make_tensor(make_gmem_ptr(params.dq_accum),
                           make_shape(std::max(1, params.total_q), kHeadDim, params.num_heads_q),
                           make_stride(int64_t(params.num_heads_q) * params.dq_accum_dim, _1{},
                                       int64_t(params.dq_accum_dim)));
    kp.tma_dq = make_tma_copy(SM90_TMA_REDUCE_ADD{}, mdQ, typename Traits::SmemLayoutdQ{},
                              Shape<Int<kBlockM>, Int<kHeadDim>>{}, _1{});
  }
  const int64_t ctas = set_bwd_key_order(kp.bwd, kBlockM, kBlockN, int(sizeof(Element)), kIsCausal);
  if (ctas > INT32_MAX) { return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "too many key blocks for one call"); }
  const bool tail_workspace = params.tail_accum != nullptr && params.tail_counters != nullptr;
  const bool tail_fits = !kIsCausal && !Traits::kSplitRoles && tail_workspace &&
                         int64_t(params.tail.first) + params.tail.blocks == ctas;
  if (params.tail.blocks > 0 && !tail_fits) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "internal: the backward's tail split does not fit its grid");
  }
  const int64_t items = params.tail.blocks > 0 ? params.tail.grid() : ctas;
  if (items > INT32_MAX) { return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "too many key blocks for one call"); }
  kp.num_items = int32_t(items);
  // Persistent grid (params.persistent, set by the plan for equally long key blocks): one CTA per
  // SM runs item blockIdx.x, then those it takes from the item counter (Traits::kPersistent),
  // loading the next block's K and V during the previous one's epilogue.
  // (The plan sets it only for non-causal, non-deterministic calls; causal kernels are compiled
  // without it, Traits::kPersistent false.)
  const bool persistent = params.persistent && Traits::kPersistent && params.num_sms > 0 && params.item_counter != nullptr;
  if (!persistent) { kp.bwd.item_counter = nullptr; }  // one item per CTA
  const int64_t grid = persistent ? std::min<int64_t>(items, params.num_sms) : items;
  if (ctas > 0) {
    kernel<<<unsigned(grid), Traits::kNumThreads, Traits::kSmemBytes, stream>>>(kp);
    status = check_launch("sm90 backward kernel");
    if (status != FLASHGEN_STATUS_OK) { return status; }
  }
  BwdParams post = params;
  post.dq_accum_permuted = Traits::kDqTma;  // stage_dq_swizzled's chunk order
  return run_bwd_postprocess(post, kDtype, stream);
}

}  // namespace flashgen::sm90
