#!/usr/bin/env bash
# One device call for the FP8 forward's per-tile cost at head dim 256 (issue 6; bench/NOTES.md,
# session 33): builds ab_base/ (A) and the working tree (B) with the sm90 FP8 and bf16 forward
# kernels of head dims 128 / 256, runs test_fp8.py under B, A/Bs the FP8 sweep at head dim 256
# (gpu_ab.sh, two rounds), then profiles A's FP8 kernel with ncu at 4k and 16k, per-tensor
# scales (gpu_profile.sh on A's build: executed instructions and duration at both lengths give
# the per-tile cost, the stall table where it goes). Summary in $OUT/summary.txt, the rest in
# $OUT/logs.tgz. Before the call (CPU side): tools/ab_prepare.sh HEAD, patch the working tree
# (e.g. git apply bench/experiments/fp8_256_early_q_release.patch); carry .whl and ab_base.
#   CASES=...   gpu_profile.sh's cases (default "4096:256:0:tensor 16384:256:0:tensor"; empty: none)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
S=$OUT/summary.txt
export FLASHGEN_CUDA_ARCHS=90a FLASHGEN_DTYPES="bf16;e4m3" FLASHGEN_HEAD_DIMS="128;256" FLASHGEN_DIRECTIONS=fwd
kernels=""
for d in 128 256; do
  for t in bf16 e4m3; do kernels+="fwd_sm90_${t}_hdim$d,fwd_sm90_${t}_hdim${d}_causal,"; done
done
export FLASHGEN_KERNELS=${kernels%,}
AB_NO_PACK=1 ROUNDS=2 AB_KEY_COLS=3 AB_VALUE_COLS=3,4 TAG=fp8 \
  PRE_BENCH='timeout 150 python3 -m pytest -q -x tests/test_fp8.py 2>&1 | tail -5' \
  BENCH_ARGS="--mode fp8 --head-dims 256 --seqlens 4096,8192,16384 --causal both" \
  timeout 420 tools/gpu_ab.sh > "$S" 2>&1 || echo "gpu_ab.sh rc $?" >> "$S"
cases=${CASES-4096:256:0:tensor 16384:256:0:tensor}
if [[ -n "$cases" ]]; then
  # ncu's details of each case land in $OUT/<tag>.txt; the summary keeps their key lines.
  PYTHONPATH=/tmp/ab_a CASES="$cases" PEERS=0 timeout 150 tools/gpu_profile.sh >> "$S" 2>&1 ||
    echo "gpu_profile.sh rc $?" >> "$S"
fi
OUT="$OUT" tools/pack_out.sh summary.txt
cat "$S"
