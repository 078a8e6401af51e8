// Tile shapes of the Hopper (TMA + wgmma) forward kernel. Used by the kernel instantiations and
// by the host side (launch grids, shared-memory sizes), so both always agree.
#pragma once

#include <cute/config.hpp>

#include "common/tile_order.h"

namespace flashgen::sm90 {

struct FwdTile {
  int block_m;  // query rows per CTA: 64 per consumer warpgroup (two, or three at head dim 64)
  int block_n;  // keys per main-loop iteration
  int stages;   // K and V shared-memory pipeline depth
};

// Two consumer warpgroups (64 rows each) share every K/V tile; three at head dim 64 (below).
// The key block shrinks with the head dim so that S (block_n / 2 registers per thread), O
// (head_dim_v / 2) and P fit the 240 registers a consumer thread gets, and Q plus the K/V stages
// fit 227 KiB of shared memory.
// FP8 (element_bytes 1) halves the K/V stages' footprint, so they get one more stage.
// `wide` (fwd_wide_keys): a kernel without a causal mask, pages or dropout (every key block but
// the last is whole, no page size has to hold whole blocks, no Philox state to keep live) takes
// 80-key blocks at head dim 256: +3-6% non-causal, and still no spill in the key loop (dropout
// would spill there). 160/176 keys at head dim 128 gained at 8k-16k but lost at <= 2k (176
// needs O staged in Q's buffer); not taken. bench/NOTES.md has the measurements.
// FP8 at head dim 256: `wide` (any kernel without pages, causal too) takes 128-key blocks in
// two stages instead of 64 in three: +8-16% (H200); paged ones keep 64, so that 64-row pages
// still fit whole blocks. Head dim 192 (not measured with 128 keys) keeps 64.
// Head dim 64 (both types) takes 192 query rows, three consumer warpgroups: their softmax is as
// long as their GEMMs, and with two warps per SM sub-partition neither the MUFU nor the tensor
// cores had anything else to do while one waited for S or finished its row sums (+8-13% bf16,
// +17-23% FP8 at 2k-16k non-causal, H200). Under a causal mask a 192-row tile straddles more of
// the diagonal (at 512 keys 35% more scores than 128-row tiles; -12% at 512 and 1k), so causal
// kernels also carry a 128-row instantiation for seqlen_q below kTallRowsMinSeqlenCausal,
// chosen per call (`tall` = fwd_tall_rows). Smaller head dims (32, 48), not measured or tested
// that way on a GPU, keep 128 rows.
constexpr int kTallRowsMinSeqlenCausal = 2048;
constexpr bool fwd_tall_rows(bool causal, int seqlen_q) { return !causal || seqlen_q >= kTallRowsMinSeqlenCausal; }

constexpr bool fwd_wide_keys(bool causal, bool paged, bool dropout, int element_bytes = 2) {
  return element_bytes == 1 ? !paged && !dropout : !causal && !paged && !dropout;
}

// FP8 at head dim 128, `wide` kernels: `long_keys` takes 192-key blocks (FA3 runs 224 there; 224
// and 256 spill in our key loop, 192 does not: sm_90a ptxas, no local memory in the key loop,
// 1,088 instructions per 192 keys against 808 per 128, -10% per key). The K and V scales must
// give a whole kernel block one scale, so per-block scales need block_rows a multiple of 192
// (e.g. 384) and the default 128-row blocks keep the 128-key tile: those kernels hold both
// instantiations and the planner picks per call (FwdParams::sm90_long_keys,
// FLASHGEN_SM90_FP8_KEYS; auto takes 192 from 4096 keys, +2-5% on the H200 at 4k-16k).
constexpr int kFp8LongKeys = 192;

constexpr FwdTile fwd_tile(int head_dim_qk, int head_dim_v, int element_bytes = 2, bool wide = false,
                           bool tall = true, bool long_keys = false) {
  const int d = head_dim_qk > head_dim_v ? head_dim_qk : head_dim_v;
  const int block_m_d64 = d == 64 && tall ? 192 : 128;
  if (element_bytes == 1) {
    if (d > 192 && wide) { return {/*block_m=*/128, /*block_n=*/128, /*stages=*/2}; }
    if (d == 128 && wide && long_keys) { return {/*block_m=*/128, /*block_n=*/kFp8LongKeys, /*stages=*/3}; }
    return {/*block_m=*/block_m_d64, /*block_n=*/d <= 128 ? 128 : 64, /*stages=*/d <= 64 ? 4 : 3};
  }
  if (d <= 64) { return {/*block_m=*/block_m_d64, /*block_n=*/128, /*stages=*/3}; }
  if (d <= 128) { return {/*block_m=*/128, /*block_n=*/128, /*stages=*/2}; }
  return {/*block_m=*/128, /*block_n=*/wide && d > 192 ? 80 : 64, /*stages=*/2};
}

// Whether a kernel of this spec holds a second, long-key instantiation (above).
constexpr bool fwd_has_long_keys(int head_dim_qk, int head_dim_v, int element_bytes, bool wide) {
  return fwd_tile(head_dim_qk, head_dim_v, element_bytes, wide, true, true).block_n !=
         fwd_tile(head_dim_qk, head_dim_v, element_bytes, wide, true, false).block_n;
}

constexpr int fwd_consumer_warpgroups(FwdTile t) { return t.block_m / 64; }

// Packed GQA rows (FwdParams::pack_gqa): the `group` query heads of a KV head share one tile,
// tile row r being query token r / group of the group's head r % group, so that K and V are read
// once per group and short queries still fill the 128- or 192-row tiles. Taken where the tiles
// of one head each would be under 90% as full as the packed ones: short queries, or a length
// just past a multiple of block_m (1,000 tokens fill 1,024 rows 98%: not packed).
// The packed kernel is one instantiation per spec: the causal ones take the 128-row tile (short
// queries, which are what packs), and none the FP8 192-key blocks.
constexpr bool fwd_packed_tall(bool causal) { return !causal; }

constexpr bool fwd_pack_gqa(int group, int seqlen_q, int block_m) {
  if (group <= 1 || seqlen_q <= 0) { return false; }
  const long long rows = seqlen_q, packed = rows * group;
  const long long rows_padded = (rows + block_m - 1) / block_m * block_m;
  const long long packed_padded = (packed + block_m - 1) / block_m * block_m;
  // rows / rows_padded < 0.9 * packed / packed_padded
  return 10 * rows * packed_padded < 9 * packed * rows_padded;
}

struct FwdTileCoord {
  int m_block;
  int head;
  int batch;
  int split;  // which share of the key blocks (split-KV), 0 without splits
};

// The grid's tile order (common/tile_order.h): a unit is one (split, head, batch entry), split
// fastest, and its rank r is query block m_blocks - 1 - r, so under a causal mask the tiles that
// see the most keys go first across the whole section.
struct FwdTileOrder {
  int num_tiles;
  int m_blocks;  // query blocks per (batch entry, head), of the longest sequence when varlen
  int num_heads;
  int num_splits;  // split-KV: each (query block, head, batch entry) once per split
  int section;     // units per section

  CUTE_HOST_DEVICE FwdTileCoord coord(int index) const {
    const auto c = SectionedOrder{m_blocks, num_tiles / m_blocks, section}(index);
    const int bh = c.unit / num_splits;
    return {m_blocks - 1 - c.rank, bh % num_heads, bh / num_heads, c.unit - bh * num_splits};
  }
};

}  // namespace flashgen::sm90
