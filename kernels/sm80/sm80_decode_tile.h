// Shapes of the decode kernel, shared by its instantiations and the host's plan (split count,
// occupancy), so both always agree.
#pragma once

namespace flashgen::sm80::decode {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
// Pipeline memory per CTA: two CTAs per SM on Hopper (one on A100); three stages of 32 KiB
// (16-bit cache, head dim 128, 64 keys) or of 33 KiB (FP8, 128 keys).
constexpr int kStageBudgetBytes = 104 * 1024;

// Packed rows (query tokens x query heads of a group) one CTA takes: 16, or 32 when more and
// the head dim leaves the registers for two row tiles (at 256, two spill heavily).
constexpr int rows_per_cta(int packed_rows, int head_dim) { return packed_rows <= 16 || head_dim > 128 ? 16 : 32; }

// Keys per pipeline stage. FP8 caches at one row tile take 128: their per-key work is larger, so
// halving the per-stage overhead (barrier, wait, loop) and doubling the independent MMA chains
// per warp pays; their stages are then as large as a 16-bit cache's 64-key ones.
constexpr int block_n(bool kv_e4m3, int head_dim, int row_tiles) {
  return kv_e4m3 && head_dim <= 128 && row_tiles == 1 ? 128 : 64;
}

// K and V tiles of one stage, plus per-key dequantisation scales for an FP8 cache.
constexpr int stage_bytes(bool kv_e4m3, int head_dim, int row_tiles) {
  const int n = block_n(kv_e4m3, head_dim, row_tiles);
  return 2 * n * head_dim * (kv_e4m3 ? 1 : 2) + (kv_e4m3 ? 2 * n * 4 : 0);
}

constexpr int num_stages(bool kv_e4m3, int head_dim, int row_tiles) {
  const int stages = kStageBudgetBytes / stage_bytes(kv_e4m3, head_dim, row_tiles);
  return stages < 2 ? 2 : stages > 8 ? 8 : stages;
}

// The merge of the warps' partial outputs reuses the pipeline's memory: (warp, 16 rows,
// head_dim) floats and three floats per (warp, row).
constexpr int merge_bytes(int head_dim) { return kWarps * 16 * head_dim * 4 + 3 * kWarps * 16 * 4; }

constexpr int smem_bytes(bool kv_e4m3, int head_dim, int row_tiles) {
  const int pipeline = num_stages(kv_e4m3, head_dim, row_tiles) * stage_bytes(kv_e4m3, head_dim, row_tiles);
  return pipeline > merge_bytes(head_dim) ? pipeline : merge_bytes(head_dim);
}

}  // namespace flashgen::sm80::decode
