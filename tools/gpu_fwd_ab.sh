#!/usr/bin/env bash
# One device call: A/B(/C) of sm90 forward changes at head dims 64 and 128, bf16 and FP8.
# Before the call (CPU side): tools/ab_prepare.sh HEAD (A), patch the working tree (B), and
# optionally tools/ab_prepare.sh HEAD ab_c plus a patch there (C); carry .whl, ab_base, ab_c.
# Builds every side, runs test_fp8.py and the sm90 forward tests under B, then the FP8 sweep
# (all sides) and the bf16 forward sweep (A and B), two rounds each, alternating.
set -uo pipefail
cd "$(dirname "$0")/.."
export FLASHGEN_CUDA_ARCHS=90a FLASHGEN_DTYPES="bf16;e4m3" FLASHGEN_HEAD_DIMS="64;128" FLASHGEN_DIRECTIONS=fwd
kernels=""
for d in 64 128; do
  for t in bf16 e4m3; do kernels+="fwd_sm90_${t}_hdim$d,fwd_sm90_${t}_hdim${d}_causal,"; done
done
export FLASHGEN_KERNELS="${kernels}fwd_sm90_e4m3_hdim128_paged"
seqlens=${SEQLENS:-2048,4096,16384}
AB_NO_PACK=1 PRE_BENCH='timeout 150 python3 -m pytest -q -x tests/test_fp8.py tests/test_forward.py -k "sm90 or fp8" 2>&1 | tail -5' \
  ROUNDS=2 AB_KEY_COLS=3 AB_VALUE_COLS=3,4 TAG=fp8 \
  BENCH_ARGS="--mode fp8 --head-dims 64,128 --seqlens $seqlens --causal both" tools/gpu_ab.sh 2>&1 | tail -42
[[ -n "${OBJCACHE_FILL:-}" ]] && exit 0
tail -8 "${OUT:-$PWD/out}/pre_bench.log"
AB_NO_PACK=1 AB_SIDES="a b" SKIP_BUILD=1 TAG=bf16 ROUNDS=2 AB_KEY_COLS=3 AB_VALUE_COLS=3 \
  BENCH_ARGS="--mode fwd --head-dims 64,128 --seqlens $seqlens --causal both" timeout 200 tools/gpu_ab.sh 2>&1 | tail -16
OUT="${OUT:-$PWD/out}" tools/pack_out.sh  # everything back as $OUT/logs.tgz (the device returns at most 8 files)
