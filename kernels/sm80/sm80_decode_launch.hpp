// Host-side launch of the decode kernel (sm80 family: mma.sync + cp.async, runs on sm80 and
// newer). A generated translation unit includes this header and instantiates one run_decode.
#pragma once

#include <type_traits>

#include <cuda_runtime_api.h>

#include "api/launch_status.h"
#include "common/fwd_combine.h"
#include "common/fwd_params.h"
#include "sm80/sm80_decode_kernel.hpp"

namespace flashgen::sm80::decode {

template <class Element, bool kKvE4m3, int kHeadDim, int kRowTiles>
flashgen_status_t launch(const FwdParams& p, cudaStream_t stream) {
  using Traits = DecodeTraits<Element, kKvE4m3, kHeadDim, kRowTiles>;
  auto* kernel = &decode_kernel<Traits>;
  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(kernel), Traits::kSmemBytes);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  const int row_blocks = (p.seqlen_q * p.group_size + Traits::kRows - 1) / Traits::kRows;
  const dim3 grid(p.num_splits, p.num_heads_kv * row_blocks, p.batch);
  kernel<<<grid, kThreads, Traits::kSmemBytes, stream>>>(p);
  status = check_launch("sm80 decode kernel");
  if (status != FLASHGEN_STATUS_OK || p.num_splits == 1) { return status; }
  constexpr flashgen_dtype_t kDtype =
      std::is_same_v<Element, cutlass::half_t> ? FLASHGEN_DTYPE_FP16 : FLASHGEN_DTYPE_BF16;
  return run_fwd_combine(p, kDtype, stream);
}

template <class Element, bool kKvE4m3, int kHeadDim>
flashgen_status_t run_decode_rows(const FwdParams& p, cudaStream_t stream) {
  if constexpr (rows_per_cta(/*packed_rows=*/32, kHeadDim) == 16) {
    return launch<Element, kKvE4m3, kHeadDim, 1>(p, stream);
  } else {
    return rows_per_cta(p.seqlen_q * p.group_size, kHeadDim) == 16 ? launch<Element, kKvE4m3, kHeadDim, 1>(p, stream)
                                                                    : launch<Element, kKvE4m3, kHeadDim, 2>(p, stream);
  }
}

// Element: q, out and the cache (fp16 or bf16), or cutlass::float_e4m3_t for an FP8 cache read
// with fp16 (p.out_fp16) or bf16 queries.
template <class Element, int kHeadDim>
flashgen_status_t run_decode(const FwdParams& p, cudaStream_t stream) {
  if constexpr (std::is_same_v<Element, cutlass::float_e4m3_t>) {
    return p.out_fp16 ? run_decode_rows<cutlass::half_t, true, kHeadDim>(p, stream)
                      : run_decode_rows<cutlass::bfloat16_t, true, kHeadDim>(p, stream);
  } else {
    return run_decode_rows<Element, false, kHeadDim>(p, stream);
  }
}

}  // namespace flashgen::sm80::decode
