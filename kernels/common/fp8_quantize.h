// FP8 (e4m3) quantisation pre-pass of the FP8 attention kernels: scales per tensor, per
// (batch, head) or per block of rows, and the output in x's layout or in the PV layout that the
// FP8 kernels read v from (flashgen.h describes both). Arguments are validated by the C API.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "flashgen/flashgen.h"

namespace flashgen {

// Device workspace of the per-tensor granularity: the running amax (float bits, atomicMax).
constexpr size_t kFp8QuantizeWorkspaceBytes = 16;

// Keys are grouped in 16 columns by the PV layout (one k-step of the FP8 PV GEMM).
constexpr int64_t kFp8PvGroup = 16;

constexpr int64_t fp8_round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// Key columns of one (batch entry, head, channel) row of the PV layout: fixed length
// roundup(seqlen, 16); varlen roundup(total, 16) + 16 * batch, shared by all sequences.
constexpr int64_t fp8_pv_columns(bool varlen, int64_t seqlen, int64_t total, int64_t batch) {
  return varlen ? fp8_round_up(total, kFp8PvGroup) + kFp8PvGroup * batch : fp8_round_up(seqlen, kFp8PvGroup);
}

// Scales the granularity asks for: 1, batch * num_heads, or batch * num_heads * ceil(seqlen / block_rows).
inline int64_t fp8_num_scales(const flashgen_fp8_quantize_args_t& args) {
  switch (args.granularity) {
    case FLASHGEN_FP8_PER_TENSOR: return 1;
    case FLASHGEN_FP8_PER_HEAD: return args.batch * args.num_heads;
    default: return args.batch * args.num_heads * ((args.seqlen + args.block_rows - 1) / args.block_rows);
  }
}

flashgen_status_t launch_fp8_quantize(const flashgen_fp8_quantize_args_t& args, cudaStream_t stream);

}  // namespace flashgen
