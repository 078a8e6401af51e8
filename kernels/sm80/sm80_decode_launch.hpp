// Host-side launch of the decode kernel (sm80 family: mma.sync + cp.async, runs on sm80 and
// newer). A generated translation unit includes this header and instantiates one run_decode.
#pragma once

#include <type_traits>

#include <cuda_runtime_api.h>

#include "api/launch_status.h"
#include "common/fwd_combine.h"
#include "common/fwd_params.h"
#include "sm80/sm80_decode_fp8_kernel.hpp"
#include "sm80/sm80_decode_kernel.hpp"

namespace flashgen::sm80::decode {

template <class Traits, class Kernel>
flashgen_status_t launch(Kernel* kernel, const FwdParams& p, cudaStream_t stream, const char* what) {
  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(kernel), Traits::kSmemBytes);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  const int row_blocks = (p.seqlen_q * p.group_size + Traits::kRows - 1) / Traits::kRows;
  const dim3 grid(p.num_splits, p.num_heads_kv * row_blocks, p.batch);
  kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
  status = check_launch(what);
  if (status != FLASHGEN_STATUS_OK || p.num_splits == 1) { return status; }
  constexpr flashgen_dtype_t kDtype =
      std::is_same_v<typename Traits::Element, cutlass::half_t> ? FLASHGEN_DTYPE_FP16 : FLASHGEN_DTYPE_BF16;
  return run_fwd_combine(p, kDtype, stream);
}

// The kernel for a cache kind and a CTA row count (plan_rows_per_cta's choices).
template <bool kFp8, class Element, int kHeadDim, int kRows>
flashgen_status_t launch_rows(const FwdParams& p, cudaStream_t stream) {
  if constexpr (kFp8) {
    using Traits = Fp8DecodeTraits<Element, kHeadDim, kRows / 8>;
    return launch<Traits>(&decode_fp8_kernel<Traits>, p, stream, "sm80 decode kernel (FP8 cache)");
  } else {
    using Traits = DecodeTraits<Element, kHeadDim, kRows / 16>;
    return launch<Traits>(&decode_kernel<Traits>, p, stream, "sm80 decode kernel");
  }
}

// Rows per CTA by the host plan's rule (the fewer when the packed rows fit them).
template <bool kFp8, class Element, int kHeadDim>
flashgen_status_t run_decode_rows(const FwdParams& p, cudaStream_t stream) {
  constexpr int kFew = plan_rows_per_cta(kFp8, /*packed_rows=*/1, kHeadDim);
  constexpr int kMany = plan_rows_per_cta(kFp8, /*packed_rows=*/1 << 20, kHeadDim);
  if constexpr (kFew == kMany) {
    return launch_rows<kFp8, Element, kHeadDim, kFew>(p, stream);
  } else {
    return plan_rows_per_cta(kFp8, p.seqlen_q * p.group_size, kHeadDim) == kFew
               ? launch_rows<kFp8, Element, kHeadDim, kFew>(p, stream)
               : launch_rows<kFp8, Element, kHeadDim, kMany>(p, stream);
  }
}

// Element: q, out and the cache (fp16 or bf16), or cutlass::float_e4m3_t for an FP8 cache read
// with fp16 (p.out_fp16) or bf16 queries.
template <class Element, int kHeadDim>
flashgen_status_t run_decode(const FwdParams& p, cudaStream_t stream) {
  if constexpr (std::is_same_v<Element, cutlass::float_e4m3_t>) {
    return p.out_fp16 ? run_decode_rows<true, cutlass::half_t, kHeadDim>(p, stream)
                      : run_decode_rows<true, cutlass::bfloat16_t, kHeadDim>(p, stream);
  } else {
    return run_decode_rows<false, Element, kHeadDim>(p, stream);
  }
}

}  // namespace flashgen::sm80::decode
