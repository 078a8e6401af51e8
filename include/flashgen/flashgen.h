/*
 * flashgen public C API.
 *
 * Torch-free: plain device pointers, element strides, shapes, dtype enums and a
 * cudaStream_t. An inference engine links libflashgen.so with this header alone.
 *
 * Layout convention (flash-attn's): q is (batch, seqlen_q, num_heads_q, head_dim_qk),
 * k is (batch, seqlen_k, num_heads_kv, head_dim_qk), v is (batch, seqlen_k, num_heads_kv,
 * head_dim_v), out is (batch, seqlen_q, num_heads_q, head_dim_v); any batch/row/head
 * strides, the last dimension contiguous. lse, when requested, is a contiguous float32
 * (batch, num_heads_q, seqlen_q) tensor.
 */
#ifndef FLASHGEN_FLASHGEN_H_
#define FLASHGEN_FLASHGEN_H_

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FLASHGEN_API __declspec(dllexport)
#else
#define FLASHGEN_API __attribute__((visibility("default")))
#endif

#define FLASHGEN_ABI_VERSION 2

typedef enum flashgen_status {
  FLASHGEN_STATUS_OK = 0,
  FLASHGEN_STATUS_INVALID_ARGUMENT = 1,
  /* No kernel instantiation matches the request; the message names it. */
  FLASHGEN_STATUS_NOT_BUILT = 2,
  /* The library holds no machine code for this GPU's architecture. */
  FLASHGEN_STATUS_UNSUPPORTED_DEVICE = 3,
  FLASHGEN_STATUS_CUDA_ERROR = 4,
} flashgen_status_t;

typedef enum flashgen_dtype {
  FLASHGEN_DTYPE_FP16 = 0,
  FLASHGEN_DTYPE_BF16 = 1,
  /* FP8 e4m3 (the "fn" variant: max 448, no infinities): q, k, v of the sm90 FP8 kernels. */
  FLASHGEN_DTYPE_E4M3 = 2,
} flashgen_dtype_t;

/* FP8 dequantisation scales: the real value is scale * x_e4m3. One float32 per (batch entry,
   head, block of block_rows rows), at scale[b * batch_stride + h * head_stride +
   (row / block_rows) * block_stride], row counted from the sequence's start; a zero stride
   shares one scale along that axis (per (batch, head): block_stride = 0; per tensor: all
   strides 0). For k and v, block_rows must be a multiple of 128. NULL scale: 1. Scales must
   be positive and finite. */
typedef struct flashgen_fp8_scale {
  const float* scale;
  int64_t batch_stride, head_stride, block_stride;
  int64_t block_rows;
} flashgen_fp8_scale_t;

/* The layout of v that the FP8 kernels read (the second GEMM needs the keys contiguous), written
   by flashgen_fp8_quantize with FLASHGEN_FP8_LAYOUT_PV:
   fixed length: (batch, num_heads_kv, head_dim_v, roundup(seqlen_k, 16)) e4m3, keys contiguous;
   varlen: (num_heads_kv, head_dim_v, roundup(total_k, 16) + 16 * batch), sequence b starting at
   column 16 * ceil(cu_seqlens_k[b] / 16) + 16 * b.
   Within each group of 16 columns (counted from the sequence's start), column c holds key
   (c & 1) + 8 * ((c >> 1) & 1) + 2 * (c >> 2) of the group, so that the probabilities the
   kernel converts to FP8 in registers line up with v without a shuffle. Columns past the
   sequence's end hold zeros. v_head_stride and v_batch_stride step heads and batch entries;
   v_row_stride steps head-dim channels (rows of this layout). */

typedef struct flashgen_fwd_args {
  /* sizeof(flashgen_fwd_args_t) as the caller compiled it; set by flashgen_fwd_args_init. */
  size_t struct_size;

  flashgen_dtype_t dtype;
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse; /* optional: NULL skips writing the log-sum-exp */

  int64_t batch;
  int64_t seqlen_q; /* varlen: the longest sequence */
  int64_t seqlen_k; /* varlen: total_k; paged: ignored (max_pages_per_seq * page_size) */
  int64_t num_heads_q;
  int64_t num_heads_kv; /* num_heads_q must be a multiple of it (MQA/GQA) */
  int64_t head_dim_qk;
  int64_t head_dim_v;

  /* Strides in elements (batch strides unused when varlen; k/v batch strides are page
     strides when paged). */
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t out_batch_stride, out_row_stride, out_head_stride;

  /* Variable length: int32 (batch + 1) prefix sums; q, k, v, out are then packed
     (total, heads, head_dim) and lse is (num_heads_q, total_q). */
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  int64_t total_q;

  /* KV cache: keys used per batch entry (seqused_k[b] + seqused_k_add) and the cache entry
     of each batch entry (kv_batch_idx, into kv_batch_count entries); optional. */
  const int32_t* seqused_k;
  int64_t seqused_k_add;
  const int32_t* kv_batch_idx;
  int64_t kv_batch_count;

  /* Paged KV (needs a *_paged kernel): k, v are (num_pages, page_size, num_heads_kv, dim);
     block_table is int32 (batch, max_pages_per_seq). Any page_size >= 1. */
  const int32_t* block_table;
  int64_t block_table_batch_stride;
  int64_t max_pages_per_seq;
  int64_t page_size;
  int64_t num_pages;

  float softmax_scale; /* 0: 1/sqrt(head_dim_qk) */
  /* Causal mask aligned to the bottom-right corner: query row i sees keys
     j <= i + seqlen_k - seqlen_q. Rows that see no key get out = 0, lse = +inf. */
  int causal;
  /* Sliding window: row i sees keys i + d - window_left <= j <= i + d + window_right
     (d = seqlen_k - seqlen_q); negative means unbounded. */
  int64_t window_left;
  int64_t window_right;
  float softcap; /* > 0: logits = softcap * tanh(scores * softmax_scale / softcap) */
  /* ALiBi: logits -= slope * |i + d - j|; float32 (batch, num_heads_q), batch stride may be 0. */
  const float* alibi_slopes;
  int64_t alibi_batch_stride;
  /* Attention sinks: one float32 logit per query head added to the softmax denominator. */
  const float* sinks;

  /* Dropout (needs a *_dropout kernel): probability, and the Philox seed and offset. */
  float dropout_p;
  uint64_t philox_seed;
  uint64_t philox_offset;

  /* Split-KV: 0 picks the count from the shape and the SM count (1 without a workspace);
     > 1 needs workspace of flashgen_fwd_workspace_size() bytes. The Hopper (sm90) kernels ask
     for a few bytes of workspace too: their persistent grid balances tiles through a counter
     there (without it they run one CTA per tile, a few percent slower). */
  int64_t num_splits;
  void* workspace;
  size_t workspace_bytes;

  /* FP8 (dtype FLASHGEN_DTYPE_E4M3, sm90 *_e4m3_* kernels): q and k e4m3 in the usual layout,
     v e4m3 in the PV layout above, out in out_dtype (FP16 or BF16; the default BF16), and the
     dequantisation scales of each. Softcap, ALiBi, dropout and paged KV are not available in FP8. */
  flashgen_dtype_t out_dtype;
  flashgen_fp8_scale_t q_scale;
  flashgen_fp8_scale_t k_scale;
  flashgen_fp8_scale_t v_scale;

  /* FP8 KV cache (decode_sm80_e4m3_* kernels): nonzero when k and v are e4m3 while q and out are
     dtype (FP16 or BF16); any number of query tokens and GQA group, no dropout, no cu_seqlens,
     head_dim_qk = head_dim_v. k_scale and v_scale dequantise the cache: the real value is
     scale * x at scale[entry * batch_stride + head_kv * head_stride + (row / block_rows) *
     block_stride], entry being the page (paged) or the cache entry (kv_batch_idx[b], else b) and
     row the key's row within it; zero strides share (per kv head: batch_stride = block_stride = 0;
     per page: batch_stride = num_heads_kv, head_stride = 1). NULL scale: 1. */
  int kv_cache_e4m3;
} flashgen_fwd_args_t;

/* Fills every field with its default (zeros, no window: window_left = window_right = -1). */
FLASHGEN_API void flashgen_fwd_args_init(flashgen_fwd_args_t* args);

/* Forward attention on the current CUDA device and the given stream. */
FLASHGEN_API flashgen_status_t flashgen_fwd(const flashgen_fwd_args_t* args, cudaStream_t stream);

/* Workspace bytes flashgen_fwd needs for these arguments (0 when it will not split), and the
   split count it will use. */
FLASHGEN_API flashgen_status_t flashgen_fwd_workspace_size(const flashgen_fwd_args_t* args, size_t* bytes,
                                                           int64_t* num_splits);

/* Backward attention: dq, dk, dv (and the sinks' gradient) of the forward call described by
   `fwd` (the same q, k, v, out, lse, shapes, strides and options; dropout with the same
   Philox seed and offset, which regenerates the same mask). lse is required. Paged KV,
   kv_batch_idx, seqused_k and num_splits do not apply to the backward pass. */
typedef struct flashgen_bwd_args {
  size_t struct_size; /* sizeof(flashgen_bwd_args_t); set by flashgen_bwd_args_init */
  flashgen_fwd_args_t fwd;
  int64_t max_seqlen_k; /* varlen: the longest key sequence (fwd.seqlen_k is then total_k) */

  const void* dout; /* like out */
  int64_t dout_batch_stride, dout_row_stride, dout_head_stride;
  void* dq; /* like q */
  int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
  void* dk; /* like k: num_heads_kv heads, reduced over each group's query heads */
  int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
  void* dv; /* like v */
  int64_t dv_batch_stride, dv_row_stride, dv_head_stride;
  /* float32 (num_heads_q,): the sinks' gradient, written when fwd.sinks is set (may be NULL). */
  float* dsinks;

  /* Nonzero: bitwise-reproducible gradients (dq's partial sums are added in a fixed order);
     zero: dq accumulates with unordered atomics, slightly faster. */
  int deterministic;
  /* flashgen_bwd_workspace_size() bytes, 16-byte aligned; flashgen_bwd initialises it. */
  void* workspace;
  size_t workspace_bytes;
} flashgen_bwd_args_t;

/* Defaults: zeros, fwd initialised by flashgen_fwd_args_init. */
FLASHGEN_API void flashgen_bwd_args_init(flashgen_bwd_args_t* args);
FLASHGEN_API flashgen_status_t flashgen_bwd_workspace_size(const flashgen_bwd_args_t* args, size_t* bytes);
FLASHGEN_API flashgen_status_t flashgen_bwd(const flashgen_bwd_args_t* args, cudaStream_t stream);

/* Writes the dropout keep-mask (1 = kept) that the *_dropout kernels apply for (seed,
   offset), as uint8 (batch, num_heads, seqlen_q, seqlen_k): a test and debugging aid. */
FLASHGEN_API flashgen_status_t flashgen_dropout_mask(uint64_t philox_seed, uint64_t philox_offset, float dropout_p,
                                                     int64_t batch, int64_t num_heads, int64_t seqlen_q,
                                                     int64_t seqlen_k, uint8_t* mask, cudaStream_t stream);

/* Appends new keys/values to a KV cache in place (rotary applied to the keys when cos/sin
   are given), and optionally writes rotated queries: flash_attn_with_kvcache's first half. */
typedef struct flashgen_kv_append_args {
  size_t struct_size;
  flashgen_dtype_t dtype;
  int64_t batch;
  int64_t seqlen_new;
  int64_t num_heads_kv;
  int64_t head_dim_qk;
  int64_t head_dim_v;
  const void* k_new; /* (batch, seqlen_new, num_heads_kv, head_dim_qk) */
  const void* v_new;
  int64_t k_new_batch_stride, k_new_row_stride, k_new_head_stride;
  int64_t v_new_batch_stride, v_new_row_stride, v_new_head_stride;
  void* k_cache; /* (kv_batch_count, capacity, ...) or paged (num_pages, page_size, ...) */
  void* v_cache;
  int64_t k_cache_batch_stride, k_cache_row_stride, k_cache_head_stride;
  int64_t v_cache_batch_stride, v_cache_row_stride, v_cache_head_stride;
  const int32_t* cache_seqlens; /* (batch,): where the new rows go */
  int64_t capacity;             /* rows per cache entry (max_pages_per_seq * page_size if paged) */
  const int32_t* kv_batch_idx;
  int64_t kv_batch_count;
  const int32_t* block_table;
  int64_t block_table_batch_stride;
  int64_t page_size;
  int64_t num_pages;
  /* Rotary embedding: cos/sin (rotary_seqlen, rotary_dim / 2) in dtype; NULL for none. */
  const void* rotary_cos;
  const void* rotary_sin;
  int64_t rotary_dim;
  int64_t rotary_seqlen;
  int rotary_interleaved;
  /* Optional rotated copy of q: (batch, seqlen_q, num_heads_q, head_dim_qk). Query row i sits at
     position cache_seqlens[b] + i when q_positions_per_row, else at cache_seqlens[b]. */
  const void* q;
  void* q_out;
  int64_t seqlen_q, num_heads_q;
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t q_out_batch_stride, q_out_row_stride, q_out_head_stride;
  int q_positions_per_row;
  /* FP8 cache: nonzero when k_cache and v_cache are e4m3 (k_new, v_new, q stay dtype). Each new
     row is stored as saturate_e4m3(x / scale), with the scale the decode kernels will read for
     that row (flashgen_fwd_args_t.kv_cache_e4m3 says how it is addressed); NULL scale: 1. */
  int cache_e4m3;
  flashgen_fp8_scale_t k_scale;
  flashgen_fp8_scale_t v_scale;
} flashgen_kv_append_args_t;

FLASHGEN_API void flashgen_kv_append_args_init(flashgen_kv_append_args_t* args);
FLASHGEN_API flashgen_status_t flashgen_kv_append(const flashgen_kv_append_args_t* args, cudaStream_t stream);

/* FP8 quantisation of a bf16/fp16 (batch, seqlen, heads, head_dim) tensor (or varlen
   (total, heads, head_dim) with cu_seqlens): scale = amax / 448 over each group the granularity
   names (1 where the group is all zeros), out = saturate_e4m3(x / scale). */
typedef enum flashgen_fp8_granularity {
  FLASHGEN_FP8_PER_TENSOR = 0, /* scale: (1,) */
  FLASHGEN_FP8_PER_HEAD = 1,   /* scale: (batch, num_heads) */
  FLASHGEN_FP8_PER_BLOCK = 2,  /* scale: (batch, num_heads, ceil(seqlen / block_rows)) */
} flashgen_fp8_granularity_t;

typedef enum flashgen_fp8_layout {
  FLASHGEN_FP8_LAYOUT_ROWS = 0, /* out like x: (batch, seqlen, heads, head_dim) / (total, heads, dim) */
  FLASHGEN_FP8_LAYOUT_PV = 1,   /* the v layout of the FP8 attention kernels (see above) */
} flashgen_fp8_layout_t;

typedef struct flashgen_fp8_quantize_args {
  size_t struct_size; /* set by flashgen_fp8_quantize_args_init */
  flashgen_dtype_t dtype; /* of x: FP16 or BF16 */
  const void* x;
  int64_t batch;
  int64_t seqlen; /* varlen: the longest sequence */
  int64_t num_heads;
  int64_t head_dim;
  int64_t x_batch_stride, x_row_stride, x_head_stride; /* elements; batch stride unused when varlen */
  const int32_t* cu_seqlens; /* varlen: int32 (batch + 1) prefix sums, else NULL */
  int64_t total;             /* varlen: rows of x */
  flashgen_fp8_granularity_t granularity;
  int64_t block_rows; /* FLASHGEN_FP8_PER_BLOCK: rows per scale */
  flashgen_fp8_layout_t layout;
  void* out; /* e4m3 */
  /* Element strides of out: ROWS: like x's; PV: batch entry, head-dim channel (row), head. */
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  float* scale; /* contiguous, shaped as the granularity says */
  /* FLASHGEN_FP8_PER_TENSOR: flashgen_fp8_quantize_workspace_size() bytes of device memory. */
  void* workspace;
  size_t workspace_bytes;
} flashgen_fp8_quantize_args_t;

FLASHGEN_API void flashgen_fp8_quantize_args_init(flashgen_fp8_quantize_args_t* args);
FLASHGEN_API size_t flashgen_fp8_quantize_workspace_size(const flashgen_fp8_quantize_args_t* args);
FLASHGEN_API flashgen_status_t flashgen_fp8_quantize(const flashgen_fp8_quantize_args_t* args, cudaStream_t stream);

/* A description of the last error raised on this thread ("" if none). */
FLASHGEN_API const char* flashgen_last_error(void);

/* The compiled kernel instantiations, by canonical name (e.g. "fwd_sm80_bf16_hdim128_causal"). */
FLASHGEN_API int flashgen_num_kernels(void);
FLASHGEN_API const char* flashgen_kernel_name(int index);

/* The CUDA architectures the library was compiled for, e.g. "80;90a". */
FLASHGEN_API const char* flashgen_cuda_archs(void);
FLASHGEN_API const char* flashgen_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLASHGEN_FLASHGEN_H_ */
