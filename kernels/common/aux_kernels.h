// Small kernels beside attention: the dropout mask (a test and debugging aid) and the KV-cache
// append with rotary embedding. Arguments are validated by the C API before these run.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "flashgen/flashgen.h"

namespace flashgen {

flashgen_status_t launch_dropout_mask(uint64_t seed, uint64_t offset, uint32_t threshold, int batch, int num_heads,
                                      int seqlen_q, int seqlen_k, uint8_t* mask, cudaStream_t stream);

flashgen_status_t launch_kv_append(const flashgen_kv_append_args_t& args, cudaStream_t stream);

}  // namespace flashgen
