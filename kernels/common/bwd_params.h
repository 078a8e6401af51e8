// Torch-free backward parameters: the forward call's parameters plus the gradients.
#pragma once

#include <cstdint>

#include "common/fwd_params.h"

namespace flashgen {

struct BwdParams : FwdParams {
  int max_seqlen_k;  // grid extent over key blocks (seqlen_k when not varlen)

  const void* dout;  // like out
  int64_t dout_batch_stride, dout_row_stride, dout_head_stride;
  void* dq;  // like q
  int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
  void* dk;  // like k (num_heads_kv heads)
  int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
  void* dv;  // like v
  int64_t dv_batch_stride, dv_row_stride, dv_head_stride;
  float* dsinks;  // (num_heads_q,) or nullptr

  // Workspace. Row r of the batch (r = SeqInfo::row_base + i) of head h lives at
  //   dq_accum[(r * num_heads_q + h) * dq_accum_dim + c]   (fp32 partial sums of dQ)
  //   softmax_d[h * total_q + r]                           (rowsum(dO * O))
  float* dq_accum;
  int dq_accum_dim;  // the padded head_dim_qk
  float* softmax_d;
  // Deterministic mode: one counter per (batch, head_q, query block); the CTA of key block n
  // adds its dQ part once the counter says every earlier key block has added its own.
  int* dq_semaphore;
  int num_m_blocks;  // query blocks per (batch, head), the semaphore's last extent
  bool deterministic;
};

}  // namespace flashgen
