#!/usr/bin/env bash
# One device call (~580 s) that measures the Hopper forward's unmeasured switches against main:
#   1. A = ab_base (main), B = the working tree, C = ab_c: bf16 forward, head dims 64 / 128,
#      2k-16k, causal and not (B and C carry flipped build-time switches); PRE_BENCH runs the
#      sm90 forward and FP8 tests on B first;
#   2. B alone with FLASHGEN_SM90_FP8_KEYS=128 against 192 (the "fp8 tensor" column changes);
#   3. the three builds on the FP8 forward (head dim 128);
#   4. B alone with FLASHGEN_SM90_FWD_ROWS=tall against short (head dim 64 causal, 2k / 4k).
# Before the call, here (A = main, C = the look-ahead alone, B = the look-ahead and the TMA store):
#   tools/ab_prepare.sh HEAD && tools/ab_prepare.sh HEAD ab_c
#   ahead='s/define FLASHGEN_SM90_FWD_AHEAD 0/define FLASHGEN_SM90_FWD_AHEAD 1/'
#   sed -i "$ahead" ab_c/kernels/sm90/sm90_fwd_kernel.hpp kernels/sm90/sm90_fwd_kernel.hpp
#   sed -i 's/define FLASHGEN_SM90_FWD_TMA_STORE 0/define FLASHGEN_SM90_FWD_TMA_STORE 1/' kernels/sm90/sm90_fwd_traits.hpp
# then run `tools/gpu_fwd_switches_ab.sh` with carry [".whl", "ab_base", "ab_c"]; afterwards
# `git checkout kernels/sm90 && rm -rf ab_base ab_c`. Without ab_c/ the steps run A / B only.
# Logs land in $OUT; each step has its own timeout (STEPn_S), so the call stays under 600 s.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export FLASHGEN_CUDA_ARCHS=${FLASHGEN_CUDA_ARCHS:-90a}
export FLASHGEN_DTYPES=${FLASHGEN_DTYPES:-bf16;e4m3}
export FLASHGEN_HEAD_DIMS=${FLASHGEN_HEAD_DIMS:-64;128}
export FLASHGEN_DIRECTIONS=${FLASHGEN_DIRECTIONS:-fwd}
export FLASHGEN_KERNELS=${FLASHGEN_KERNELS:-fwd_sm90_bf16_hdim64,fwd_sm90_bf16_hdim64_causal,fwd_sm90_bf16_hdim128,fwd_sm90_bf16_hdim128_causal,fwd_sm90_e4m3_hdim128,fwd_sm90_e4m3_hdim128_causal}
fp8_args="--mode fp8 --head-dims 128 --seqlens 2048,4096,16384 --causal both"

echo "== 1. bf16 forward, A = main, B = working tree, C = ab_c"
PRE_BENCH="timeout 150 python3 -m pytest -q -x tests/test_forward.py tests/test_fp8.py -k 'sm90 or fp8'" \
  ROUNDS=2 BENCH_ARGS="--mode fwd --head-dims 64,128 --seqlens 2048,4096,16384 --causal both" \
  timeout "${STEP1_S:-400}" tools/gpu_ab.sh
echo "== 2. FP8 key block on B: 128 against 192"
SKIP_BUILD=1 TAG=keys ROUNDS=2 AB_KEY_COLS=3 AB_VALUE_COLS=3,4 BENCH_ARGS="$fp8_args" \
  AB_ENV="FLASHGEN_SM90_FP8_KEYS=128 FLASHGEN_SM90_FP8_KEYS=192" timeout "${STEP2_S:-70}" tools/gpu_ab.sh
echo "== 3. FP8 forward, A = main, B = working tree, C = ab_c"
SKIP_BUILD=1 TAG=fp8 ROUNDS=1 AB_KEY_COLS=3 AB_VALUE_COLS=3,4 BENCH_ARGS="$fp8_args" \
  timeout "${STEP3_S:-70}" tools/gpu_ab.sh
echo "== 4. head dim 64 causal rows on B: tall against short"
SKIP_BUILD=1 TAG=rows ROUNDS=2 BENCH_ARGS="--mode fwd --head-dims 64 --seqlens 2048,4096 --causal yes" \
  AB_ENV="FLASHGEN_SM90_FWD_ROWS=tall FLASHGEN_SM90_FWD_ROWS=short" timeout "${STEP4_S:-35}" tools/gpu_ab.sh
