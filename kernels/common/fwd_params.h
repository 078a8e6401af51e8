// Torch-free forward parameters shared by every forward kernel family.
#pragma once

#include <cstdint>

namespace flashgen {

// FP8 dequantisation scales (flashgen_fp8_scale_t): value = scale * x_e4m3, one float per
// (batch entry, head, block of block_rows rows from the sequence's start); zero strides share.
struct Fp8Scale {
  const float* scale;  // nullptr: 1
  int64_t batch_stride, head_stride, block_stride;
  int block_rows;
};

struct FwdParams {
  // Fixed length: q (batch, seqlen_q, num_heads_q, head_dim_qk), k (batch, seqlen_k, ...).
  // Variable length (cu_seqlens_q set): q (total_q, num_heads_q, head_dim_qk), k (total_k, ...).
  // Paged (block_table set): k, v (num_pages, page_size, num_heads_kv, head_dim).
  const void* q;
  const void* k;
  const void* v;
  void* out;   // like q, with head_dim_v
  float* lse;  // fixed: (batch, num_heads_q, seqlen_q); varlen: (num_heads_q, total_q); or nullptr

  int batch;
  int seqlen_q;  // fixed length, or the maximum over the batch when varlen
  int seqlen_k;
  int num_heads_q;
  int num_heads_kv;
  int group_size;  // num_heads_q / num_heads_kv
  // Pack the group_size query heads sharing a KV head into the rows of one tile (row R is query
  // R / group_size of head head_kv * group_size + R % group_size): one read of K/V serves the
  // whole group, and a decode step fills a tile. Grid y then runs over KV heads.
  bool pack_gqa;
  // SM80-path kernels of padded head dims above 128: run the narrow tile (64 rows, 4 warps)
  // instead of the wide one (128 rows, 8 warps). Set by the planner (sm80::fwd_narrow_rows or
  // FLASHGEN_SM80_FWD_ROWS), which sizes pack_gqa and num_splits with the same tile.
  bool sm80_narrow;
  // sm90 causal kernels at head dim 64, which hold a 192-row (three consumers) and a 128-row
  // instantiation: run the 192-row one. Set by the planner (sm90::fwd_tall_rows or
  // FLASHGEN_SM90_FWD_ROWS), which sizes split workspaces with the same tile; true for the
  // other sm90 kernels, which hold one.
  bool sm90_tall;
  // sm90 FP8 kernels at head dim 128 (sm90::fwd_has_long_keys): run the 192-key instantiation.
  // Set by the planner (FLASHGEN_SM90_FP8_KEYS) only where the K and V scales allow it.
  bool sm90_long_keys;
  // Decode kernels (sm80/sm80_decode_common.hpp, cta_work): grid x runs over the splits instead
  // of the KV heads (x blocks of packed rows). Set by the decode planner where few (sequence, KV
  // head) pairs share the GPU.
  bool decode_splits_in_x;
  int head_dim_qk;
  int head_dim_v;
  int total_q;  // rows of q over the whole batch: batch * seqlen_q, or total_q when varlen

  // Strides in elements. Batch strides are unused when varlen; k/v batch strides are page
  // strides when paged.
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  int64_t lse_batch_stride, lse_head_stride;

  // Variable length: (batch + 1) prefix sums of the sequence lengths, device int32.
  const int* cu_seqlens_q;
  const int* cu_seqlens_k;
  // KV cache: keys in use per batch entry (seqused_k[b] + seqused_k_add), and the cache row
  // of each batch entry (kv_batch_idx[b]); both optional.
  const int* seqused_k;
  int seqused_k_add;
  const int* kv_batch_idx;
  int kv_batch_count;  // entries along k's batch dim (bounds kv_batch_idx)
  // Paged KV: block_table (batch, max_pages) of page indices into num_pages pages of
  // page_size keys. seqlen_k is then the capacity max_pages * page_size.
  const int* block_table;
  int64_t block_table_batch_stride;
  int page_size;
  int num_pages;

  // Softmax: scores are turned into logits as softcap * tanh(s * softmax_scale / softcap)
  // when softcap > 0, else s * softmax_scale. logit_scale is the factor applied to the raw
  // (possibly tanh-capped) score and logit_scale_log2 = logit_scale * log2(e).
  float softmax_scale;
  float softcap;
  float softcap_prescale;  // softmax_scale / softcap
  float logit_scale;
  float logit_scale_log2;

  // Sliding window: query i sees keys j with i + d - window_left <= j <= i + d + window_right,
  // d = seqlen_k - seqlen_q; a negative bound means unbounded. Causal kernels fix right = 0.
  int window_left;
  int window_right;

  // ALiBi: logit += -slope * |i + d - j|; slopes (batch, heads) float32, batch stride may be 0.
  const float* alibi_slopes;
  int64_t alibi_batch_stride;

  // Attention sinks: one logit per query head added to the softmax denominator; float32.
  const float* sinks;

  // Dropout on the attention probabilities (dropout kernels only).
  float dropout_p;
  float dropout_scale;        // 1 / (1 - dropout_p)
  uint32_t dropout_threshold;  // a 16-bit uniform below this drops the element
  uint64_t philox_seed;
  uint64_t philox_offset;

  // Split-KV: each split writes fp32 partial outputs and LSEs, combined by a second kernel.
  int num_splits;
  float* out_accum;  // (num_splits, num_heads_q, total_q, head_dim_v)
  float* lse_accum;  // (num_splits, num_heads_q, total_q)

  // Persistent (sm90) grid: at most one CTA per SM (num_sms), and an int the launch zeroes and
  // the CTAs take their next tile from, so that CTAs that drew long (causal) tiles take fewer.
  // nullptr: a fixed round-robin order.
  int num_sms;
  int* tile_counter;

  // FP8 (e4m3 kernels): out is fp16 when out_fp16, else bf16; v is in the PV layout of
  // flashgen.h (keys contiguous, permuted within groups of 16, sequences 16-aligned), whose
  // head-dim channels are v_row_stride apart and whose key extent per entry is v_cols.
  bool out_fp16;
  int v_cols;
  Fp8Scale q_scale, k_scale, v_scale;
};

}  // namespace flashgen
