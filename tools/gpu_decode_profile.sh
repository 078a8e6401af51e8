#!/usr/bin/env bash
# One device call on the decode split count (issue 7): builds the bf16 / e4m3 head-dim-128 decode
# kernels, sweeps split counts on the shapes in SHAPES for each cache in SPLIT_CACHES
# (tools/decode_splits.py), then profiles the decode kernel with ncu for each "cache:batch:seqlen:splits"
# in CASES (tools/decode_one.py; cache fp8 or bf16, pages of 16): speed of light, memory
# workload, occupancy, warp states, launch stats; and tools/decode_timeline.py (kernel time
# against the gaps between kernels, per call, in graphs of 16 calls and of one) for each shape
# in TIMELINE_SHAPES. Summary in $OUT/summary.txt, ncu pages in $OUT/logs.tgz.
#   SHAPES="8x8192,8x32768"   SPLITS="0,4,8,12,16"   CASES="fp8:8:32768:4 fp8:8:32768:12"
#   SPLIT_CACHES="" / CASES="" / TIMELINE_SHAPES=""   skip that part
#   NCU_EXTRA="--section ComputeWorkloadAnalysis --section SourceCounters"   more ncu sections
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
S=$OUT/summary.txt
export FLASHGEN_CUDA_ARCHS=90a FLASHGEN_DTYPES="bf16;e4m3" FLASHGEN_HEAD_DIMS=128 FLASHGEN_DIRECTIONS="fwd;decode"
export FLASHGEN_KERNELS="decode_sm80_bf16_hdim128,decode_sm80_e4m3_hdim128,fwd_sm80_bf16_hdim128"
STEPS=build timeout 300 tools/gpu_check.sh > "$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
grep -E "^build:" "$OUT/build.txt" | tee "$S"
for cache in ${SPLIT_CACHES-fp8_paged16 paged16}; do
  timeout 120 python3 tools/decode_splits.py --cache "$cache" --shapes "${SHAPES:-4x32768,8x8192,8x16384,8x32768,8x65536,16x32768}" \
    --splits "${SPLITS:-0,2,4,6,8,12,16,24}" >> "$S" 2>&1
done
if [[ -n "${TIMELINE_SHAPES-1x4096,8x8192}" ]]; then
  for layers in 16 1; do
    timeout 150 python3 tools/decode_timeline.py --shapes "${TIMELINE_SHAPES-1x4096,8x8192}" --layers $layers >> "$S" 2>&1
  done
fi
for c in ${CASES-fp8:8:32768:4 fp8:8:32768:12}; do
  IFS=: read -r kind batch seqlen splits <<< "$c"
  tools/decode_ncu.sh "$c" "$OUT/decode_${kind}_${batch}x${seqlen}_s${splits}.txt" >> "$S"
done
OUT="$OUT" tools/pack_out.sh summary.txt
cat "$S"
