// Tile shapes of the Hopper (TMA + wgmma) forward kernel. Used by the kernel instantiations and
// by the host side (launch grids, shared-memory sizes), so both always agree.
#pragma once

#include <cute/config.hpp>

namespace flashgen::sm90 {

struct FwdTile {
  int block_m;  // query rows per CTA: 64 per consumer warpgroup
  int block_n;  // keys per main-loop iteration
  int stages;   // K and V shared-memory pipeline depth
};

// Two consumer warpgroups (64 rows each) share every K/V tile. The key block shrinks with the
// head dim so that S (block_n / 2 registers per thread), O (head_dim_v / 2) and P fit the 240
// registers a consumer thread gets, and Q plus the K/V stages fit 227 KiB of shared memory.
// (160- and 176-key blocks for head dim 128 spill registers and ran 14% slower: bench/NOTES.md.)
// FP8 (element_bytes 1) halves the K/V stages' footprint, so they get one more stage.
constexpr FwdTile fwd_tile(int head_dim_qk, int head_dim_v, int element_bytes = 2) {
  const int d = head_dim_qk > head_dim_v ? head_dim_qk : head_dim_v;
  if (element_bytes == 1) {
    return {/*block_m=*/128, /*block_n=*/d <= 128 ? 128 : 64, /*stages=*/d <= 64 ? 4 : 3};
  }
  if (d <= 64) { return {/*block_m=*/128, /*block_n=*/128, /*stages=*/3}; }
  if (d <= 128) { return {/*block_m=*/128, /*block_n=*/128, /*stages=*/2}; }
  return {/*block_m=*/128, /*block_n=*/64, /*stages=*/2};
}

constexpr int kFwdConsumerWarpgroups = 2;
constexpr int kFwdThreads = 128 * (1 + kFwdConsumerWarpgroups);  // one producer warpgroup

struct FwdTileCoord {
  int m_block;
  int head;
  int batch;
  int split;  // which share of the key blocks (split-KV), 0 without splits
};

// The persistent grid's tile order. The query blocks of one (batch entry, head) are adjacent, so
// the CTAs running at the same time mostly share one head's K and V in L2; within a head they go
// from the last block to the first: under a causal mask the last blocks see the most keys, and
// with CTA c taking tiles c, c + grid, ... every CTA gets a mix of long and short tiles.
struct FwdTileOrder {
  int num_tiles;
  int m_blocks;  // query blocks per (batch entry, head), of the longest sequence when varlen
  int num_heads;
  int num_splits;  // split-KV: each (query block, head, batch entry) once per split

  CUTE_HOST_DEVICE FwdTileCoord coord(int index) const {
    const int bhs = index / m_blocks;
    const int bh = bhs / num_splits;
    return {m_blocks - 1 - (index - bhs * m_blocks), bh % num_heads, bh / num_heads, bhs - bh * num_splits};
  }
};

}  // namespace flashgen::sm90
