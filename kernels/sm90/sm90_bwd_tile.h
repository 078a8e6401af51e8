// The Hopper backward's tile shape as plain constants, for the host's launch planning (the
// tail split's plan in bwd_api.cpp) and for BwdTraits, which derives its CuTe types from them.
#pragma once

namespace flashgen::sm90 {

// Roles split (a head dim above 128, or qk != v: 64-key blocks, one product role per consumer
// warpgroup) or keys split (128-key blocks, each warpgroup 64 of the keys); see sm90_bwd_traits.hpp.
constexpr bool bwd_split_roles(int head_dim_qk, int head_dim_v) {
  return head_dim_qk != head_dim_v || head_dim_qk > 128;
}
constexpr int bwd_block_m(int head_dim_qk, int head_dim_v) {  // queries per step
  return !bwd_split_roles(head_dim_qk, head_dim_v) && head_dim_qk <= 64 ? 128 : 64;
}
constexpr int bwd_block_n(int head_dim_qk, int head_dim_v) {  // keys per CTA
  return bwd_split_roles(head_dim_qk, head_dim_v) ? 64 : 128;
}

}  // namespace flashgen::sm90
