// Host-side launch of the SM80-path forward kernel. A generated translation unit includes
// this header and instantiates run_fwd for one kernel spec.
#pragma once

#include <type_traits>

#include <cuda_runtime_api.h>

#include "api/launch_status.h"
#include "common/fwd_combine.h"
#include "common/fwd_params.h"
#include "sm80/sm80_fwd_kernel.hpp"

namespace flashgen::sm80 {

template <class Traits, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi, bool kHasDropout, bool kIsPaged>
flashgen_status_t launch_fwd(const FwdParams& params, cudaStream_t stream) {
  using Element = typename Traits::Element;
  auto* kernel = &fwd_kernel<Traits, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, kIsPaged>;
  constexpr int kSmemBytes = Traits::kSmemBytes;

  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(kernel), kSmemBytes);
  if (status != FLASHGEN_STATUS_OK) { return status; }

  const int group = params.pack_gqa ? params.group_size : 1;
  const dim3 grid((params.seqlen_q * group + Traits::kBlockM - 1) / Traits::kBlockM,
                  params.pack_gqa ? params.num_heads_kv : params.num_heads_q, params.batch * params.num_splits);
  kernel<<<grid, Traits::kNumThreads, kSmemBytes, stream>>>(params);
  status = check_launch("sm80 forward kernel");
  if (status != FLASHGEN_STATUS_OK || params.num_splits == 1) { return status; }
  constexpr flashgen_dtype_t kDtype =
      std::is_same_v<Element, cutlass::half_t> ? FLASHGEN_DTYPE_FP16 : FLASHGEN_DTYPE_BF16;
  return run_fwd_combine(params, kDtype, stream);
}

// Head dims above 128 hold both tiles (sm80_fwd_tile.h) and take the one the planner sized its
// packing and splits for (params.sm80_narrow); smaller ones hold one kernel.
template <class Element, int kHeadDimQK, int kHeadDimV, bool kIsCausal, bool kHasSoftcap, bool kHasAlibi,
          bool kHasDropout, bool kIsPaged>
flashgen_status_t run_fwd(const FwdParams& params, cudaStream_t stream) {
  if constexpr (fwd_has_narrow_tile(kHeadDimQK, kHeadDimV)) {
    if (params.sm80_narrow) {
      using Narrow = FwdTraits<Element, kHeadDimQK, kHeadDimV, /*kNarrow=*/true>;
      return launch_fwd<Narrow, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, kIsPaged>(params, stream);
    }
  }
  using Wide = FwdTraits<Element, kHeadDimQK, kHeadDimV, /*kNarrow=*/false>;
  return launch_fwd<Wide, kIsCausal, kHasSoftcap, kHasAlibi, kHasDropout, kIsPaged>(params, stream);
}

}  // namespace flashgen::sm80
