#!/usr/bin/env bash
# ncu of the decode kernel for one "cache:batch:seqlen:splits" case (cache fp8 or bf16, pages of
# 16; tools/decode_one.py), under the flashgen that python3 imports (PYTHONPATH picks a build):
# speed of light, memory workload, occupancy, warp states, launch and scheduler stats, plus
# NCU_EXTRA sections. The whole page goes to FILE; its key lines (durations, throughputs,
# occupancy, issue rates, stalls) are printed after a "== TAG" header.
#   tools/decode_ncu.sh fp8:1:32768:0 $OUT/decode_fp8_1x32768.txt [TAG]
set -uo pipefail
case=${1:?usage: tools/decode_ncu.sh CACHE:BATCH:SEQLEN:SPLITS FILE [TAG]}
file=${2:?usage: tools/decode_ncu.sh CACHE:BATCH:SEQLEN:SPLITS FILE [TAG]}
IFS=: read -r kind batch seqlen splits <<< "$case"
cd "$(dirname "$0")/.."
timeout 120 ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
  --section LaunchStats --section SchedulerStats ${NCU_EXTRA:-} -k regex:"decode.*kernel" -s 2 -c 1 \
  python3 tools/decode_one.py "$kind" paged "$batch" "$seqlen" "$splits" > "$file" 2>&1
echo "== ${3:-decode_${kind}_${batch}x${seqlen}_s${splits}}"
grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Grid Size|Registers Per|Warp Cycles Per Issued|Issued Warp Per|No Eligible|Active Warps Per|Waves Per SM|L2 Hit|Mem Busy|Max Bandwidth|Dynamic Shared|Executed Ipc|Issue Slots Busy|Stall|Executed Instructions  " "$file"
