// Where one batch entry's rows live: fixed length, variable length (cu_seqlens), KV cache
// (seqused_k, kv_batch_idx) or paged KV (block_table). Computed once at kernel start.
// Lengths are clamped to what the tensors hold, so inconsistent metadata that slipped past
// the host checks cannot make the kernel read or write out of bounds.
#pragma once

#include <cute/config.hpp>

#include "common/fwd_params.h"

namespace flashgen {

struct SeqInfo {
  int seqlen_q;
  int seqlen_k;
  int row_base;       // this entry's first row among the total_q rows (LSE, split accumulators)
  int key_row_base;   // varlen: this entry's first row among the total_k key rows, else 0
  int kv_batch;       // this entry's index along k's batch dim (kv_batch_idx), 0 when varlen or paged
  int64_t q_offset;   // element offsets of row 0, head 0
  int64_t out_offset;
  int64_t k_offset;
  int64_t v_offset;
  int64_t lse_offset;
  const int* block_table;  // this entry's page list (paged only)

  CUTE_DEVICE static int clamp(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }

  CUTE_DEVICE SeqInfo(const FwdParams& p, int batch) {
    if (p.cu_seqlens_q != nullptr) {
      const int start = clamp(p.cu_seqlens_q[batch], 0, p.total_q);
      seqlen_q = clamp(p.cu_seqlens_q[batch + 1], start, p.total_q) - start;
      row_base = start;
      q_offset = int64_t(start) * p.q_row_stride;
      out_offset = int64_t(start) * p.out_row_stride;
      lse_offset = start;
    } else {
      seqlen_q = p.seqlen_q;
      row_base = batch * p.seqlen_q;
      q_offset = int64_t(batch) * p.q_batch_stride;
      out_offset = int64_t(batch) * p.out_batch_stride;
      lse_offset = int64_t(batch) * p.lse_batch_stride;
    }
    const bool paged = p.block_table != nullptr;
    key_row_base = 0;
    kv_batch = 0;
    if (p.cu_seqlens_k != nullptr) {
      // Varlen keys: total_k rows when contiguous; the cache capacity when paged.
      const int start = paged ? 0 : clamp(p.cu_seqlens_k[batch], 0, p.seqlen_k);
      const int end = paged ? p.cu_seqlens_k[batch + 1] - p.cu_seqlens_k[batch] : p.cu_seqlens_k[batch + 1];
      seqlen_k = clamp(end, start, p.seqlen_k) - start;
      key_row_base = start;
      k_offset = int64_t(start) * p.k_row_stride;
      v_offset = int64_t(start) * p.v_row_stride;
    } else {
      kv_batch = paged ? 0 : (p.kv_batch_idx != nullptr ? clamp(p.kv_batch_idx[batch], 0, p.kv_batch_count - 1) : batch);
      seqlen_k = p.seqlen_k;
      k_offset = paged ? 0 : int64_t(kv_batch) * p.k_batch_stride;
      v_offset = paged ? 0 : int64_t(kv_batch) * p.v_batch_stride;
    }
    if (p.seqused_k != nullptr) { seqlen_k = clamp(p.seqused_k[batch] + p.seqused_k_add, 0, seqlen_k); }
    block_table = paged ? p.block_table + batch * p.block_table_batch_stride : nullptr;
  }
};

}  // namespace flashgen
