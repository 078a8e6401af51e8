// C ABI of the auxiliary kernels: dropout mask, KV-cache append.
#include <cmath>
#include <cstring>
#include <initializer_list>

#include "api/launch_status.h"
#include "common/aux_kernels.h"
#include "flashgen/flashgen.h"

extern "C" {

flashgen_status_t flashgen_dropout_mask(uint64_t philox_seed, uint64_t philox_offset, float dropout_p, int64_t batch,
                                        int64_t num_heads, int64_t seqlen_q, int64_t seqlen_k, uint8_t* mask,
                                        cudaStream_t stream) {
  using namespace flashgen;
  clear_error();
  if (!(dropout_p >= 0.f && dropout_p < 1.f)) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "dropout_p must be in [0, 1)");
  }
  if (batch < 0 || num_heads < 0 || seqlen_q < 0 || seqlen_k < 0 || batch > 65535 || num_heads > 65535 ||
      seqlen_q > 0x7fffffff || seqlen_k > 0x7fffffff) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "dropout mask sizes out of range");
  }
  if (mask == nullptr && batch * num_heads * seqlen_q * seqlen_k > 0) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "mask is NULL");
  }
  const uint32_t threshold = uint32_t(std::lround(double(dropout_p) * 65536.0));
  return launch_dropout_mask(philox_seed, philox_offset, threshold, int(batch), int(num_heads), int(seqlen_q),
                             int(seqlen_k), mask, stream);
}

void flashgen_kv_append_args_init(flashgen_kv_append_args_t* args) {
  if (args == nullptr) { return; }
  std::memset(args, 0, sizeof(*args));
  args->struct_size = sizeof(*args);
}

flashgen_status_t flashgen_kv_append(const flashgen_kv_append_args_t* a, cudaStream_t stream) {
  using namespace flashgen;
  clear_error();
  const auto invalid = FLASHGEN_STATUS_INVALID_ARGUMENT;
  if (a == nullptr || a->struct_size != sizeof(flashgen_kv_append_args_t)) {
    return set_error(invalid, "args is NULL or was built against another flashgen.h");
  }
  if (a->dtype != FLASHGEN_DTYPE_FP16 && a->dtype != FLASHGEN_DTYPE_BF16) {
    return set_error(invalid, "unsupported dtype enum %d", int(a->dtype));
  }
  if (a->batch < 0 || a->seqlen_new < 0 || a->num_heads_kv <= 0 || a->head_dim_qk <= 0 || a->head_dim_v <= 0 ||
      a->capacity < 0) {
    return set_error(invalid, "KV append sizes out of range");
  }
  if (a->seqlen_new > 0 && (a->k_new == nullptr || a->v_new == nullptr || a->k_cache == nullptr ||
                            a->v_cache == nullptr || a->cache_seqlens == nullptr)) {
    return set_error(invalid, "k, v, k_cache, v_cache and cache_seqlens must be non-null");
  }
  if (a->block_table != nullptr && (a->page_size <= 0 || a->num_pages <= 0)) {
    return set_error(invalid, "paged append needs page_size and num_pages > 0");
  }
  if (a->block_table == nullptr && a->kv_batch_count <= 0 && a->seqlen_new > 0) {
    return set_error(invalid, "kv_batch_count must be > 0");
  }
  if (a->rotary_cos != nullptr) {
    if (a->rotary_sin == nullptr || a->rotary_dim <= 0 || a->rotary_dim % 2 != 0 || a->rotary_dim > a->head_dim_qk) {
      return set_error(invalid, "rotary needs cos and sin, and an even rotary_dim <= head_dim");
    }
  }
  for (const flashgen_fp8_scale_t* sc : {&a->k_scale, &a->v_scale}) {
    if (a->cache_e4m3 != 0 && sc->scale != nullptr &&
        (sc->batch_stride < 0 || sc->head_stride < 0 || sc->block_stride < 0 ||
         (sc->block_stride != 0 && sc->block_rows <= 0))) {
      return set_error(invalid, "FP8 cache scales: strides must be >= 0 and block_rows > 0 with a block stride");
    }
  }
  if (a->q_out != nullptr && (a->q == nullptr || a->num_heads_q <= 0 || a->seqlen_q < 0)) {
    return set_error(invalid, "q_out needs q, num_heads_q and seqlen_q");
  }
  if (a->cache_seqlens == nullptr && a->q_out != nullptr) { return set_error(invalid, "cache_seqlens is NULL"); }
  return launch_kv_append(*a, stream);
}

}  // extern "C"
