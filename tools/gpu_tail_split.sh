#!/usr/bin/env bash
# The Hopper backward's tail split on a GPU in one call (session 23): tools/gpu_bwd_env_ab.sh with
# FLASHGEN_BWD_TAIL_SPLIT=off (A) against auto (B), memcheck over the tail-split tests.
#   SEQLENS=2048,4096,8192,16384   ROUNDS=2   HEAD_DIMS=64,128
AB_ENV="FLASHGEN_BWD_TAIL_SPLIT=off FLASHGEN_BWD_TAIL_SPLIT=auto" MEMCHECK_K=tail_split \
  exec "$(dirname "$0")/gpu_bwd_env_ab.sh"
