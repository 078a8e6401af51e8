// Split-KV combine: merges the fp32 partial outputs and LSEs of FwdParams::num_splits splits
// into the final output and LSE (adding the attention sinks, which splits leave out).
#pragma once

#include <cuda_runtime_api.h>

#include "common/fwd_params.h"
#include "flashgen/flashgen.h"

namespace flashgen {

// The most splits one call may use (the combine holds them in registers).
constexpr int kMaxSplits = 256;

flashgen_status_t run_fwd_combine(const FwdParams& params, flashgen_dtype_t dtype, cudaStream_t stream);

}  // namespace flashgen
