// Host-side launch of the SM80-path backward pass: preprocess (D, zeroed dQ accumulator), the
// main kernel, then its own dQ conversion (sm80_bwd_dq.hpp) and the sinks' gradient. A
// generated translation unit includes this header and instantiates run_bwd for one kernel spec.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_runtime_api.h>

#include "api/launch_status.h"
#include "common/bwd_aux.h"
#include "common/bwd_params.h"
#include "sm80/sm80_bwd_kernel.hpp"

namespace flashgen::sm80 {

template <class Element, int kHeadDimQK, int kHeadDimV, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi,
          bool kHasDropout>
flashgen_status_t run_bwd(const BwdParams& params, cudaStream_t stream) {
  using Traits = BwdTraits<Element, kHeadDimQK, kHeadDimV>;
  auto* kernel = &bwd_kernel<Traits, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout>;
  constexpr int kSmemBytes = Traits::kSmemBytes;
  constexpr flashgen_dtype_t kDtype =
      std::is_same_v<Element, cutlass::half_t> ? FLASHGEN_DTYPE_FP16 : FLASHGEN_DTYPE_BF16;

  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(kernel), kSmemBytes);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  if (params.num_heads_q > 65535 || params.batch > 65535) {  // the dQ conversion's grid
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "the sm80 backward takes at most 65535 query heads and batch entries");
  }
  status = run_bwd_preprocess(params, kDtype, stream);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  BwdParams kparams = params;
  const int64_t ctas = set_bwd_key_order(kparams, Traits::kBlockM, Traits::kBlockN, int(sizeof(Element)), kIsCausal);
  if (ctas > INT32_MAX) { return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "too many key blocks for one call"); }
  if (ctas > 0) {  // no keys: dK and dV are empty, dQ stays zero
    kernel<<<unsigned(ctas), Traits::kNumThreads, kSmemBytes, stream>>>(kparams);
    status = check_launch("sm80 backward kernel");
    if (status != FLASHGEN_STATUS_OK) { return status; }
  }
  const int m_blocks = (params.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM;
  if (m_blocks > 0 && params.num_heads_q > 0) {
    dq_convert_kernel<Traits><<<dim3(unsigned(m_blocks), unsigned(params.num_heads_q), unsigned(params.batch)),
                                Traits::kNumThreads, 0, stream>>>(params);
    status = check_launch("sm80 backward dq conversion kernel");
    if (status != FLASHGEN_STATUS_OK) { return status; }
  }
  return run_bwd_sink_grad(params, stream);
}

}  // namespace flashgen::sm80
