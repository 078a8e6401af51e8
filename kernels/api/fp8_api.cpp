// C ABI of the FP8 quantisation pre-pass.
#include <cstdint>
#include <cstring>

#include "api/launch_status.h"
#include "common/fp8_quantize.h"
#include "flashgen/flashgen.h"

namespace {

constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kMaxRows = int64_t(1) << 30;  // rows, blocks and key columns stay in int
constexpr int64_t kMaxGridDim = 65535;

bool aligned(const void* pointer, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(pointer) % bytes == 0; }

// Every stride a multiple of `elems` elements.
bool strides_multiple_of(int64_t elems, int64_t batch_stride, int64_t row_stride, int64_t head_stride) {
  return batch_stride % elems == 0 && row_stride % elems == 0 && head_stride % elems == 0;
}

flashgen_status_t validate(const flashgen_fp8_quantize_args_t* a) {
  using flashgen::set_error;
  const auto invalid = FLASHGEN_STATUS_INVALID_ARGUMENT;
  if (a == nullptr || a->struct_size != sizeof(flashgen_fp8_quantize_args_t)) {
    return set_error(invalid, "args is NULL or was built against another flashgen.h");
  }
  if (a->dtype != FLASHGEN_DTYPE_FP16 && a->dtype != FLASHGEN_DTYPE_BF16) {
    return set_error(invalid, "FP8 quantize reads FP16 or BF16 x, got dtype enum %d", int(a->dtype));
  }
  const bool varlen = a->cu_seqlens != nullptr;
  if (a->batch <= 0 || a->batch > kMaxGridDim || a->num_heads <= 0 || a->num_heads > kMaxGridDim) {
    return set_error(invalid, "FP8 quantize needs batch and num_heads in 1..%lld, got %lld and %lld",
                     static_cast<long long>(kMaxGridDim), static_cast<long long>(a->batch),
                     static_cast<long long>(a->num_heads));
  }
  if (a->seqlen < 0 || a->seqlen >= kMaxRows || (varlen && (a->total < 0 || a->total >= kMaxRows))) {
    return set_error(invalid, "FP8 quantize needs seqlen%s in 0..%lld", varlen ? " and total" : "",
                     static_cast<long long>(kMaxRows - 1));
  }
  if (a->head_dim < 16 || a->head_dim > kMaxHeadDim || a->head_dim % 16 != 0) {
    return set_error(invalid, "FP8 quantize needs head_dim a multiple of 16 in 16..%lld, got %lld",
                     static_cast<long long>(kMaxHeadDim), static_cast<long long>(a->head_dim));
  }
  if (a->granularity != FLASHGEN_FP8_PER_TENSOR && a->granularity != FLASHGEN_FP8_PER_HEAD &&
      a->granularity != FLASHGEN_FP8_PER_BLOCK) {
    return set_error(invalid, "unknown FP8 granularity enum %d", int(a->granularity));
  }
  if (a->layout != FLASHGEN_FP8_LAYOUT_ROWS && a->layout != FLASHGEN_FP8_LAYOUT_PV) {
    return set_error(invalid, "unknown FP8 layout enum %d", int(a->layout));
  }
  const bool pv = a->layout == FLASHGEN_FP8_LAYOUT_PV;
  if (a->granularity == FLASHGEN_FP8_PER_BLOCK) {
    if (a->block_rows <= 0 || a->block_rows > kMaxRows) {
      return set_error(invalid, "FP8 per-block quantize needs block_rows in 1..%lld, got %lld",
                       static_cast<long long>(kMaxRows), static_cast<long long>(a->block_rows));
    }
    if (pv && a->block_rows % flashgen::kFp8PvGroup != 0) {
      return set_error(invalid, "the PV layout needs block_rows a multiple of 16 (its key groups), got %lld",
                       static_cast<long long>(a->block_rows));
    }
  }

  // x: 16-byte rows (each thread loads 8 elements).
  const int64_t rows = varlen ? a->total : a->seqlen;
  if (rows > 0 && a->x == nullptr) { return set_error(invalid, "x is NULL"); }
  if (!aligned(a->x, 16) ||
      !strides_multiple_of(8, varlen ? 0 : a->x_batch_stride, a->x_row_stride, a->x_head_stride)) {
    return set_error(invalid,
                     "x must be 16-byte aligned with (batch, row, head) strides multiples of 8 elements, got "
                     "(%lld, %lld, %lld)",
                     static_cast<long long>(a->x_batch_stride), static_cast<long long>(a->x_row_stride),
                     static_cast<long long>(a->x_head_stride));
  }

  // out: 8-byte stores of a row's 8 channels (ROWS), or 16-byte stores of 16 keys (PV).
  const int64_t columns = flashgen::fp8_pv_columns(varlen, a->seqlen, a->total, a->batch);
  const bool out_used = pv ? columns > 0 : rows > 0;
  if (out_used && a->out == nullptr) { return set_error(invalid, "out is NULL"); }
  const int64_t out_align = pv ? 16 : 8;
  if (!aligned(a->out, uintptr_t(out_align)) ||
      !strides_multiple_of(out_align, varlen ? 0 : a->out_batch_stride, a->out_row_stride, a->out_head_stride)) {
    return set_error(invalid,
                     "out must be %lld-byte aligned with (batch, row, head) strides multiples of %lld, got "
                     "(%lld, %lld, %lld)",
                     static_cast<long long>(out_align), static_cast<long long>(out_align),
                     static_cast<long long>(a->out_batch_stride), static_cast<long long>(a->out_row_stride),
                     static_cast<long long>(a->out_head_stride));
  }
  if (pv && a->out_row_stride < columns) {
    return set_error(invalid, "the PV layout's out_row_stride (%lld) must hold its %lld key columns",
                     static_cast<long long>(a->out_row_stride), static_cast<long long>(columns));
  }

  if (flashgen::fp8_num_scales(*a) > 0 && a->scale == nullptr) { return set_error(invalid, "scale is NULL"); }
  if (!aligned(a->scale, 4)) { return set_error(invalid, "scale must be 4-byte aligned"); }
  if (a->granularity == FLASHGEN_FP8_PER_TENSOR) {
    const size_t needed = flashgen_fp8_quantize_workspace_size(a);
    if (a->workspace == nullptr || a->workspace_bytes < needed || !aligned(a->workspace, 4)) {
      return set_error(invalid,
                       "FP8 per-tensor quantize needs a 4-byte aligned workspace of %zu bytes "
                       "(flashgen_fp8_quantize_workspace_size), got %zu bytes",
                       needed, a->workspace_bytes);
    }
  }
  return FLASHGEN_STATUS_OK;
}

}  // namespace

extern "C" {

void flashgen_fp8_quantize_args_init(flashgen_fp8_quantize_args_t* args) {
  if (args == nullptr) { return; }
  std::memset(args, 0, sizeof(*args));
  args->struct_size = sizeof(*args);
  args->dtype = FLASHGEN_DTYPE_BF16;
  args->granularity = FLASHGEN_FP8_PER_BLOCK;
  args->block_rows = 128;
  args->layout = FLASHGEN_FP8_LAYOUT_ROWS;
}

size_t flashgen_fp8_quantize_workspace_size(const flashgen_fp8_quantize_args_t* args) {
  if (args == nullptr || args->granularity != FLASHGEN_FP8_PER_TENSOR) { return 0; }
  return flashgen::kFp8QuantizeWorkspaceBytes;
}

flashgen_status_t flashgen_fp8_quantize(const flashgen_fp8_quantize_args_t* args, cudaStream_t stream) {
  flashgen::clear_error();
  const flashgen_status_t status = validate(args);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  return flashgen::launch_fp8_quantize(*args, stream);
}

}  // extern "C"
