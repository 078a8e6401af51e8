#!/usr/bin/env bash
# One device call for the forward's host path (session 37: flashgen._args_cache.FWD): builds the
# head-dim-128 bf16 kernels the tests need (sm90 / sm80 forward, sm90 backward), runs the
# launch-argument cache's tests and a forward sample, then tools/gqa_profile.py (burst / host
# time per call, cached against validated in full) and the GQA benchmark.
#   tools/gpu_host_path.sh   (carry .whl; $OUT/summary.txt, prof.txt, bench.md, logs.tgz)
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
S=$OUT/summary.txt
export FLASHGEN_CUDA_ARCHS=90a FLASHGEN_DIRECTIONS="fwd;bwd" FLASHGEN_HEAD_DIMS=128 FLASHGEN_DTYPES=bf16
export FLASHGEN_KERNELS="fwd_sm90_bf16_hdim128,fwd_sm90_bf16_hdim128_causal,fwd_sm80_bf16_hdim128,fwd_sm80_bf16_hdim128_causal,bwd_sm90_bf16_hdim128"
STEPS=build OUT="$OUT/check" timeout 330 "$(dirname "$0")/gpu_check.sh" > "$S" 2>&1 || { echo "build failed"; cat "$S"; exit 1; }
timeout ${TESTS_S:-120} python3 -m pytest -q -rs tests/test_args_cache.py tests/test_forward.py \
  -k "${TEST_K:-repeated or args_cache or sq113 or gqa or sinks or split or override or causal_rows}" > "$OUT/tests.log" 2>&1
echo "tests rc $?: $(tail -1 "$OUT/tests.log")" >> "$S"
timeout ${BWD_TESTS_S:-60} python3 -m pytest -q -rs tests/test_backward.py -k "repeated or gqa" > "$OUT/tests_bwd.log" 2>&1
echo "bwd tests rc $?: $(tail -1 "$OUT/tests_bwd.log")" >> "$S"
grep -hE "FAILED|Error|assert" "$OUT/tests.log" "$OUT/tests_bwd.log" | head -20 >> "$S"
timeout ${PROFILE_S:-120} python3 "$(dirname "$0")/gqa_profile.py" --splits 0 --pack auto \
  --shapes 1x64x8192,8x16x8192,2x512x8192 > "$OUT/prof.txt" 2>&1
echo "profile rc $?" >> "$S"
if [[ "${BENCH_S:-90}" != 0 ]]; then  # BENCH_S=0: no benchmark
  timeout ${BENCH_S:-90} python3 -m flashgen.bench --mode gqa --markdown "$OUT/bench.md" > "$OUT/bench.log" 2>&1
  echo "bench rc $?" >> "$S"
  tail -12 "$OUT/bench.log" >> "$S"
fi
OUT="$OUT" "$(dirname "$0")/pack_out.sh" summary.txt prof.txt bench.md
cat "$S" "$OUT/prof.txt"
