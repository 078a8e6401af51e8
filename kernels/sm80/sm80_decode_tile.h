// Shapes of the decode kernel, shared by its instantiations and the host's plan (split count,
// occupancy), so both always agree.
#pragma once

namespace flashgen::sm80::decode {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kBlockN = 64;                   // keys per pipeline stage
constexpr int kStageBudgetBytes = 96 * 1024;  // two CTAs per SM on Hopper, one on A100

// Packed rows (query tokens x query heads of a group) one CTA takes: 16, or 32 when more and
// the head dim leaves the registers for two row tiles (at 256, two spill heavily).
constexpr int rows_per_cta(int packed_rows, int head_dim) { return packed_rows <= 16 || head_dim > 128 ? 16 : 32; }

// K and V tiles of one stage, plus per-key dequantisation scales for an FP8 cache.
constexpr int stage_bytes(bool kv_e4m3, int head_dim) {
  return 2 * kBlockN * head_dim * (kv_e4m3 ? 1 : 2) + (kv_e4m3 ? 2 * kBlockN * 4 : 0);
}

constexpr int num_stages(bool kv_e4m3, int head_dim) {
  const int stages = kStageBudgetBytes / stage_bytes(kv_e4m3, head_dim);
  return stages < 2 ? 2 : stages > 8 ? 8 : stages;
}

// The merge of the warps' partial outputs reuses the pipeline's memory: (warp, 16 rows,
// head_dim) floats and three floats per (warp, row).
constexpr int merge_bytes(int head_dim) { return kWarps * 16 * head_dim * 4 + 3 * kWarps * 16 * 4; }

constexpr int smem_bytes(bool kv_e4m3, int head_dim) {
  const int pipeline = num_stages(kv_e4m3, head_dim) * stage_bytes(kv_e4m3, head_dim);
  return pipeline > merge_bytes(head_dim) ? pipeline : merge_bytes(head_dim);
}

}  // namespace flashgen::sm80::decode
