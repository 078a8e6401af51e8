#!/usr/bin/env bash
# One device call (session 37): tools/gpu_pack_gqa.sh (build with the head-dim-64 causal kernel
# too, packed / sinks / keyless-row tests, GQA benchmark, memcheck), then tools/gqa_profile.py
# (where the batch-1 GQA call's time goes; packing where rows fill either way), then the
# standard sweep's 2k / 4k points at head dims 64 (causal, 192- against 128-row tiles) and 128.
#   tools/gpu_gqa_points.sh   (carry .whl; $OUT/summary.txt, prof.txt, points.txt, ...)
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export TEST_K="${TEST_K:-pack or packed or matches_dequantized or varlen or causal_rows or (sm90 and (gqa or split or sinks or agrees or sq113)) or override}"
EXTRA_KERNELS=fwd_sm90_bf16_hdim64_causal FLASHGEN_HEAD_DIMS="64;128" "$(dirname "$0")/gpu_pack_gqa.sh" > /dev/null 2>&1
cat "$OUT/summary.txt"
echo "host: $(/opt/gcc/bin/g++ -dumpfullversion 2>/dev/null) $(g++ -dumpfullversion 2>/dev/null) cmake $(cmake --version | head -1)"
P=$OUT/prof.txt
timeout 100 python3 "$(dirname "$0")/gqa_profile.py" > "$P" 2>&1
timeout 60 python3 "$(dirname "$0")/gqa_profile.py" --splits 0 --pack auto,on,off \
  --shapes 2x512x8192,8x128x4096,1x1000x32768,4x100x16384 >> "$P" 2>&1
cat "$P"
F=$OUT/points.txt
timeout 60 python3 -m flashgen.bench --mode fwd --head-dims 128 --seqlens 2048,4096 > "$F" 2>&1
for rows in tall short; do
  timeout 50 python3 -m flashgen.bench --mode fwd --head-dims 64 --seqlens 2048,4096 --causal yes --sm90-rows $rows >> "$F" 2>&1
done
grep -E "^\||rows|TFLOP" "$F" | head -40
