#!/usr/bin/env bash
# The Hopper backward's tail split on a GPU in one call (session 23): builds the sm90 backward
# and forward of head dims 64 / 128 (128 with dropout too), runs the sm90 backward tests and
# compute-sanitizer memcheck over the tail-split test, then a same-build A/B of the non-causal
# backward sweep with FLASHGEN_BWD_TAIL_SPLIT=off (A) against auto (B). Summary on stdout.
#   SEQLENS=2048,4096,8192,16384   ROUNDS=2   HEAD_DIMS=64,128
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export FLASHGEN_CUDA_ARCHS="90a" FLASHGEN_DTYPES=bf16 FLASHGEN_HEAD_DIMS=64,128 FLASHGEN_BWD_BACKEND=sm90
export FLASHGEN_KERNELS="bwd_sm90_bf16_hdim64,bwd_sm90_bf16_hdim128,bwd_sm90_bf16_hdim128_dropout,fwd_sm90_bf16_hdim64,fwd_sm90_bf16_hdim128,fwd_sm90_bf16_hdim128_dropout"
STEPS=build timeout 330 tools/gpu_check.sh > "$OUT/build_summary.txt" 2>&1 || { tail -30 "$OUT/build_summary.txt"; exit 1; }
grep -E "build:|bwd_kernel" "$OUT/build_summary.txt" | head -8
echo "== test_backward.py -k sm90"
timeout 150 python3 -m pytest -q tests/test_backward.py tests/test_tail_split.py -k "sm90 or plan or standard" 2>&1 | tail -4
echo "== memcheck over -k tail_split"
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x tests/test_backward.py \
  -k tail_split > "$OUT/memcheck.log" 2>&1
echo "memcheck rc $?: $(tail -1 "$OUT/memcheck.log")"
echo "== A/B: FLASHGEN_BWD_TAIL_SPLIT off (A) vs auto (B)"
AB_ENV="FLASHGEN_BWD_TAIL_SPLIT=off FLASHGEN_BWD_TAIL_SPLIT=auto" SKIP_BUILD=1 ROUNDS=${ROUNDS:-2} \
  BENCH_ARGS="--mode bwd --bwd-backend sm90 --head-dims ${HEAD_DIMS:-64,128} --seqlens ${SEQLENS:-2048,4096,8192,16384} --causal no" \
  timeout 400 bash -c 'mkdir -p /tmp/ab_b && python3 -c "import flashgen,os,shutil; p=os.path.dirname(flashgen.__file__); shutil.copytree(p, \"/tmp/ab_b/flashgen\", dirs_exist_ok=True)" && tools/gpu_ab.sh'
echo "== bench tables (B, round 0)"
grep -E "^\| (64|128) \|" "$OUT/bench_b_0.txt" 2>/dev/null | head -12
