// KV-cache append with rotary embedding: one warp per (token, head) row. Rows whose cache
// position or page is out of range are skipped, so bad metadata cannot write out of bounds.
#include <cutlass/numeric_types.h>

#include "api/launch_status.h"
#include "common/aux_kernels.h"

namespace flashgen {
namespace {

constexpr int kWarps = 4;

template <class T>
struct Rotary {
  const T* cos;
  const T* sin;
  int dim;  // rotated columns (even); the rest are copied
  int seqlen;
  bool interleaved;

  // Writes row `src` rotated to position `pos` into `dst` (lane-strided over the columns).
  __device__ void apply(const T* src, T* dst, int head_dim, int pos, int lane) const {
    const bool rotate = cos != nullptr && pos >= 0 && pos < seqlen;
    const int rot = rotate ? dim : 0;
    const int half = rot / 2;
    for (int i = lane; i < half; i += 32) {
      const int a = interleaved ? 2 * i : i;
      const int b = interleaved ? 2 * i + 1 : i + half;
      const float c = float(cos[int64_t(pos) * half + i]);
      const float s = float(sin[int64_t(pos) * half + i]);
      const float x = float(src[a]), y = float(src[b]);
      dst[a] = T(x * c - y * s);
      dst[b] = T(y * c + x * s);
    }
    for (int col = rot + lane; col < head_dim; col += 32) { dst[col] = src[col]; }
  }
};

template <class T>
__global__ void __launch_bounds__(kWarps * 32) kv_append_kernel(const __grid_constant__ flashgen_kv_append_args_t a) {
  const int lane = threadIdx.x % 32;
  const int64_t kv_rows = a.batch * a.seqlen_new * a.num_heads_kv;
  const int64_t q_rows = a.q_out != nullptr ? a.batch * a.seqlen_q * a.num_heads_q : 0;
  const int64_t item = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const Rotary<T> rotary{static_cast<const T*>(a.rotary_cos), static_cast<const T*>(a.rotary_sin), int(a.rotary_dim),
                         int(a.rotary_seqlen), a.rotary_interleaved != 0};
  if (item < kv_rows) {
    const int head = int(item % a.num_heads_kv);
    const int t = int((item / a.num_heads_kv) % a.seqlen_new);
    const int b = int(item / (a.num_heads_kv * a.seqlen_new));
    const int pos = a.cache_seqlens[b] + t;
    if (pos < 0 || pos >= a.capacity) { return; }
    int64_t k_dst, v_dst;
    if (a.block_table != nullptr) {
      const int page = a.block_table[b * a.block_table_batch_stride + pos / a.page_size];
      if (page < 0 || page >= a.num_pages) { return; }
      const int in_page = pos % int(a.page_size);
      k_dst = page * a.k_cache_batch_stride + in_page * a.k_cache_row_stride;
      v_dst = page * a.v_cache_batch_stride + in_page * a.v_cache_row_stride;
    } else {
      const int entry = a.kv_batch_idx != nullptr ? a.kv_batch_idx[b] : b;
      if (entry < 0 || entry >= a.kv_batch_count) { return; }
      k_dst = entry * a.k_cache_batch_stride + int64_t(pos) * a.k_cache_row_stride;
      v_dst = entry * a.v_cache_batch_stride + int64_t(pos) * a.v_cache_row_stride;
    }
    const T* k_src = static_cast<const T*>(a.k_new) + b * a.k_new_batch_stride + t * a.k_new_row_stride +
                     head * a.k_new_head_stride;
    const T* v_src = static_cast<const T*>(a.v_new) + b * a.v_new_batch_stride + t * a.v_new_row_stride +
                     head * a.v_new_head_stride;
    T* k_out = static_cast<T*>(a.k_cache) + k_dst + head * a.k_cache_head_stride;
    T* v_out = static_cast<T*>(a.v_cache) + v_dst + head * a.v_cache_head_stride;
    rotary.apply(k_src, k_out, int(a.head_dim_qk), pos, lane);
    for (int col = lane; col < a.head_dim_v; col += 32) { v_out[col] = v_src[col]; }
  } else if (item < kv_rows + q_rows) {
    const int64_t qi = item - kv_rows;
    const int head = int(qi % a.num_heads_q);
    const int t = int((qi / a.num_heads_q) % a.seqlen_q);
    const int b = int(qi / (a.num_heads_q * a.seqlen_q));
    const int pos = a.cache_seqlens[b] + (a.q_positions_per_row ? t : 0);
    const T* src = static_cast<const T*>(a.q) + b * a.q_batch_stride + t * a.q_row_stride + head * a.q_head_stride;
    T* dst = static_cast<T*>(a.q_out) + b * a.q_out_batch_stride + t * a.q_out_row_stride + head * a.q_out_head_stride;
    rotary.apply(src, dst, int(a.head_dim_qk), pos, lane);
  }
}

template <class T>
flashgen_status_t launch(const flashgen_kv_append_args_t& a, cudaStream_t stream) {
  const int64_t items = a.batch * a.seqlen_new * a.num_heads_kv + (a.q_out != nullptr ? a.batch * a.seqlen_q * a.num_heads_q : 0);
  if (items == 0) { return FLASHGEN_STATUS_OK; }
  const int64_t blocks = (items + kWarps - 1) / kWarps;
  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(&kv_append_kernel<T>), 0);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  kv_append_kernel<T><<<unsigned(blocks), kWarps * 32, 0, stream>>>(a);
  return check_launch("KV-cache append kernel");
}

}  // namespace

flashgen_status_t launch_kv_append(const flashgen_kv_append_args_t& args, cudaStream_t stream) {
  return args.dtype == FLASHGEN_DTYPE_FP16 ? launch<cutlass::half_t>(args, stream)
                                           : launch<cutlass::bfloat16_t>(args, stream);
}

}  // namespace flashgen
