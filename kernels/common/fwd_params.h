// Torch-free forward parameters shared by every forward kernel family.
#pragma once

#include <cstdint>

namespace flashgen {

struct FwdParams {
  const void* q;  // (batch, seqlen_q, num_heads_q, head_dim_qk)
  const void* k;  // (batch, seqlen_k, num_heads_kv, head_dim_qk)
  const void* v;  // (batch, seqlen_k, num_heads_kv, head_dim_v)
  void* out;      // (batch, seqlen_q, num_heads_q, head_dim_v)
  float* lse;     // (batch, num_heads_q, seqlen_q), or nullptr

  int batch;
  int seqlen_q;
  int seqlen_k;
  int num_heads_q;
  int num_heads_kv;
  int group_size;  // num_heads_q / num_heads_kv
  int head_dim_qk;
  int head_dim_v;

  // Strides in elements.
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t out_batch_stride, out_row_stride, out_head_stride;

  float softmax_scale;
  // softmax_scale * log2(e): scores go through exp2 so the scale folds into one FFMA.
  float softmax_scale_log2;
  bool causal;
};

}  // namespace flashgen
