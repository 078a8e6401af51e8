// Tile shapes of the SM80-path backward kernel, shared by the instantiations and the host
// (workspace sizes, shared-memory checks, grids).
//
// One CTA owns a block of block_n keys of one KV head: dK and dV stay in registers while it
// walks the query blocks (and the query heads of its GQA group) that see those keys.
#pragma once

#include "sm80/sm80_fwd_tile.h"

namespace flashgen::sm80 {

struct BwdTile {
  int block_m;    // query rows per inner iteration
  int block_n;    // keys per CTA
  int num_warps;
  int sdp_warps_m;  // warp grid of S = Q K^T and dP = dO V^T, (block_m, block_n): warps along M
  int dkv_warps_m;  // warp grid of dK += dS^T Q and dV += P^T dO, (block_n, head_dim): along N
  int dq_warps_m;   // warp grid of dQ = dS K, (block_m, head_dim): along M
};

// Warp grids follow the operand sizes: each MMA is split so that the larger operand is read
// by fewer warps (shared-memory traffic), and a grid's column tile (16 per warp) must divide
// the padded head dims.
constexpr int warps_m_dividing(int preferred_m, int num_warps, int cols) {
  return cols % (16 * (num_warps / preferred_m)) == 0 ? preferred_m : num_warps / 2;
}

constexpr BwdTile bwd_tile(int head_dim_qk, int head_dim_v) {
  const int dqk = padded_head_dim(head_dim_qk), dv = padded_head_dim(head_dim_v);
  const int d = dqk > dv ? dqk : dv;
  const int both = dqk % 64 == 0 && dv % 64 == 0 ? 64 : 32;
  if (d <= 64) { return {/*block_m=*/128, /*block_n=*/128, /*num_warps=*/8, 2, 4, 4}; }
  if (d <= 128) { return {/*block_m=*/64, /*block_n=*/128, /*num_warps=*/8, 2, 4, warps_m_dividing(2, 8, dqk)}; }
  return {/*block_m=*/64, /*block_n=*/64, /*num_warps=*/8, 4, warps_m_dividing(2, 8, both), warps_m_dividing(2, 8, dqk)};
}

// Double-buffered Q and dO (with their rows' fp32 LSE and D), one K and one V block, and the
// P and dS tiles.
constexpr int bwd_smem_bytes(int head_dim_qk, int head_dim_v, int element_bytes) {
  const BwdTile t = bwd_tile(head_dim_qk, head_dim_v);
  const int dqk = padded_head_dim(head_dim_qk), dv = padded_head_dim(head_dim_v);
  return element_bytes * (2 * t.block_m * (dqk + dv) + t.block_n * (dqk + dv) + 2 * t.block_m * t.block_n) +
         2 * 2 * t.block_m * 4;
}

}  // namespace flashgen::sm80
