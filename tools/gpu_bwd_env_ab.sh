#!/usr/bin/env bash
# A Hopper backward setting on a GPU in one call: builds the sm90 backward and forward of head
# dims 64 / 128 (128 with dropout and softcap too), runs the sm90 backward tests and
# compute-sanitizer memcheck over the tests named by MEMCHECK_K, then a same-build A/B of the
# non-causal backward sweep between two environment settings (AB_ENV, A first). Summary on stdout.
#   AB_ENV="FLASHGEN_BWD_PERSISTENT=off FLASHGEN_BWD_PERSISTENT=on"   (default: the tail split)
#   MEMCHECK_K=tail_split   SEQLENS=2048,4096,8192,16384   ROUNDS=2   HEAD_DIMS=64,128
#   KERNEL_TIMES="2048:128:0"   also tools/bwd_kernel_times.py --peer cudnn under each side
#   SKIP_TESTS=1            the A/B only
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
AB_ENV=${AB_ENV:-FLASHGEN_BWD_TAIL_SPLIT=off FLASHGEN_BWD_TAIL_SPLIT=auto}
export FLASHGEN_CUDA_ARCHS="90a" FLASHGEN_DTYPES=bf16 FLASHGEN_HEAD_DIMS=64,128 FLASHGEN_BWD_BACKEND=sm90
export FLASHGEN_KERNELS="bwd_sm90_bf16_hdim64,bwd_sm90_bf16_hdim128,bwd_sm90_bf16_hdim128_dropout,bwd_sm90_bf16_hdim128_softcap,fwd_sm90_bf16_hdim64,fwd_sm90_bf16_hdim128,fwd_sm90_bf16_hdim128_dropout,fwd_sm90_bf16_hdim128_softcap"
STEPS=build timeout 330 tools/gpu_check.sh > "$OUT/build_summary.txt" 2>&1 || { tail -30 "$OUT/build_summary.txt"; exit 1; }
grep -E "build:|bwd_kernel" "$OUT/build_summary.txt" | head -8
if [[ -z "${SKIP_TESTS:-}" ]]; then
  echo "== test_backward.py -k sm90"
  timeout 200 python3 -m pytest -q tests/test_backward.py tests/test_tail_split.py -k "sm90 or plan or standard" 2>&1 | tail -4
  echo "== memcheck over -k ${MEMCHECK_K:-tail_split}"
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x tests/test_backward.py \
    -k "${MEMCHECK_K:-tail_split}" > "$OUT/memcheck.log" 2>&1
  echo "memcheck rc $?: $(tail -1 "$OUT/memcheck.log")"
fi
if [[ -n "${KERNEL_TIMES:-}" ]]; then
  for setting in $AB_ENV; do
    echo "== kernel times, $setting"
    env ${setting//,/ } timeout 100 python3 tools/bwd_kernel_times.py --peer cudnn $KERNEL_TIMES 2>&1 | tail -12
  done
fi
echo "== A/B: $AB_ENV"
AB_ENV="$AB_ENV" SKIP_BUILD=1 ROUNDS=${ROUNDS:-2} \
  BENCH_ARGS="--mode bwd --bwd-backend sm90 --head-dims ${HEAD_DIMS:-64,128} --seqlens ${SEQLENS:-2048,4096,8192,16384} --causal no" \
  timeout 400 bash -c 'mkdir -p /tmp/ab_b && python3 -c "import flashgen,os,shutil; p=os.path.dirname(flashgen.__file__); shutil.copytree(p, \"/tmp/ab_b/flashgen\", dirs_exist_ok=True)" && tools/gpu_ab.sh'
echo "== bench tables (B, round 0)"
grep -E "^\| (64|128) \|" "$OUT/bench_b_0.txt" 2>/dev/null | head -12
