// Tile shapes of the SM80-path forward kernel. Used by the kernel instantiations and by the
// host side (shared-memory checks, split heuristics, launch grids), so both always agree.
#pragma once

namespace flashgen::sm80 {

// Head dims are padded to a multiple of 32 inside the kernel (the padding is zero-filled).
constexpr int padded_head_dim(int head_dim) { return (head_dim + 31) / 32 * 32; }

struct FwdTile {
  int block_m;    // query rows per CTA
  int block_n;    // keys per main-loop iteration
  int num_warps;  // warps split the query rows, 16 rows each per MMA
};

constexpr FwdTile fwd_tile(int head_dim_qk, int head_dim_v) {
  const int d = padded_head_dim(head_dim_qk > head_dim_v ? head_dim_qk : head_dim_v);
  if (d <= 64) { return {/*block_m=*/128, /*block_n=*/128, /*num_warps=*/4}; }
  if (d <= 128) { return {/*block_m=*/128, /*block_n=*/64, /*num_warps=*/4}; }
  return {/*block_m=*/128, /*block_n=*/64, /*num_warps=*/8};
}

// Q tile plus one K and one V tile in the input dtype; the output tile reuses that space.
constexpr int fwd_smem_bytes(int head_dim_qk, int head_dim_v, int element_bytes) {
  const FwdTile t = fwd_tile(head_dim_qk, head_dim_v);
  const int dqk = padded_head_dim(head_dim_qk), dv = padded_head_dim(head_dim_v);
  const int inputs = (t.block_m * dqk + t.block_n * (dqk + dv)) * element_bytes;
  const int output = t.block_m * dv * element_bytes;
  return inputs > output ? inputs : output;
}

}  // namespace flashgen::sm80
