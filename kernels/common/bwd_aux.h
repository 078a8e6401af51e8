// The backward pass's small kernels around the main one: D = rowsum(dO * O) before it, and
// after it dQ (fp32 accumulator -> dtype) and the attention sinks' gradient.
#pragma once

#include <cuda_runtime_api.h>

#include "common/bwd_params.h"
#include "flashgen/flashgen.h"

namespace flashgen {

// Zeroes the dQ accumulator (with the tail split's workspace after it, and the deterministic-mode
// counters) and writes softmax_d.
flashgen_status_t run_bwd_preprocess(const BwdParams& params, flashgen_dtype_t dtype, cudaStream_t stream);

// dq = softmax_scale * dq_accum in the input dtype; dsinks when requested.
flashgen_status_t run_bwd_postprocess(const BwdParams& params, flashgen_dtype_t dtype, cudaStream_t stream);

// dsinks alone (when requested), for a backward that converts dQ itself.
flashgen_status_t run_bwd_sink_grad(const BwdParams& params, cudaStream_t stream);

}  // namespace flashgen
