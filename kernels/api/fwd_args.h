// Checks and conversion of the public forward arguments, shared by the forward and backward
// entry points (the backward pass takes the forward call's arguments).
#pragma once

#include <cstdint>

#include "common/fwd_params.h"
#include "flashgen/flashgen.h"

namespace flashgen {

const char* dtype_name(flashgen_dtype_t dtype);
bool aligned16(const void* p);
// 16-byte vector accesses need every row to start on a 16-byte boundary.
bool strides_aligned(int64_t batch, int64_t row, int64_t head);

// Shapes, pointers, alignment and option ranges; sets the thread's last error on failure.
flashgen_status_t validate_fwd_args(const flashgen_fwd_args_t& args);
FwdParams to_fwd_params(const flashgen_fwd_args_t& args);

}  // namespace flashgen
