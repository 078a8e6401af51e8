#!/usr/bin/env bash
# One device call's worth of decode work: builds the decode kernels (bf16 and e4m3 caches, head
# dims 64 / 128, with the bf16 forward the benchmark's dense check uses) once, runs
# tests/test_decode.py and compute-sanitizer (memcheck) over MEMCHECK_K under that build, the
# decode benchmark under each setting of AB_ENV side by side (tools/gpu_ab.sh), and
# tools/decode_splits.py for each cache in SPLIT_CACHES. Everything lands in $OUT/summary.txt.
#   AB_ENV="FLASHGEN_DECODE_COMBINE=kernel FLASHGEN_DECODE_COMBINE=auto" tools/gpu_decode_ab.sh
# Without AB_ENV the sides are two trees, as in tools/gpu_ab.sh: ab_base/ (A, tools/ab_prepare.sh)
# and the working tree (B, which the tests, memcheck and decode_splits.py run on); carry ab_base.
#   ROUNDS=2                               benchmark rounds per side
#   TEST_ENV="FLASHGEN_DECODE_COMBINE=auto"  settings of the test, memcheck and decode_splits.py
#                                          runs (default none)
#   MEMCHECK_K="cluster and None"          pytest -k of the memcheck run (empty: none)
#   SPLIT_CACHES="dense fp8_paged16"       decode_splits.py caches (empty: none); SPLIT_ARGS more
#   NCU_CASES="fp8:1:32768:0"              ncu of the decode kernel under each side's build
#                                          (tools/decode_ncu.sh; NCU_EXTRA more sections)
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
S=$OUT/summary.txt
export FLASHGEN_CUDA_ARCHS=${FLASHGEN_CUDA_ARCHS:-90a} FLASHGEN_DTYPES="bf16;e4m3" FLASHGEN_HEAD_DIMS="64;128"
export FLASHGEN_DIRECTIONS="fwd;decode"
export FLASHGEN_KERNELS="decode_sm80_bf16_hdim128,decode_sm80_bf16_hdim64,decode_sm80_e4m3_hdim128,decode_sm80_e4m3_hdim64,fwd_sm80_bf16_hdim128"
[[ -n "${AB_ENV:-}" || -d ab_base ]] || { echo "set AB_ENV (one build, two settings) or prepare ab_base/"; exit 2; }
export AB_ENV=${AB_ENV:-} ROUNDS=${ROUNDS:-2} AB_KEY_COLS=2 AB_VALUE_COLS=2,3,5 BENCH_ARGS="--mode decode"
export PRE_BENCH="timeout 200 env ${TEST_ENV:-} python3 -m pytest -q tests/test_decode.py"
# A fill on the CPU machine (OBJCACHE_FILL=1, tools/objcache_env.sh) only builds, at its own pace.
limit=480; [[ -n "${OBJCACHE_FILL:-}" ]] && limit=7200
AB_NO_PACK=1 timeout $limit tools/gpu_ab.sh > "$S" 2>&1 || echo "gpu_ab.sh rc $?" >> "$S"
[[ -n "${OBJCACHE_FILL:-}" ]] && { tail -3 "$S"; exit 0; }
if [[ -n "${MEMCHECK_K-cluster and None}" ]]; then
  timeout 60 env ${TEST_ENV:-} PYTHONPATH=/tmp/ab_b compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x \
    tests/test_decode.py -k "${MEMCHECK_K-cluster and None}" > "$OUT/memcheck.log" 2>&1
  echo "memcheck rc $?: $(tail -1 "$OUT/memcheck.log")" >> "$S"
fi
for cache in ${SPLIT_CACHES-dense fp8_paged16}; do
  timeout 50 env ${TEST_ENV:-} PYTHONPATH=/tmp/ab_b python3 tools/decode_splits.py --cache "$cache" ${SPLIT_ARGS:-} >> "$S" 2>&1
done
for c in ${NCU_CASES:-}; do
  for side in a b; do
    PYTHONPATH=/tmp/ab_$side "$(dirname "$0")/decode_ncu.sh" "$c" "$OUT/ncu_${side}_${c//:/_}.txt" "$side $c" >> "$S"
  done
done
OUT="$OUT" "$(dirname "$0")/pack_out.sh" summary.txt  # the rest back as logs.tgz (at most 8 files return)
cat "$S"
