// Shapes of the decode kernels, shared by their instantiations and the host's plan (split count,
// occupancy), so both always agree. Two kernels: one for 16-bit caches (sm80_decode_kernel.hpp)
// and one for FP8 caches (sm80_decode_fp8_kernel.hpp).
#pragma once

namespace flashgen::sm80::decode {

// Pipeline memory per CTA: two CTAs per SM on Hopper (one on A100); three stages of 32 KiB
// (16-bit cache, head dim 128, 64 keys) or of 33 KiB (FP8, head dim 128, 128 keys).
constexpr int kStageBudgetBytes = 104 * 1024;

// ---- 16-bit caches: 4 warps, rows in 16-row tiles (the A operand of S = Q K^T) ----

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;

// Packed rows (query tokens x query heads of a group) one CTA takes: 16, or 32 when more and
// the head dim leaves the registers for two row tiles (at 256, two spill heavily).
constexpr int rows_per_cta(int packed_rows, int head_dim) { return packed_rows <= 16 || head_dim > 128 ? 16 : 32; }

// Keys per pipeline stage.
constexpr int block_n(int /*head_dim*/) { return 64; }

constexpr int stage_bytes(int head_dim) { return 2 * block_n(head_dim) * head_dim * 2; }

constexpr int clamp_stages(int stages) { return stages < 2 ? 2 : stages > 8 ? 8 : stages; }

constexpr int num_stages(int head_dim) { return clamp_stages(kStageBudgetBytes / stage_bytes(head_dim)); }

// The merge of the warps' partial outputs reuses the pipeline's memory: (warp, 16 rows,
// head_dim) floats and three floats per (warp, row).
constexpr int merge_bytes(int warps, int rows, int head_dim) { return warps * rows * (head_dim + 3) * 4; }

// Splits that combine inside a thread-block cluster (sm90; FLASHGEN_DECODE_COMBINE): each CTA
// leaves its merged partial, (rows, head_dim) floats and an LSE per row, after the merge buffers.
constexpr int kMaxClusterSplits = 16;
constexpr int cluster_partial_bytes(int rows, int head_dim) { return rows * (head_dim + 1) * 4; }

// After the pipeline: one 8-byte mbarrier per stage (the TMA loader's, sm90/sm90_decode_tma.hpp).
constexpr int smem_bytes(int head_dim) {
  const int pipeline = num_stages(head_dim) * (stage_bytes(head_dim) + 8);
  const int merge = merge_bytes(kWarps, 16, head_dim) + cluster_partial_bytes(32, head_dim);
  return pipeline > merge ? pipeline : merge;
}

// ---- FP8 (e4m3) caches: keys are the M side of both products (S^T = K Q^T, O^T = V^T P^T), so
// the rows are the 8-wide N side: 8 or 16 rows per CTA, and each warp owns 16 keys of a stage.
// Half the MMAs and half the accumulator registers of 16-row tiles at GQA <= 8, which lets eight
// warps share an SM partition's latency where the 16-bit kernel runs four.

// At head dim 256 two row blocks spill (their accumulators and Q fragments alone take 192
// registers), so larger groups take more CTAs of 8 rows there.
constexpr int fp8_rows_per_cta(int packed_rows, int head_dim) { return packed_rows <= 8 || head_dim > 128 ? 8 : 16; }

constexpr int fp8_block_n(int head_dim) { return head_dim <= 128 ? 128 : 64; }

constexpr int fp8_warps(int head_dim) { return fp8_block_n(head_dim) / 16; }

// K and V tiles of one stage plus per-key K and V dequantisation scales.
constexpr int fp8_stage_bytes(int head_dim) { return 2 * fp8_block_n(head_dim) * head_dim + 2 * fp8_block_n(head_dim) * 4; }

constexpr int fp8_num_stages(int head_dim) { return clamp_stages(kStageBudgetBytes / fp8_stage_bytes(head_dim)); }

// After the pipeline: one 8-byte mbarrier per stage (the TMA loader's, sm90/sm90_decode_tma.hpp).
constexpr int fp8_smem_bytes(int head_dim, int rows) {
  const int pipeline = fp8_num_stages(head_dim) * (fp8_stage_bytes(head_dim) + 8);
  const int merge = merge_bytes(fp8_warps(head_dim), rows, head_dim) + cluster_partial_bytes(rows, head_dim);
  return pipeline > merge ? pipeline : merge;
}

// ---- Loaders (sm90): FP8 caches take the TMA loader wherever it can serve them; 16-bit caches
// where at most kTma16MaxStreams (sequence, kv head) pairs share the GPU (sm80_decode_launch.hpp
// says what that was measured against).
constexpr long long kTma16MaxStreams = 16;

// Pages the TMA loader reads (one box per page or stage, sm90_decode_tma.hpp): a power of two of
// at least 16 keys.
constexpr bool tma_page_size_ok(int page_size) { return page_size >= 16 && (page_size & (page_size - 1)) == 0; }

// The host plan's guess of whether a call takes the TMA loader when FLASHGEN_DECODE_TMA(_16BIT)
// is auto (the launch decides for real: it also asks for sm_90 code in the build and aligned,
// 16-byte strided caches): a Hopper GPU, head dims 64 / 128, dense or pages of a power of two
// >= 16 keys (page_size 0: dense).
constexpr bool plan_takes_tma(bool kv_e4m3, int head_dim, long long streams, int compute_capability, int page_size) {
  return compute_capability / 10 == 9 && (head_dim == 64 || head_dim == 128) &&
         (page_size == 0 || tma_page_size_ok(page_size)) &&
         (kv_e4m3 || streams <= kTma16MaxStreams);
}

// Both kernels, as the host plans a call.
constexpr int plan_rows_per_cta(bool kv_e4m3, int packed_rows, int head_dim) {
  return kv_e4m3 ? fp8_rows_per_cta(packed_rows, head_dim) : rows_per_cta(packed_rows, head_dim);
}
constexpr int plan_block_n(bool kv_e4m3, int head_dim) { return kv_e4m3 ? fp8_block_n(head_dim) : block_n(head_dim); }

}  // namespace flashgen::sm80::decode
