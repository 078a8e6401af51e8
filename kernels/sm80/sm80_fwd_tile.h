// Tile shapes of the SM80-path forward kernel. Used by the kernel instantiations and by the
// host side (shared-memory checks, launch grids), so both always agree.
#pragma once

namespace flashgen::sm80 {

struct FwdTile {
  int block_m;    // query rows per CTA
  int block_n;    // keys per main-loop iteration
  int num_warps;  // warps split the query rows, 16 rows each per MMA
};

constexpr FwdTile fwd_tile(int head_dim) {
  if (head_dim <= 64) { return {/*block_m=*/128, /*block_n=*/128, /*num_warps=*/4}; }
  if (head_dim <= 128) { return {/*block_m=*/128, /*block_n=*/64, /*num_warps=*/4}; }
  return {/*block_m=*/128, /*block_n=*/64, /*num_warps=*/8};
}

// Q tile plus one K and one V tile, in the input dtype.
constexpr int fwd_smem_bytes(int head_dim, int element_bytes) {
  const FwdTile t = fwd_tile(head_dim);
  return (t.block_m + 2 * t.block_n) * head_dim * element_bytes;
}

}  // namespace flashgen::sm80
