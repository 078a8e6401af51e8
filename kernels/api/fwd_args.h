// Checks and conversion of the public forward arguments, shared by the forward and backward
// entry points (the backward pass takes the forward call's arguments).
#pragma once

#include <cstdint>

#include "common/fwd_params.h"
#include "flashgen/flashgen.h"

namespace flashgen {

const char* dtype_name(flashgen_dtype_t dtype);
bool aligned16(const void* p);
// 16-byte vector accesses need every row to start on a 16-byte boundary: strides that are
// multiples of `elems` elements (8 of 16 bits, 16 of FP8).
bool strides_aligned(int64_t batch, int64_t row, int64_t head, int64_t elems = 8);

// A tuning or comparison knob read from the environment on each call: unset, empty or "auto"
// -> 0, names[i] -> values[i]; any other value is an INVALID_ARGUMENT error that lists them.
flashgen_status_t env_choice(const char* env_var, const char* const* names, const int* values, int count, int* out);

// A kernel family forced by an environment variable (FLASHGEN_FWD_BACKEND,
// FLASHGEN_BWD_BACKEND): "sm80" -> 80, "sm90" -> 90, "decode" -> kDecodeBackend (the decode
// kernels, forward only), unset, empty or "auto" -> 0.
constexpr int kDecodeBackend = 1;
flashgen_status_t family_override(const char* env_var, int* family);

// Shapes, pointers, alignment and option ranges; sets the thread's last error on failure.
flashgen_status_t validate_fwd_args(const flashgen_fwd_args_t& args);
FwdParams to_fwd_params(const flashgen_fwd_args_t& args);

}  // namespace flashgen
