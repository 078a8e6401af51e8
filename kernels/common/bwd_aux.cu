// Backward pre- and post-processing kernels (common/bwd_aux.h). Head dims are runtime values
// here: these kernels are memory-bound and one instantiation per dtype serves every build.
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "api/launch_status.h"
#include "common/bwd_aux.h"

namespace flashgen {
namespace {

// Row r of the total_q rows: batch entry r / seqlen, position r % seqlen (fixed length); the
// packed row itself when varlen (seqlen = total_q, batch stride unused).
struct RowAddress {
  int64_t batch_stride, row_stride, head_stride;
  int seqlen;
  __device__ int64_t operator()(int r, int h) const {
    return int64_t(r / seqlen) * batch_stride + int64_t(r % seqlen) * row_stride + int64_t(h) * head_stride;
  }
};

__device__ float to_float(__half x) { return __half2float(x); }
__device__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ T from_float(float x);
template <>
__device__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// D = sum over head_dim_v of dO * O in fp32, per (row, head) pair (pairs numbered r * heads +
// h, adjacent in memory for the usual layouts). Eight threads share a pair, each summing the
// 16-byte chunks sub, sub + 8, ... (kChunks of them at most); a group of eight takes kItems pairs
// (groups apart), and every load is issued before the arithmetic, so that a thread keeps 128
// bytes in flight. (The first version, a warp per pair, had 8 or 16 of its 32 lanes idle at
// head dims 64 and 128 and ran at half the memory bandwidth or less: 147 / 75 us against
// FA2's 73 for this plus zeroing dq_accum, bench/NOTES.md, session 20.) The same grid zeroes
// dq_accum (accum_vec 16-byte chunks, grid-strided, stores issued under the loads' latency) in
// place of a separate memset: the same bytes and one launch fewer (measured neutral, session 21).
template <class T, int kChunks, int kItems>
__global__ void softmax_d_kernel(const T* dout, const T* out, RowAddress dout_at, RowAddress out_at, int total_q,
                                 int num_heads, int head_dim, float* softmax_d, float4* dq_accum,
                                 int64_t accum_vec) {
  const int64_t pairs = int64_t(total_q) * num_heads;
  const int64_t groups = (pairs + kItems - 1) / kItems;
  const int64_t group = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 8;
  const int sub = int(threadIdx.x % 8);
  // Loads are unconditional (out-of-range pairs and chunks read pair pairs - 1's first chunk and
  // count for nothing): a guarded load would end in a branch whose merge waits for its data.
  uint4 va[kItems][kChunks], vb[kItems][kChunks];
  int rows[kItems], heads[kItems];
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const int64_t pair = min(group + it * groups, pairs - 1);
    rows[it] = int(pair / num_heads);
    heads[it] = int(pair % num_heads);
    const T* a = dout + dout_at(rows[it], heads[it]);
    const T* b = out + out_at(rows[it], heads[it]);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int col = (sub + 8 * c) * 8;
      const int at = col < head_dim ? col : 0;
      va[it][c] = *reinterpret_cast<const uint4*>(a + at);
      vb[it][c] = *reinterpret_cast<const uint4*>(b + at);
    }
  }
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < accum_vec; i += stride) {
    dq_accum[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float sums[kItems];
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    sums[it] = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const T* ea = reinterpret_cast<const T*>(&va[it][c]);
      const T* eb = reinterpret_cast<const T*>(&vb[it][c]);
      float part = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) { part += to_float(ea[i]) * to_float(eb[i]); }
      sums[it] += (sub + 8 * c) * 8 < head_dim ? part : 0.f;
    }
  }
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
#pragma unroll
    for (int offset = 4; offset > 0; offset /= 2) { sums[it] += __shfl_xor_sync(0xffffffffu, sums[it], offset); }
    if (sub == 0 && group + it * groups < pairs) { softmax_d[int64_t(heads[it]) * total_q + rows[it]] = sums[it]; }
  }
}

// Eight elements per thread: dq[r, h, c] = scale * dq_accum[(r * heads + h) * accum_dim + c].
template <class T>
__global__ void convert_dq_kernel(const float* dq_accum, int accum_dim, T* dq, RowAddress dq_at, int total_q,
                                  int num_heads, int head_dim, float scale, bool permuted) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int chunks = head_dim / 8;
  if (i >= int64_t(total_q) * num_heads * chunks) { return; }
  const int c = int(i % chunks) * 8;
  const int64_t rh = i / chunks;
  const int r = int(rh / num_heads), h = int(rh % num_heads);
  // Permuted (BwdParams::dq_accum_permuted): group n = c / 8 of a 32-column block at chunks n % 4
  // and n % 4 + 4.
  const float* src = dq_accum + rh * accum_dim + (permuted ? (c & ~31) + ((c / 8) % 4) * 4 : c);
  const float4 lo = *reinterpret_cast<const float4*>(src);
  const float4 hi = *reinterpret_cast<const float4*>(src + (permuted ? 16 : 4));
  alignas(16) T v[8] = {from_float<T>(lo.x * scale), from_float<T>(lo.y * scale), from_float<T>(lo.z * scale),
                        from_float<T>(lo.w * scale), from_float<T>(hi.x * scale), from_float<T>(hi.y * scale),
                        from_float<T>(hi.z * scale), from_float<T>(hi.w * scale)};
  *reinterpret_cast<uint4*>(dq + dq_at(r, h) + c) = *reinterpret_cast<const uint4*>(v);
}

// One block per head: dsink = -sum over rows of exp(sink - lse) * D, in a fixed order (the
// result is bitwise reproducible). Varlen rows past cu_seqlens_q[batch] belong to no sequence.
__global__ void sink_grad_kernel(const float* sinks, const float* lse, int64_t lse_batch_stride,
                                 int64_t lse_head_stride, int seqlen, const float* softmax_d, int total_q,
                                 const int* cu_seqlens_q, int batch, float* dsinks) {
  constexpr int kThreads = 256;
  __shared__ float partial[kThreads];
  const int h = blockIdx.x;
  const int rows = cu_seqlens_q != nullptr ? min(max(cu_seqlens_q[batch], 0), total_q) : total_q;
  const float sink = sinks[h];
  float sum = 0.f;
  for (int r = threadIdx.x; r < rows; r += kThreads) {
    const float l = lse[int64_t(r / seqlen) * lse_batch_stride + int64_t(h) * lse_head_stride + r % seqlen];
    sum += __expf(sink - l) * softmax_d[int64_t(h) * total_q + r];
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) { partial[threadIdx.x] += partial[threadIdx.x + width]; }
    __syncthreads();
  }
  if (threadIdx.x == 0) { dsinks[h] = -partial[0]; }
}

RowAddress row_address(const BwdParams& p, int64_t batch_stride, int64_t row_stride, int64_t head_stride) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  return {varlen ? 0 : batch_stride, row_stride, head_stride, varlen ? p.total_q : p.seqlen_q};
}

// dq_accum's size: whole 16-byte chunks (dq_accum_dim is a multiple of 8). The tail split's
// workspace follows it (BwdParams::grid_zero_bytes, also whole chunks) and is zeroed with it.
int64_t accum_bytes(const BwdParams& p) {
  return int64_t(p.dq_accum_rows) * p.num_heads_q * p.dq_accum_dim * int64_t(sizeof(float));
}

template <class T, int kChunks, int kItems>
void launch_softmax_d(const BwdParams& p, cudaStream_t stream) {
  const int64_t pairs = int64_t(p.total_q) * p.num_heads_q;
  const int64_t threads = (pairs + kItems - 1) / kItems * 8;
  constexpr int kBlock = 256;
  softmax_d_kernel<T, kChunks, kItems><<<dim3(unsigned((threads + kBlock - 1) / kBlock)), kBlock, 0, stream>>>(
      static_cast<const T*>(p.dout), static_cast<const T*>(p.out),
      row_address(p, p.dout_batch_stride, p.dout_row_stride, p.dout_head_stride),
      row_address(p, p.out_batch_stride, p.out_row_stride, p.out_head_stride), p.total_q, p.num_heads_q,
      p.head_dim_v, p.softmax_d, reinterpret_cast<float4*>(p.dq_accum),
      (accum_bytes(p) + p.grid_zero_bytes) / int64_t(sizeof(float4)));
}

template <class T>
flashgen_status_t preprocess(const BwdParams& p, cudaStream_t stream) {
  if (p.deterministic) {
    const size_t sem_bytes = size_t(p.batch) * p.num_heads_q * p.num_m_blocks * sizeof(int);
    if (cudaMemsetAsync(p.dq_semaphore, 0, sem_bytes, stream) != cudaSuccess) {
      return check_launch("dq semaphore memset");
    }
  }
  if (int64_t(p.total_q) * p.num_heads_q == 0) {  // no rows: the kernel below would not launch
    if (cudaMemsetAsync(p.dq_accum, 0, size_t(accum_bytes(p) + p.grid_zero_bytes), stream) != cudaSuccess) {
      return check_launch("dq_accum memset");
    }
    return FLASHGEN_STATUS_OK;
  }
  const int chunks = (p.head_dim_v + 7) / 8;  // 16-byte chunks of a row (head dims are multiples of 8)
  if (chunks <= 8) {
    launch_softmax_d<T, 1, 4>(p, stream);
  } else if (chunks <= 16) {
    launch_softmax_d<T, 2, 2>(p, stream);
  } else if (chunks <= 32) {
    launch_softmax_d<T, 4, 1>(p, stream);
  } else if (chunks <= 64) {
    launch_softmax_d<T, 8, 1>(p, stream);
  } else {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "the backward preprocess takes head_dim_v <= 512");
  }
  return check_launch("backward preprocess kernel");
}

template <class T>
flashgen_status_t postprocess(const BwdParams& p, cudaStream_t stream) {
  const int64_t work = int64_t(p.total_q) * p.num_heads_q * (p.head_dim_qk / 8);
  if (work == 0) { return FLASHGEN_STATUS_OK; }
  const int threads = 256;
  convert_dq_kernel<T><<<dim3(unsigned((work + threads - 1) / threads)), threads, 0, stream>>>(
      p.dq_accum, p.dq_accum_dim, static_cast<T*>(p.dq),
      row_address(p, p.dq_batch_stride, p.dq_row_stride, p.dq_head_stride), p.total_q, p.num_heads_q,
      p.head_dim_qk, p.softmax_scale, p.dq_accum_permuted);
  const flashgen_status_t status = check_launch("backward dq conversion kernel");
  return status != FLASHGEN_STATUS_OK ? status : run_bwd_sink_grad(p, stream);
}

}  // namespace

flashgen_status_t run_bwd_sink_grad(const BwdParams& p, cudaStream_t stream) {
  if (p.sinks == nullptr || p.dsinks == nullptr) { return FLASHGEN_STATUS_OK; }
  const bool varlen = p.cu_seqlens_q != nullptr;
  sink_grad_kernel<<<p.num_heads_q, 256, 0, stream>>>(p.sinks, p.lse, p.lse_batch_stride, p.lse_head_stride,
                                                      varlen ? p.total_q : p.seqlen_q, p.softmax_d, p.total_q,
                                                      p.cu_seqlens_q, p.batch, p.dsinks);
  return check_launch("attention sink gradient kernel");
}

flashgen_status_t run_bwd_preprocess(const BwdParams& params, flashgen_dtype_t dtype, cudaStream_t stream) {
  return dtype == FLASHGEN_DTYPE_FP16 ? preprocess<__half>(params, stream) : preprocess<__nv_bfloat16>(params, stream);
}

flashgen_status_t run_bwd_postprocess(const BwdParams& params, flashgen_dtype_t dtype, cudaStream_t stream) {
  return dtype == FLASHGEN_DTYPE_FP16 ? postprocess<__half>(params, stream) : postprocess<__nv_bfloat16>(params, stream);
}

}  // namespace flashgen
