// FP8 quantisation: a CTA per (row chunk, head, batch entry). It reads its rows in register
// tiles of 16-byte vectors, reduces their amax (per block / per head), then quantises each tile
// and writes it, either row by row (ROWS) or transposed through shared memory (PV), so that
// the PV layout is written in 16-byte runs of keys. Per tensor runs the same kernel twice:
// once for the amax (atomicMax into the workspace), once to quantise.
//
// The library compiles with --use_fast_math; the divisions go through __fdiv_rn so that the
// scales and the e4m3 values are those of IEEE float32 arithmetic (bitwise equal to PyTorch's
// (x.float() / (amax / 448)).clamp(-448, 448).to(torch.float8_e4m3fn)).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstring>

#include "api/launch_status.h"
#include "common/fp8_quantize.h"

namespace flashgen {
namespace {

constexpr int kThreads = 256;
constexpr int kVecsPerThread = 8;    // 16-byte loads in flight per thread and tile
constexpr int kElemsPerVec = 8;      // fp16/bf16 elements per 16-byte vector
constexpr int kStagePad = 4;         // bytes after each staged row: an odd word pitch
constexpr int kGroup = int(kFp8PvGroup);
constexpr float kE4m3Max = 448.f;
__host__ __device__ constexpr int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}
// A tile holds at most kThreads * kVecsPerThread vectors and 8 * (kThreads / 2) rows.
constexpr int kStageBytes = kThreads * kVecsPerThread * kElemsPerVec + 8 * (kThreads / 2) * kStagePad;

enum class Pass {
  kAmax,       // per tensor, step 1: amax of the chunk into the workspace
  kPerTensor,  // per tensor, step 2: quantise with the workspace's amax
  kPerHead,    // one chunk per (batch entry, head): amax and quantise
  kPerBlock,   // one chunk per block of rows: amax and quantise
};

struct QuantizeParams {
  const void* x;
  int64_t x_batch_stride, x_row_stride, x_head_stride;
  const int32_t* cu_seqlens;
  int64_t total;
  int batch, seqlen, num_heads;
  uint8_t* out;
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  int64_t pv_columns;
  bool pv;
  float* scale;
  unsigned* amax;        // per tensor: the workspace
  int chunk_rows;        // rows per CTA (a multiple of 16 for PV)
  int num_scale_blocks;  // per block: ceil(seqlen / block_rows)
  int vecs_per_row;      // head_dim / 8
  int dwords_per_row;    // head_dim / 4
  int rows_per_pass;     // rows one pass of the CTA's threads loads (even)
  int tile_rows;         // rows_per_pass * kVecsPerThread (a multiple of 16)
};

// The rows of sequence b: where its row 0 sits in x and in out (for PV, its first key column),
// its length, and the rows this CTA grid writes (PV: with the zero columns up to the next
// sequence). Out-of-range cu_seqlens are clamped so that nothing outside x or out is touched.
struct Sequence {
  int64_t x_offset;
  int64_t out_offset;
  int len;
  int extent;
};

__device__ Sequence sequence_of(const QuantizeParams& p, int b) {
  Sequence s;
  if (p.cu_seqlens == nullptr) {
    s.x_offset = b * p.x_batch_stride;
    s.out_offset = b * p.out_batch_stride;
    s.len = p.seqlen;
    s.extent = p.pv ? int(round_up(p.seqlen, kGroup)) : p.seqlen;
    return s;
  }
  const int64_t start = min(max(int64_t(p.cu_seqlens[b]), int64_t(0)), p.total);
  const int64_t end = min(max(int64_t(p.cu_seqlens[b + 1]), start), p.total);
  s.x_offset = start * p.x_row_stride;
  s.len = int(end - start);
  if (!p.pv) {
    s.out_offset = start * p.out_row_stride;
    s.extent = s.len;
    return s;
  }
  const int64_t column = round_up(start, kGroup) + int64_t(kGroup) * b;
  const int64_t next = b + 1 < p.batch ? round_up(end, kGroup) + int64_t(kGroup) * (b + 1) : p.pv_columns;
  const int64_t extent = min(min(next, p.pv_columns) - column, round_up(s.len, kGroup) + kGroup);
  s.out_offset = column;
  s.extent = int(max(extent, int64_t(0)));
  s.len = min(s.len, s.extent);
  return s;
}

template <class T>
struct Vec;
template <>
struct Vec<__half> {
  __device__ static float to_float(unsigned short bits) { return __half2float(__ushort_as_half(bits)); }
  __device__ static float2 to_float2(unsigned word) {
    __half2 h;
    memcpy(&h, &word, sizeof(word));
    return __half22float2(h);
  }
};
template <>
struct Vec<__nv_bfloat16> {
  __device__ static float to_float(unsigned short bits) { return __bfloat162float(__ushort_as_bfloat16(bits)); }
  __device__ static float2 to_float2(unsigned word) {
    __nv_bfloat162 h;
    memcpy(&h, &word, sizeof(word));
    return __bfloat1622float2(h);
  }
};

// Loads the tile of rows [t0, t0 + tile_rows) owned by this thread, zeros past `valid_end`.
template <class T>
__device__ void load_tile(const QuantizeParams& p, const T* __restrict__ x, int t0, int valid_end,
                          uint4 (&v)[kVecsPerThread]) {
  const int row = threadIdx.x / p.vecs_per_row;
  const int vec = threadIdx.x % p.vecs_per_row;
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j) {
    const int r = t0 + row + j * p.rows_per_pass;
    v[j] = make_uint4(0, 0, 0, 0);
    if (row < p.rows_per_pass && r < valid_end) {
      v[j] = *reinterpret_cast<const uint4*>(x + r * p.x_row_stride + vec * kElemsPerVec);
    }
  }
}

// Per 16-bit lane, the largest |x| bit pattern: for non-negative IEEE halves and bfloat16s the
// unsigned order of the bits is the order of the values.
__device__ unsigned amax_bits(const uint4 (&v)[kVecsPerThread], unsigned running) {
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j) {
    running = __vmaxu2(running, v[j].x & 0x7fff7fffu);
    running = __vmaxu2(running, v[j].y & 0x7fff7fffu);
    running = __vmaxu2(running, v[j].z & 0x7fff7fffu);
    running = __vmaxu2(running, v[j].w & 0x7fff7fffu);
  }
  return running;
}

// The CTA's amax of 16-bit patterns, as a float, in every thread.
template <class T>
__device__ float block_amax(unsigned lanes) {
  __shared__ unsigned warp_max[kThreads / 32];
  unsigned m = max(lanes & 0xffffu, lanes >> 16);
  m = __reduce_max_sync(0xffffffffu, m);
  if (threadIdx.x % 32 == 0) { warp_max[threadIdx.x / 32] = m; }
  __syncthreads();
  m = warp_max[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) { m = max(m, warp_max[w]); }
  return Vec<T>::to_float(static_cast<unsigned short>(m));
}

__device__ unsigned quantize_word(float2 f, float scale) {
  f.x = __fdiv_rn(f.x, scale);
  f.y = __fdiv_rn(f.y, scale);
  return __nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3);
}

// 8 elements -> 8 e4m3 bytes (element i in byte i).
template <class T>
__device__ uint2 quantize_vec(const uint4& v, float scale) {
  uint2 q;
  q.x = quantize_word(Vec<T>::to_float2(v.x), scale) | (quantize_word(Vec<T>::to_float2(v.y), scale) << 16);
  q.y = quantize_word(Vec<T>::to_float2(v.z), scale) | (quantize_word(Vec<T>::to_float2(v.w), scale) << 16);
  return q;
}

// Column c of a 16-column group of the PV layout holds key (c & 1) + 8 ((c >> 1) & 1) + 2 (c >> 2).
__host__ __device__ constexpr int pv_key_of_column(int c) { return (c & 1) + 8 * ((c >> 1) & 1) + 2 * (c >> 2); }

// Writes the staged tile (rows x head_dim e4m3, row pitch head_dim + kStagePad) transposed: a
// thread takes 4 channels x one 16-key group (16 words of shared memory), transposes the 4x4
// byte blocks and stores 4 rows of 16 bytes. Neighbouring lanes take the two halves of a
// 32-byte sector; a warp's shared-memory reads fall in distinct banks (odd word pitch).
__device__ void store_pv_tile(const QuantizeParams& p, const uint8_t* stage, int pitch, uint8_t* __restrict__ out,
                              int rows) {
  const int groups = rows / kGroup;
  const int pairs = (groups + 1) / 2;
  for (int i = threadIdx.x; i < pairs * 2 * p.dwords_per_row; i += kThreads) {
    const int rest = i >> 1;
    const int dq = rest % p.dwords_per_row;
    const int g = 2 * (rest / p.dwords_per_row) + (i & 1);
    if (g >= groups) { continue; }
    unsigned w[kGroup];
#pragma unroll
    for (int c = 0; c < kGroup; ++c) {
      w[c] = *reinterpret_cast<const unsigned*>(stage + (g * kGroup + pv_key_of_column(c)) * pitch + 4 * dq);
    }
    unsigned rows_out[4][4];  // [channel j][4-column word]
#pragma unroll
    for (int cw = 0; cw < 4; ++cw) {
      const unsigned a = w[4 * cw], b = w[4 * cw + 1], c = w[4 * cw + 2], d = w[4 * cw + 3];
      const unsigned ab_lo = __byte_perm(a, b, 0x5140);  // a0 b0 a1 b1
      const unsigned ab_hi = __byte_perm(a, b, 0x7362);  // a2 b2 a3 b3
      const unsigned cd_lo = __byte_perm(c, d, 0x5140);
      const unsigned cd_hi = __byte_perm(c, d, 0x7362);
      rows_out[0][cw] = __byte_perm(ab_lo, cd_lo, 0x5410);  // a0 b0 c0 d0
      rows_out[1][cw] = __byte_perm(ab_lo, cd_lo, 0x7632);
      rows_out[2][cw] = __byte_perm(ab_hi, cd_hi, 0x5410);
      rows_out[3][cw] = __byte_perm(ab_hi, cd_hi, 0x7632);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint8_t* dst = out + (4 * dq + j) * p.out_row_stride + g * kGroup;
      *reinterpret_cast<uint4*>(dst) = make_uint4(rows_out[j][0], rows_out[j][1], rows_out[j][2], rows_out[j][3]);
    }
  }
}

template <class T, Pass kPass>
__global__ void __launch_bounds__(kThreads) fp8_quantize_kernel(const __grid_constant__ QuantizeParams p) {
  __shared__ __align__(16) uint8_t stage[kStageBytes];
  const int chunk = blockIdx.x;
  const int head = blockIdx.y;
  const int b = blockIdx.z;
  const Sequence seq = sequence_of(p, b);
  const int r0 = chunk * p.chunk_rows;
  const int r1 = min(r0 + p.chunk_rows, seq.extent);  // rows written: [r0, r1)
  const int valid_end = min(r1, seq.len);             // rows read: [r0, valid_end)
  const T* __restrict__ x = static_cast<const T*>(p.x) + seq.x_offset + head * p.x_head_stride;

  constexpr bool kLocalAmax = kPass != Pass::kPerTensor;
  const bool single_tile = r1 - r0 <= p.tile_rows;
  uint4 v[kVecsPerThread];
  float amax = 0.f;
  if constexpr (kLocalAmax) {
    // Quantising passes walk every tile, even one past the sequence's end: a single tile then
    // stays in registers (zeros where there is no row) for the second loop.
    unsigned lanes = 0;
    const int amax_end = kPass == Pass::kAmax ? valid_end : r1;
    for (int t0 = r0; t0 < amax_end; t0 += p.tile_rows) {
      load_tile<T>(p, x, t0, valid_end, v);
      lanes = amax_bits(v, lanes);
    }
    amax = block_amax<T>(lanes);
  } else {
    amax = __uint_as_float(*p.amax);
  }
  if constexpr (kPass == Pass::kAmax) {
    if (threadIdx.x == 0 && amax > 0.f) { atomicMax(p.amax, __float_as_uint(amax)); }
    return;
  }
  const float scale = amax > 0.f ? __fdiv_rn(amax, kE4m3Max) : 1.f;
  if (threadIdx.x == 0) {
    if constexpr (kPass == Pass::kPerBlock) {
      if (chunk < p.num_scale_blocks) {
        p.scale[(int64_t(b) * p.num_heads + head) * p.num_scale_blocks + chunk] = scale;
      }
    } else if constexpr (kPass == Pass::kPerHead) {
      p.scale[int64_t(b) * p.num_heads + head] = scale;
    } else {
      if (chunk == 0 && head == 0 && b == 0) { p.scale[0] = scale; }
    }
  }

  const int row = threadIdx.x / p.vecs_per_row;
  const int vec = threadIdx.x % p.vecs_per_row;
  const bool active = row < p.rows_per_pass;
  const int pitch = p.dwords_per_row * 4 + kStagePad;
  uint8_t* __restrict__ out = p.out + seq.out_offset + head * p.out_head_stride;
  for (int t0 = r0; t0 < r1; t0 += p.tile_rows) {
    // The amax pass left the only tile in registers.
    if (!(kLocalAmax && single_tile)) { load_tile<T>(p, x, t0, valid_end, v); }
    if (!p.pv) {
#pragma unroll
      for (int j = 0; j < kVecsPerThread; ++j) {
        const int r = t0 + row + j * p.rows_per_pass;
        if (active && r < r1) {
          *reinterpret_cast<uint2*>(out + r * p.out_row_stride + vec * kElemsPerVec) = quantize_vec<T>(v[j], scale);
        }
      }
      continue;
    }
    if (active) {
#pragma unroll
      for (int j = 0; j < kVecsPerThread; ++j) {
        const uint2 q = quantize_vec<T>(v[j], scale);
        unsigned* dst = reinterpret_cast<unsigned*>(stage + (row + j * p.rows_per_pass) * pitch + vec * kElemsPerVec);
        dst[0] = q.x;
        dst[1] = q.y;
      }
    }
    __syncthreads();
    store_pv_tile(p, stage, pitch, out + t0, min(p.tile_rows, r1 - t0));
    __syncthreads();
  }
}

template <class T, Pass kPass>
const void* kernel_of() {
  return reinterpret_cast<const void*>(&fp8_quantize_kernel<T, kPass>);
}

template <class T, Pass kPass>
flashgen_status_t launch_pass(const QuantizeParams& p, dim3 grid, cudaStream_t stream) {
  const flashgen_status_t status = prepare_kernel(kernel_of<T, kPass>(), 0);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  fp8_quantize_kernel<T, kPass><<<grid, kThreads, 0, stream>>>(p);
  return check_launch("FP8 quantize kernel");
}

template <class T>
flashgen_status_t launch(const flashgen_fp8_quantize_args_t& a, cudaStream_t stream) {
  const bool varlen = a.cu_seqlens != nullptr;
  const bool pv = a.layout == FLASHGEN_FP8_LAYOUT_PV;
  QuantizeParams p{};
  p.x = a.x;
  p.x_batch_stride = a.x_batch_stride;
  p.x_row_stride = a.x_row_stride;
  p.x_head_stride = a.x_head_stride;
  p.cu_seqlens = a.cu_seqlens;
  p.total = varlen ? a.total : 0;
  p.batch = int(a.batch);
  p.seqlen = int(a.seqlen);
  p.num_heads = int(a.num_heads);
  p.out = static_cast<uint8_t*>(a.out);
  p.out_batch_stride = a.out_batch_stride;
  p.out_row_stride = a.out_row_stride;
  p.out_head_stride = a.out_head_stride;
  p.pv = pv;
  p.pv_columns = fp8_pv_columns(varlen, a.seqlen, a.total, a.batch);
  p.scale = a.scale;
  p.amax = static_cast<unsigned*>(a.workspace);
  p.vecs_per_row = int(a.head_dim) / kElemsPerVec;
  p.dwords_per_row = int(a.head_dim) / 4;
  p.rows_per_pass = (kThreads / p.vecs_per_row) & ~1;
  p.tile_rows = p.rows_per_pass * kVecsPerThread;

  // The rows a sequence may write: PV pads to 16 and, varlen, up to the next sequence's start.
  const int64_t extent = !pv ? a.seqlen : round_up(a.seqlen, kGroup) + (varlen ? kGroup : 0);
  const auto chunks_of = [&](int64_t rows) { return unsigned((extent + rows - 1) / rows); };
  const dim3 heads_batch(1, unsigned(a.num_heads), unsigned(a.batch));
  switch (a.granularity) {
    case FLASHGEN_FP8_PER_TENSOR: {
      p.chunk_rows = p.tile_rows;
      const dim3 grid(std::max(chunks_of(p.chunk_rows), 1u), heads_batch.y, heads_batch.z);
      // A GPU without machine code is reported before anything is enqueued.
      flashgen_status_t status = prepare_kernel(kernel_of<T, Pass::kAmax>(), 0);
      if (status != FLASHGEN_STATUS_OK) { return status; }
      const cudaError_t err = cudaMemsetAsync(a.workspace, 0, sizeof(unsigned), stream);
      if (err != cudaSuccess) {
        return set_error(FLASHGEN_STATUS_CUDA_ERROR, "clearing the FP8 quantize workspace failed: %s",
                         cudaGetErrorString(err));
      }
      status = launch_pass<T, Pass::kAmax>(p, grid, stream);
      if (status != FLASHGEN_STATUS_OK) { return status; }
      return launch_pass<T, Pass::kPerTensor>(p, grid, stream);
    }
    case FLASHGEN_FP8_PER_HEAD: {
      p.chunk_rows = int(std::max<int64_t>(round_up(extent, kGroup), kGroup));
      return launch_pass<T, Pass::kPerHead>(p, heads_batch, stream);
    }
    default: {
      p.chunk_rows = int(a.block_rows);
      p.num_scale_blocks = int((a.seqlen + a.block_rows - 1) / a.block_rows);
      const unsigned chunks = chunks_of(p.chunk_rows);
      if (chunks == 0) { return FLASHGEN_STATUS_OK; }
      return launch_pass<T, Pass::kPerBlock>(p, dim3(chunks, heads_batch.y, heads_batch.z), stream);
    }
  }
}

}  // namespace

flashgen_status_t launch_fp8_quantize(const flashgen_fp8_quantize_args_t& args, cudaStream_t stream) {
  return args.dtype == FLASHGEN_DTYPE_FP16 ? launch<__half>(args, stream) : launch<__nv_bfloat16>(args, stream);
}

}  // namespace flashgen
