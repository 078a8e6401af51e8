// Host-side launch of the SM80-path forward kernel. A generated translation unit includes
// this header and instantiates run_fwd for one (dtype, head dim, causal) combination.
#pragma once

#include <cuda_runtime_api.h>

#include "api/launch_status.h"
#include "common/fwd_params.h"
#include "sm80/sm80_fwd_kernel.hpp"

namespace flashgen::sm80 {

template <class Element, int kHeadDim, bool kIsCausal>
flashgen_status_t run_fwd(const FwdParams& params, cudaStream_t stream) {
  using Traits = FwdTraits<Element, kHeadDim>;
  auto* kernel = &fwd_kernel<Traits, kIsCausal>;
  constexpr int kSmemBytes = Traits::kSmemBytes;

  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(kernel), kSmemBytes);
  if (status != FLASHGEN_STATUS_OK) { return status; }

  const dim3 grid((params.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM, params.num_heads_q, params.batch);
  kernel<<<grid, Traits::kNumThreads, kSmemBytes, stream>>>(params);
  return check_launch("sm80 forward kernel");
}

}  // namespace flashgen::sm80
