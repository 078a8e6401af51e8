// KV-cache append with rotary embedding: one warp per (token, head) row. Rows whose cache
// position or page is out of range are skipped, so bad metadata cannot write out of bounds.
// An FP8 cache stores each value divided by its row's scale, saturated to the e4m3 range.
#include <type_traits>

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

  // Stores row `src` rotated to position `pos` through store(col, value), lane-strided.
  template <class Store>
  __device__ void apply(const T* src, Store store, int head_dim, int pos, int lane) const {
    const bool rotate = cos != nullptr && pos >= 0 && pos < seqlen;
    const int rot = rotate ? dim : 0;
    const int half = rot / 2;
    for (int i = lane; i < half; i += 32) {
      const int a = interleaved ? 2 * i : i;
      const int b = interleaved ? 2 * i + 1 : i + half;
      const float c = float(cos[int64_t(pos) * half + i]);
      const float s = float(sin[int64_t(pos) * half + i]);
      const float x = float(src[a]), y = float(src[b]);
      store(a, x * c - y * s);
      store(b, y * c + x * s);
    }
    for (int col = rot + lane; col < head_dim; col += 32) { store(col, float(src[col])); }
  }
};

// Stores floats into a cache row of type C (T itself, or e4m3 after dividing by the scale).
template <class C>
struct RowStore {
  C* row;
  float inv_scale;
  __device__ void operator()(int col, float x) const {
    if constexpr (std::is_same_v<C, cutlass::float_e4m3_t>) {
      x *= inv_scale;
      x = x > 448.f ? 448.f : x < -448.f ? -448.f : x;  // NaN passes through
    }
    row[col] = C(x);
  }
};

__device__ float row_scale(const flashgen_fp8_scale_t& s, int64_t entry, int64_t head, int64_t row) {
  if (s.scale == nullptr) { return 1.f; }
  int64_t i = entry * s.batch_stride + head * s.head_stride;
  if (s.block_stride != 0) { i += row / s.block_rows * s.block_stride; }
  return s.scale[i];
}

template <class T, class C>
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
    int64_t entry, row;
    if (a.block_table != nullptr) {
      entry = a.block_table[b * a.block_table_batch_stride + pos / a.page_size];
      if (entry < 0 || entry >= a.num_pages) { return; }
      row = pos % int(a.page_size);
    } else {
      entry = a.kv_batch_idx != nullptr ? a.kv_batch_idx[b] : b;
      if (entry < 0 || entry >= a.kv_batch_count) { return; }
      row = pos;
    }
    const int64_t k_dst = entry * a.k_cache_batch_stride + row * a.k_cache_row_stride;
    const int64_t v_dst = entry * a.v_cache_batch_stride + row * a.v_cache_row_stride;
    const T* k_src = static_cast<const T*>(a.k_new) + b * a.k_new_batch_stride + t * a.k_new_row_stride +
                     head * a.k_new_head_stride;
    const T* v_src = static_cast<const T*>(a.v_new) + b * a.v_new_batch_stride + t * a.v_new_row_stride +
                     head * a.v_new_head_stride;
    const RowStore<C> k_out{static_cast<C*>(a.k_cache) + k_dst + head * a.k_cache_head_stride,
                            1.f / row_scale(a.k_scale, entry, head, row)};
    const RowStore<C> v_out{static_cast<C*>(a.v_cache) + v_dst + head * a.v_cache_head_stride,
                            1.f / row_scale(a.v_scale, entry, head, row)};
    rotary.apply(k_src, k_out, int(a.head_dim_qk), pos, lane);
    for (int col = lane; col < a.head_dim_v; col += 32) { v_out(col, float(v_src[col])); }
  } else if (item < kv_rows + q_rows) {
    const int64_t qi = item - kv_rows;
    const int head = int(qi % a.num_heads_q);
    const int t = int((qi / a.num_heads_q) % a.seqlen_q);
    const int b = int(qi / (a.num_heads_q * a.seqlen_q));
    const int pos = a.cache_seqlens[b] + (a.q_positions_per_row ? t : 0);
    const T* src = static_cast<const T*>(a.q) + b * a.q_batch_stride + t * a.q_row_stride + head * a.q_head_stride;
    const RowStore<T> dst{
        static_cast<T*>(a.q_out) + b * a.q_out_batch_stride + t * a.q_out_row_stride + head * a.q_out_head_stride, 1.f};
    rotary.apply(src, dst, int(a.head_dim_qk), pos, lane);
  }
}

template <class T, class C>
flashgen_status_t launch(const flashgen_kv_append_args_t& a, cudaStream_t stream) {
  const int64_t items = a.batch * a.seqlen_new * a.num_heads_kv + (a.q_out != nullptr ? a.batch * a.seqlen_q * a.num_heads_q : 0);
  if (items == 0) { return FLASHGEN_STATUS_OK; }
  const int64_t blocks = (items + kWarps - 1) / kWarps;
  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(&kv_append_kernel<T, C>), 0);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  kv_append_kernel<T, C><<<unsigned(blocks), kWarps * 32, 0, stream>>>(a);
  return check_launch("KV-cache append kernel");
}

}  // namespace

flashgen_status_t launch_kv_append(const flashgen_kv_append_args_t& args, cudaStream_t stream) {
  using E4m3 = cutlass::float_e4m3_t;
  if (args.cache_e4m3 != 0) {
    return args.dtype == FLASHGEN_DTYPE_FP16 ? launch<cutlass::half_t, E4m3>(args, stream)
                                             : launch<cutlass::bfloat16_t, E4m3>(args, stream);
  }
  return args.dtype == FLASHGEN_DTYPE_FP16 ? launch<cutlass::half_t, cutlass::half_t>(args, stream)
                                           : launch<cutlass::bfloat16_t, cutlass::bfloat16_t>(args, stream);
}

}  // namespace flashgen
