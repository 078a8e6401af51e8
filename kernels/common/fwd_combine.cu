#include "common/fwd_combine.h"

#include <cmath>

#include <cutlass/numeric_types.h>

#include "api/device_info.h"
#include "api/launch_status.h"

namespace flashgen {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kSplitsPerLane = 8;
constexpr int kEarly = 16;  // splits whose partials load with the LSEs (a multiple of 8, <= 32)

__device__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset /= 2) { x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, offset)); }
  return x;
}

__device__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset /= 2) { x += __shfl_xor_sync(0xffffffff, x, offset); }
  return x;
}

// One warp per (head, row among total_q): lanes reduce over splits, then over columns.
template <class Element>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) combine_kernel(const __grid_constant__ FwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the attention kernel (sm90 and newer): the grid may
  // start while that kernel drains; its partials are complete and visible after this wait.
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  const int64_t item = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (item >= int64_t(p.total_q) * p.num_heads_q) { return; }
  const int head = int(item / p.total_q);
  const int row = int(item % p.total_q);
  const int64_t split_stride = int64_t(p.num_heads_q) * p.total_q;
  const float* lse_parts = p.lse_accum + int64_t(head) * p.total_q + row;
  const float* out_parts = p.out_accum + (int64_t(head) * p.total_q + row) * p.head_dim_v;

  // The first kEarly splits' partials of the lane's first 4 columns are loaded together with the
  // LSEs, before anything depends on them: a single-sequence decode (<= 16 splits, head dim <= 128)
  // then waits for one round of loads from L2 instead of an LSE round and then partial rounds.
  const int64_t split_out_stride = split_stride * p.head_dim_v;
  const bool active0 = 4 * lane < p.head_dim_v;
  float4 early[kEarly];
  CUTE_UNROLL
  for (int u = 0; u < kEarly; ++u) {
    early[u] = active0 && u < p.num_splits ? *reinterpret_cast<const float4*>(out_parts + u * split_out_stride + 4 * lane)
                                           : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  // Each lane holds the LSEs of splits lane, lane + 32, ...: one round of loads, all in flight
  // together, reused for the maximum, the sum and the weights.
  static_assert(kMaxSplits <= 32 * kSplitsPerLane, "kSplitsPerLane covers kMaxSplits");
  float part[kSplitsPerLane];
  float max_lse = -INFINITY;
  CUTE_UNROLL
  for (int j = 0; j < kSplitsPerLane; ++j) {
    const int s = lane + 32 * j;
    part[j] = s < p.num_splits ? lse_parts[s * split_stride] : -INFINITY;
    max_lse = fmaxf(max_lse, part[j]);
  }
  max_lse = warp_max(max_lse);
  const float sink = p.sinks == nullptr ? -INFINITY : p.sinks[head];
  const float ref = fmaxf(max_lse, sink);
  float sum = 0.f;
  if (ref != -INFINITY) {
    CUTE_UNROLL
    for (int j = 0; j < kSplitsPerLane; ++j) { sum += __expf(part[j] - ref); }
  }
  sum = warp_sum(sum);
  if (sink != -INFINITY) { sum += __expf(sink - ref); }
  const bool empty = !(sum > 0.f);
  const float lse = empty ? INFINITY : ref + __logf(sum);
  CUTE_UNROLL
  for (int j = 0; j < kSplitsPerLane; ++j) { part[j] = empty ? 0.f : __expf(part[j] - lse); }  // weights

  // Output address of this row: fixed length rows are (batch, seqlen_q); varlen rows are global.
  int64_t out_offset, lse_offset;
  if (p.cu_seqlens_q != nullptr) {
    out_offset = int64_t(row) * p.out_row_stride;
    lse_offset = int64_t(head) * p.lse_head_stride + row;
  } else {
    const int batch = row / p.seqlen_q, r = row % p.seqlen_q;
    out_offset = int64_t(batch) * p.out_batch_stride + int64_t(r) * p.out_row_stride;
    lse_offset = int64_t(batch) * p.lse_batch_stride + int64_t(head) * p.lse_head_stride + r;
  }
  Element* out = static_cast<Element*>(p.out) + out_offset + int64_t(head) * p.out_head_stride;
  // A weighted partial row added in; a split with weight 0 (no keys) is skipped by a select,
  // never by multiplying what it left there.
  auto add = [](float4& acc, float w, const float4& x) {
    if (w > 0.f) {
      acc.x += w * x.x;
      acc.y += w * x.y;
      acc.z += w * x.z;
      acc.w += w * x.w;
    }
  };
  // Each lane owns 4 consecutive columns (float4 loads of the partials) and walks the splits with
  // several loads in flight: the weights of 32 splits at a time sit one per lane and are
  // broadcast by shuffles.
  for (int base = 0; base < p.head_dim_v; base += 128) {  // warp-uniform: the shuffles need every lane
    const int c0 = base + 4 * lane;
    const bool active = c0 < p.head_dim_v;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    const int first = base == 0 ? kEarly : 0;  // splits the early loads hold
    if (!empty) {
      if (base == 0) {
        CUTE_UNROLL
        for (int u = 0; u < kEarly; ++u) {
          const float w = __shfl_sync(0xffffffffu, part[0], u);
          if (u < p.num_splits) { add(acc, w, early[u]); }
        }
      }
      CUTE_UNROLL
      for (int j = 0; j < kSplitsPerLane; ++j) {  // splits 32 j .. 32 j + 31, warp-uniform bounds
        const int s0 = 32 * j;
        if (s0 >= p.num_splits) { break; }
        const int count = min(32, p.num_splits - s0);
        // Eight partial rows loaded before any is used, so that they are in flight together.
        for (int j0 = s0 == 0 ? first : 0; j0 < count; j0 += 8) {
          float4 x[8];
          float w[8];
          CUTE_UNROLL
          for (int u = 0; u < 8; ++u) {
            const int i = j0 + u;
            w[u] = __shfl_sync(0xffffffffu, part[j], i & 31);
            x[u] = active && i < count
                       ? *reinterpret_cast<const float4*>(out_parts + (s0 + i) * split_out_stride + c0)
                       : make_float4(0.f, 0.f, 0.f, 0.f);
          }
          CUTE_UNROLL
          for (int u = 0; u < 8; ++u) {
            if (j0 + u < count) { add(acc, w[u], x[u]); }
          }
        }
      }
    }
    if (active) {
      out[c0] = Element(acc.x);
      out[c0 + 1] = Element(acc.y);
      out[c0 + 2] = Element(acc.z);
      out[c0 + 3] = Element(acc.w);
    }
  }
  if (p.lse != nullptr && lane == 0) { p.lse[lse_offset] = lse; }
}

template <class Element>
flashgen_status_t launch(const FwdParams& p, cudaStream_t stream) {
  const int64_t items = int64_t(p.total_q) * p.num_heads_q;
  const int64_t blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) { return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "too many rows to combine"); }
  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(&combine_kernel<Element>), 0);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  DeviceInfo info;
  status = current_device_info(&info);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  // On sm90 and newer the combine is a programmatic dependent launch: its launch overlaps the
  // end of the attention kernel, also inside CUDA graphs (a single-sequence decode step at 4k
  // keys: 13.1 -> 12.4 us on an H100).
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(unsigned(blocks));
  config.blockDim = dim3(kWarpsPerBlock * 32);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = info.compute_capability >= 90 ? 1 : 0;
  cudaLaunchKernelEx(&config, combine_kernel<Element>, p);
  return check_launch("split-KV combine kernel");
}

}  // namespace

flashgen_status_t run_fwd_combine(const FwdParams& params, flashgen_dtype_t dtype, cudaStream_t stream) {
  return dtype == FLASHGEN_DTYPE_FP16 ? launch<cutlass::half_t>(params, stream)
                                      : launch<cutlass::bfloat16_t>(params, stream);
}

}  // namespace flashgen
