#!/usr/bin/env bash
# One device call's worth of backward measurement (session 19's call, kept): builds the bf16
# backward kernels of one family for head dims 64 / 128 / 256 (plain and causal; 128 also dropout
# and softcap) with their sm90 forwards, runs the backward tests, the standard backward sweep,
# tools/bwd_variants.py, tools/bwd_deterministic_cost.py, and compute-sanitizer over a few
# backward tests. Everything lands in $OUT/summary.txt (the device tool returns few files).
#   FAMILY=sm80 (default) or sm90       the backward family (FLASHGEN_BWD_BACKEND)
#   SEQLENS=2048,4096,8192,16384        the sweep's lengths
#   HEAD_DIMS=64,128,256                the head dims built and swept (EXTRAS' kernels need 128)
#   PROFILE="4096:64:0"                 also ncu of these cases against FA2 (tools/gpu_profile.sh)
#   KERNEL_TIMES="2048:128:1"           also each kernel's time in one backward call of these cases
#                                       (tools/bwd_kernel_times.py; against FA2, or cuDNN for sm90)
#   EXTRAS=0                            skip the dropout / softcap kernels, bwd_variants.py and the
#                                       deterministic cost (a shorter call: build, tests, sweep, memcheck)
#   MEMCHECK_K="..."                    the pytest -k of the memcheck step (default below)
#   EXTRA_KERNELS=a,b  EXTRA_DTYPES=e4m3  more kernels in the same build (e.g. the FP8 forwards),
#   EXTRA_BENCH="--mode fwd ..."        and benchmarks run after everything else (';'-separated)
#   EXTRA_TESTS="tests/test_fp8.py -k x"  pytest arguments run right after the build
#   SWEEP_FIRST=1                       the sweep before test_backward.py (a short call keeps the sweep)
set -uo pipefail
. "$(dirname "$0")/objcache_env.sh"
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
FAMILY=${FAMILY:-sm80}
SEQLENS=${SEQLENS:-2048,4096,8192,16384}
HEAD_DIMS=${HEAD_DIMS:-64,128,256}
export FLASHGEN_CUDA_ARCHS="90a" FLASHGEN_DTYPES="bf16${EXTRA_DTYPES:+;$EXTRA_DTYPES}" FLASHGEN_HEAD_DIMS=$HEAD_DIMS FLASHGEN_BWD_BACKEND=$FAMILY
kernels=""
for d in ${HEAD_DIMS//,/ }; do kernels+="bwd_${FAMILY}_bf16_hdim$d,bwd_${FAMILY}_bf16_hdim${d}_causal,fwd_sm90_bf16_hdim$d,fwd_sm90_bf16_hdim${d}_causal,"; done
EXTRAS=${EXTRAS:-1}
MEMCHECK_K=${MEMCHECK_K:-$FAMILY and hdim64 and (sq113 or varlen or gqa)}
kernels=${kernels%,}
if [[ "$EXTRAS" != 0 ]]; then
  kernels+=",bwd_${FAMILY}_bf16_hdim128_dropout,bwd_${FAMILY}_bf16_hdim128_softcap,fwd_sm90_bf16_hdim128_dropout,fwd_sm90_bf16_hdim128_softcap"
fi
export FLASHGEN_KERNELS="$kernels${EXTRA_KERNELS:+,$EXTRA_KERNELS}"
S=$OUT/summary.txt
# A fill on the CPU machine (objcache_env.sh) takes its time: no limit there.
build_limit=300; [[ -n "${OBJCACHE_FILL:-}" ]] && build_limit=7200
STEPS=build timeout $build_limit tools/gpu_check.sh > "$S" 2>&1 || { tail -30 "$S"; exit 1; }
[[ -n "${OBJCACHE_FILL:-}" ]] && { tail -3 "$S"; exit 0; }
if [[ -n "${EXTRA_TESTS:-}" ]]; then
  echo "== tests ($EXTRA_TESTS)" >> "$S"
  # shellcheck disable=SC2086
  timeout 150 python3 -m pytest -q -rs $EXTRA_TESTS 2>&1 | tail -8 >> "$S"
fi
bwd_tests() {
  echo "== tests (test_backward.py -k $FAMILY)" >> "$S"
  timeout 120 python3 -m pytest -q -x tests/test_backward.py -k "$FAMILY" 2>&1 | tail -3 >> "$S"
}
[[ -n "${SWEEP_FIRST:-}" ]] || bwd_tests
echo "== sweep" >> "$S"
timeout 200 python3 -m flashgen.bench --mode bwd --bwd-backend "$FAMILY" --head-dims "$HEAD_DIMS" --seqlens "$SEQLENS" \
  --causal both 2>&1 | awk '!seen[$0]++' >> "$S"
[[ -z "${SWEEP_FIRST:-}" ]] || bwd_tests
if [[ "$EXTRAS" != 0 ]]; then
  echo "== variants (b 4, s 4096, h 16, d 128)" >> "$S"
  timeout 60 python3 tools/bwd_variants.py >> "$S" 2>&1
  echo "== deterministic" >> "$S"
  for c in "4096 128" "4096 128 causal" "4096 64"; do timeout 40 python3 tools/bwd_deterministic_cost.py $c >> "$S" 2>&1; done
fi
echo "== compute-sanitizer (memcheck) over test_backward.py -k '$MEMCHECK_K'" >> "$S"
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x tests/test_backward.py \
  -k "$MEMCHECK_K" > "$OUT/memcheck.log" 2>&1
echo "memcheck rc $?: $(tail -1 "$OUT/memcheck.log")" >> "$S"
if [[ -n "${KERNEL_TIMES:-}" ]]; then
  peer=flash; [[ "$FAMILY" == sm90 ]] && peer=cudnn
  timeout 150 python3 tools/bwd_kernel_times.py --peer $peer $KERNEL_TIMES >> "$S" 2>&1
fi
if [[ -n "${PROFILE:-}" ]]; then
  MODE=bwd PEERS=full CASES="$PROFILE" timeout 200 tools/gpu_profile.sh >> "$S" 2>&1
fi
IFS=';' read -ra extra_bench <<< "${EXTRA_BENCH:-}"
for args in "${extra_bench[@]}"; do
  echo "== bench $args" >> "$S"
  # shellcheck disable=SC2086
  timeout 240 python3 -m flashgen.bench $args 2>&1 | awk '!seen[$0]++' >> "$S"
done
rm -f "$OUT/build.log" "$OUT/sass.txt" "$OUT/resources.txt" "$OUT/gpu.txt"
OUT="$OUT" "$(dirname "$0")/pack_out.sh" summary.txt  # the rest back as logs.tgz (at most 8 files return)
grep -E "^\| (64|128|256) \||passed|failed|memcheck rc|TFLOP/s \||deterministic (True|False)|^== s[0-9]|total" "$S" | awk '!seen[$0]++' | tail -60
