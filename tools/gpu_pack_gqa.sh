#!/usr/bin/env bash
# One device call for the Hopper forward's packed GQA rows: builds the head-dim-128 forward
# kernels it touches (sm90 bf16 plain / causal / causal paged, e4m3 causal, and the
# sm80 pair the benchmark compares against), runs their tests (tests/test_sm90_pack_gqa.py, the
# FP8 packed and reference tests, the sm90 forward's GQA / split / sink tests, varlen), the GQA
# benchmark (python -m flashgen.bench --mode gqa) and compute-sanitizer over a few packed tests.
#   tools/gpu_pack_gqa.sh            (carry .whl; $OUT/summary.txt, bench.md, logs.tgz)
#   OBJCACHE_FILL=1 tools/gpu_pack_gqa.sh   here first, then carry .objcache too
#   TEST_K="..." MEMCHECK_K="..." BENCH_ARGS="..."   other selections
#   EXTRA_KERNELS=a,b FLASHGEN_HEAD_DIMS="64;128"   more kernels in the build
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
S=$OUT/summary.txt
export FLASHGEN_CUDA_ARCHS=90a FLASHGEN_DIRECTIONS=fwd FLASHGEN_HEAD_DIMS=${FLASHGEN_HEAD_DIMS:-128} FLASHGEN_DTYPES="bf16;e4m3"
export FLASHGEN_KERNELS="fwd_sm90_bf16_hdim128,fwd_sm90_bf16_hdim128_causal,fwd_sm90_bf16_hdim128_causal_paged,fwd_sm90_e4m3_hdim128_causal,fwd_sm80_bf16_hdim128,fwd_sm80_bf16_hdim128_causal${EXTRA_KERNELS:+,$EXTRA_KERNELS}"
# OBJCACHE_FILL=1 (CPU machine): only this build, to fill .objcache (tools/objcache_env.sh).
limit=330; [[ -n "${OBJCACHE_FILL:-}" ]] && limit=7200
STEPS=build OUT="$OUT/check" timeout $limit "$(dirname "$0")/gpu_check.sh" > "$S" 2>&1 || { echo "build failed"; cat "$S"; exit 1; }
[[ -n "${OBJCACHE_FILL:-}" ]] && { tail -3 "$S"; exit 0; }
K=${TEST_K:-pack or packed or matches_dequantized or varlen or (sm90 and (gqa or split or sinks or agrees or sq113)) or override}
timeout ${TESTS_S:-120} python3 -m pytest -q -rs tests/test_sm90_pack_gqa.py tests/test_pack_gqa_rule.py tests/test_fp8.py \
  tests/test_forward.py tests/test_varlen.py -k "$K" > "$OUT/tests.log" 2>&1
echo "tests rc $?: $(tail -1 "$OUT/tests.log")" >> "$S"
grep -E "FAILED|Error|assert" "$OUT/tests.log" | head -20 >> "$S"
timeout ${BENCH_S:-90} python3 -m flashgen.bench ${BENCH_ARGS:---mode gqa} --markdown "$OUT/bench.md" > "$OUT/bench.log" 2>&1
echo "bench rc $?" >> "$S"
tail -22 "$OUT/bench.log" >> "$S"
timeout ${MEMCHECK_S:-90} compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x \
  tests/test_sm90_pack_gqa.py -k "${MEMCHECK_K:-b2_sq5 or varlen or paged}" > "$OUT/memcheck.log" 2>&1
echo "memcheck rc $?: $(tail -1 "$OUT/memcheck.log")" >> "$S"
OUT="$OUT" "$(dirname "$0")/pack_out.sh" summary.txt bench.md
cat "$S"
