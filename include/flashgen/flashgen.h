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

#define FLASHGEN_ABI_VERSION 1

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
} flashgen_dtype_t;

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
  int64_t seqlen_q;
  int64_t seqlen_k;
  int64_t num_heads_q;
  int64_t num_heads_kv; /* num_heads_q must be a multiple of it (MQA/GQA) */
  int64_t head_dim_qk;
  int64_t head_dim_v;

  /* Strides in elements. */
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t out_batch_stride, out_row_stride, out_head_stride;

  float softmax_scale;
  /* Causal mask aligned to the bottom-right corner: query row i sees keys
     j <= i + seqlen_k - seqlen_q. Rows that see no key get out = 0, lse = +inf. */
  int causal;
} flashgen_fwd_args_t;

/* Fills every field with its default (zeros, softmax_scale = 0 meaning 1/sqrt(head_dim_qk)). */
FLASHGEN_API void flashgen_fwd_args_init(flashgen_fwd_args_t* args);

/* Forward attention on the current CUDA device and the given stream. */
FLASHGEN_API flashgen_status_t flashgen_fwd(const flashgen_fwd_args_t* args, cudaStream_t stream);

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
