// Torch-free backward parameters: the forward call's parameters plus the gradients.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "common/bwd_tail_split.h"
#include "common/fwd_params.h"
#include "common/tile_order.h"

namespace flashgen {

// Rows of dq_accum padding per batch entry (BwdParams::dq_accum): at least any kernel's block_m.
constexpr int kDqAccumPadRows = 128;

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
  // For the SM80-path backward dq_accum holds kDqAccumPadRows more rows per batch entry than
  // total_q: it keeps each query block's tile in its own order (sm80_bwd_dq.hpp, DqTile), whole
  // blocks at rows row_base + batch * kDqAccumPadRows + m * block_m, so that even a sequence's
  // last, partial block owns all of its rows.
  float* dq_accum;
  int dq_accum_dim;  // the padded head_dim_qk
  int64_t dq_accum_rows;  // total_q (+ batch * kDqAccumPadRows for the sm80 kernels)
  // The sm90 backward's TMA-reduced dQ tiles store each 32-column block's 4-float chunks permuted
  // (columns 8 n + 4 b .. + 3 at chunk n % 4 + 4 b), which makes their staging stores free of
  // bank conflicts; the dQ conversion undoes it. Set by that launcher only.
  bool dq_accum_permuted = false;
  float* softmax_d;
  // Deterministic mode: one counter per (batch, head_q, query block); the CTA of key block n
  // adds its dQ part once the counter says every earlier key block has added its own.
  int* dq_semaphore;
  int num_m_blocks;  // query blocks per (batch, head), the semaphore's last extent
  bool deterministic;
  // The 1-D grid's order over (key block rank, KV head, batch entry): units are (KV head, batch
  // entry), KV head fastest, per_unit the key blocks of the longest sequence.
  SectionedOrder key_order;
  // Hopper keys-split backward: the last key blocks of key_order run as several CTAs each
  // (common/bwd_tail_split.h; tail.blocks == 0: none), and a persistent grid of one CTA per SM
  // may run the blocks (and pieces) in turn (sm90_bwd_launch.hpp; the plan sets `persistent`
  // where every block is equally long), each CTA taking its next one from item_counter. Their
  // workspace, right after dq_accum's bytes and zeroed with them by the preprocess
  // (grid_zero_bytes): per split block a slot of 2 * block_n * head_dim floats (dK's sum, then
  // dV's), a counter of finished pieces per split block, then (persistent) the item counter.
  TailSplit tail;
  float* tail_accum = nullptr;
  int* tail_counters = nullptr;
  bool persistent = false;
  int* item_counter = nullptr;
  int64_t grid_zero_bytes = 0;
};

// Sets params.key_order for key blocks of block_n keys (block_m queries a step) and returns the
// grid's CTA count (0: no keys). Under a causal-like mask (tile_lengths_vary) key blocks see
// different numbers of query blocks and go longest first over sections of KV heads whose Q, dO,
// LSE/D and fp32 dQ (read again by every key block of the head) fit in L2 together; otherwise the
// order is unit-major. (Measured neutral on H100 at hdim 128, where the forward gained:
// bench/NOTES.md.)
inline int64_t set_bwd_key_order(BwdParams& params, int block_m, int block_n, int elem_bytes, bool is_causal) {
  const bool lengths_vary = tile_lengths_vary(is_causal, params.window_left, params.window_right);
  const int n_blocks = (params.max_seqlen_k + block_n - 1) / block_n;
  const int64_t units = int64_t(params.num_heads_kv) * params.batch;
  const int64_t unit_bytes = int64_t(params.seqlen_q) * params.group_size *
                             ((params.head_dim_qk + params.head_dim_v) * elem_bytes + 4 * params.head_dim_qk + 8);
  // A section's work must outlast its longest key block when spread over the SMs, or its
  // longest blocks, started last, finish alone: under a causal mask a unit's blocks average half
  // the longest, so at least 2 * SMs / n_blocks units (simulated: 1.046-1.049 of the ideal
  // makespan -> 1.012-1.013 at head dim 128 8k and 256 4k; measured +3.7% / +3.2% there on the
  // SM80 path, -0.6% at 128 2k as simulated; bench/NOTES.md, sessions 20-21).
  const int min_units = params.num_sms > 0 ? (2 * params.num_sms + n_blocks - 1) / n_blocks : 1;
  int section = lengths_vary ? section_units(unit_bytes, int(units), int64_t(32) << 20, min_units) : 1;
  if (lengths_vary && section > 1 && params.cu_seqlens_q == nullptr && params.window_left < 0) {
    // Fixed lengths, keys bounded on the right only: key block n sees the query blocks from the
    // first whose last row reaches its first key (as sm80::query_blocks_of_key_block), a step
    // each per query head of the group, plus about two steps of fixed cost (load, epilogue).
    // Searched once per shape (a repeated call only looks it up).
    const int right = is_causal ? 0 : params.window_right;
    const int shift = params.seqlen_k - params.seqlen_q + right;
    const std::array<int, 9> shape{params.seqlen_q, shift, block_m, block_n, n_blocks, params.group_size,
                                   int(units), section, params.num_sms};
    static std::mutex mutex;
    static std::map<std::array<int, 9>, int> searched;
    const std::lock_guard<std::mutex> lock(mutex);
    const auto it = searched.find(shape);
    if (it != searched.end()) {
      section = it->second;
    } else {
      const int m_blocks = (params.seqlen_q + block_m - 1) / block_m;
      std::vector<int64_t> cost(n_blocks);
      for (int n = 0; n < n_blocks; ++n) {
        const int first = n * block_n - shift;  // the first query that sees key n * block_n
        const int m_lo = first <= 0 ? 0 : first / block_m;
        cost[n] = int64_t(m_lo < m_blocks ? m_blocks - m_lo : 0) * params.group_size + 2;
      }
      if (searched.size() >= 4096) { searched.clear(); }
      section = searched.emplace(shape, searched_section(cost, int(units), section, params.num_sms)).first->second;
    }
  }
  params.key_order = SectionedOrder{n_blocks, int(units), section};
  return int64_t(n_blocks) * units;
}

}  // namespace flashgen
