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

// Padded head dims above 128 have two tiles, both 16 query rows per warp (the same registers
// per thread): wide (128 rows, 8 warps) and narrow (64 rows, 4 warps; 3/4 of the wide tile's
// shared memory at equal head dims). Kernels of such specs are instantiated with both and take
// the one the planner chose (FwdParams::sm80_narrow, by fwd_narrow_rows); at or below 128
// `narrow` changes nothing.
constexpr bool fwd_has_narrow_tile(int head_dim_qk, int head_dim_v) {
  return padded_head_dim(head_dim_qk > head_dim_v ? head_dim_qk : head_dim_v) > 128;
}

constexpr FwdTile fwd_tile(int head_dim_qk, int head_dim_v, bool narrow = false) {
  const int d = padded_head_dim(head_dim_qk > head_dim_v ? head_dim_qk : head_dim_v);
  if (d <= 64) { return {/*block_m=*/128, /*block_n=*/128, /*num_warps=*/4}; }
  if (d <= 128) { return {/*block_m=*/128, /*block_n=*/64, /*num_warps=*/4}; }
  if (narrow) { return {/*block_m=*/64, /*block_n=*/64, /*num_warps=*/4}; }
  return {/*block_m=*/128, /*block_n=*/64, /*num_warps=*/8};
}

// Q tile plus one K and one V tile in the input dtype; the output tile reuses that space.
constexpr int fwd_smem_bytes(int head_dim_qk, int head_dim_v, int element_bytes, bool narrow = false) {
  const FwdTile t = fwd_tile(head_dim_qk, head_dim_v, narrow);
  const int dqk = padded_head_dim(head_dim_qk), dv = padded_head_dim(head_dim_v);
  const int inputs = (t.block_m * dqk + t.block_n * (dqk + dv)) * element_bytes;
  const int output = t.block_m * dv * element_bytes;
  return inputs > output ? inputs : output;
}

// FlashAttention-2's rule for head dim 256, in bytes: the narrow tile where the wide one cannot
// launch (sm86/sm89/sm120 allow 99 KiB per block; the wide tile takes 128 KiB at head dim 256),
// or where an SM's shared memory holds two narrow CTAs (H100/H200/B200: 228 KiB, 2 x 96 KiB at
// head dim 256). An A100 (164 KiB per SM) keeps the wide tile at 224 and 256, where two narrow
// CTAs do not fit, and takes the narrow one at 160 and 192.
// Measured on an H200 at head dim 256 over the standard sweep (bench/RESULTS.md, session 16):
// narrow against wide +5-15% causal from 512 to 4k keys, -1% to +2% elsewhere. Not measured on
// other devices; FLASHGEN_SM80_FWD_ROWS=wide|narrow forces either tile for A/B runs.
constexpr bool fwd_narrow_rows(int head_dim_qk, int head_dim_v, int element_bytes, int smem_per_sm,
                               int smem_per_block_optin) {
  if (!fwd_has_narrow_tile(head_dim_qk, head_dim_v)) { return false; }
  return smem_per_block_optin < fwd_smem_bytes(head_dim_qk, head_dim_v, element_bytes, /*narrow=*/false) ||
         smem_per_sm >= 2 * fwd_smem_bytes(head_dim_qk, head_dim_v, element_bytes, /*narrow=*/true);
}

// The rule on the devices it was written for: (shared memory per SM, opt-in per block) of each
// compute capability, 16-bit inputs.
constexpr bool fwd_narrow_rows_kib(int head_dim, int per_sm_kib, int per_block_kib) {
  return fwd_narrow_rows(head_dim, head_dim, /*element_bytes=*/2, per_sm_kib * 1024, per_block_kib * 1024);
}
static_assert(fwd_narrow_rows_kib(256, 228, 227) && fwd_narrow_rows_kib(192, 228, 227));    // sm90, sm100
static_assert(!fwd_narrow_rows_kib(256, 164, 163) && fwd_narrow_rows_kib(192, 164, 163));   // sm80
static_assert(fwd_narrow_rows_kib(256, 100, 99) && !fwd_narrow_rows_kib(192, 100, 99));     // sm86, sm89, sm120
static_assert(!fwd_narrow_rows_kib(128, 228, 227));

}  // namespace flashgen::sm80
