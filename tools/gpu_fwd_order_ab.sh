#!/usr/bin/env bash
# One device call (session 39): the sm90 forward's producer order, A/B in one trace build
# (-DFLASHGEN_FWD_TRACE=ON; FLASHGEN_FWD_TRACE_FLAGS=2 restores the order before session 39:
# the first K before Q, the next tile's atomic issued after the tile's last loads; 8 the output
# stored by the threads instead of TMA; BASE_FLAGS, default 10, is the side compared with 0).
# Builds the bf16 sm90 forward at head dims 64 and 128 (causal and not), runs the sm90 forward
# and varlen tests, the per-tile trace (tools/fwd_trace.py) under both orders, then the forward
# benchmark against FA2 / cuDNN, alternating B A B A (ROUNDS pairs).
#   tools/gpu_fwd_order_ab.sh   (carry .whl; $OUT/summary.txt, logs.tgz; trim with KERNELS=,
#   HEAD_DIMS=, SEQLENS=, TRACE_SHAPES=, TRACE_FLAGS=, ROUNDS=; the FP8 trace: DTYPES="bf16;e4m3"
#   KERNELS=...,fwd_sm90_e4m3_hdim128 TRACE_DTYPE=e4m3)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
S=$OUT/summary.txt
export FLASHGEN_CUDA_ARCHS=90a FLASHGEN_DTYPES="${DTYPES:-bf16}" FLASHGEN_HEAD_DIMS="64;128" FLASHGEN_DIRECTIONS=fwd
export FLASHGEN_KERNELS=${KERNELS:-fwd_sm90_bf16_hdim64,fwd_sm90_bf16_hdim64_causal,fwd_sm90_bf16_hdim128,fwd_sm90_bf16_hdim128_causal}
export CMAKE_ARGS="${CMAKE_ARGS:-} -DFLASHGEN_FWD_TRACE=ON"
STEPS=build timeout 300 tools/gpu_check.sh > "$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
{ grep -E "^build:" "$OUT/build.txt"; cat "$OUT/gpu.txt"; } > "$S"
timeout 180 python3 -m pytest -q -x tests/test_forward.py tests/test_varlen.py tests/test_args_cache.py -k "sm90" > "$OUT/tests.log" 2>&1
echo "tests rc $?: $(tail -1 "$OUT/tests.log")" >> "$S"
grep -E "FAILED|Error" "$OUT/tests.log" | head -10 >> "$S"
echo "== trace (flags: sm90_fwd_trace.hpp TraceFlag)" >> "$S"
timeout 150 python3 tools/fwd_trace.py --shapes "${TRACE_SHAPES:-2048:128:0,4096:128:0,2048:64:1}" --flags "${TRACE_FLAGS:-0,8,10}" \
  --dtype "${TRACE_DTYPE:-bf16}" >> "$S" 2>&1
for round in $(seq "${ROUNDS:-2}"); do
  for flags in 0 "${BASE_FLAGS:-10}"; do
    echo "== bench flags $flags round $round" >> "$S"
    FLASHGEN_FWD_TRACE_FLAGS=$flags timeout 120 python3 -m flashgen.bench --mode fwd --head-dims "${HEAD_DIMS:-64,128}" \
      --seqlens "${SEQLENS:-2048,4096}" --causal both >> "$S" 2>&1
  done
done
OUT="$OUT" tools/pack_out.sh summary.txt
cat "$S"
