#!/usr/bin/env bash
# ncu profiles of forward calls on standard-sweep shapes (tools/profile_fwd.py), on a machine
# where flashgen is installed (run tools/gpu_check.sh with STEPS=build first). Logs land in $OUT.
#   CASES="2048:128:0 8192:128:0"   seqlen:head_dim:causal, one ncu run each
#   PEERS=1                         also profile torch SDPA's FLASH and CUDNN kernels of each case
#   FLASHGEN_FWD_BACKEND=sm80       profile the SM80-path kernels instead of the sm90 ones
# Per case: ours.csv (flashgen's kernel: instructions with the most stall samples, via
# tools/ncu_source_stalls.py) and details.txt (speed of light, stalls, instruction mix of each
# profiled kernel).
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
CASES=${CASES:-"2048:128:0 8192:128:0"}
PEERS=${PEERS:-1}
for c in $CASES; do
  IFS=: read -r s d causal <<< "$c"
  tag="s${s}_d${d}_c${causal}_${FLASHGEN_FWD_BACKEND:-auto}"
  # flashgen's kernel is the first launch named fwd_kernel; FA2's is flash_fwd_kernel.
  ncu --set full --import-source no -k regex:'^fwd_kernel' -c 1 -o "$OUT/$tag" -f \
    python3 tools/profile_fwd.py "$s" "$d" "$causal" > "$OUT/$tag.ncu.log" 2>&1
  ncu -i "$OUT/$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/$tag.source.csv" 2>/dev/null
  python3 tools/ncu_source_stalls.py "$OUT/$tag.source.csv" 40 > "$OUT/$tag.stalls.txt" 2>&1
  ncu -i "$OUT/$tag.ncu-rep" --page details > "$OUT/$tag.details.txt" 2>&1
  rm -f "$OUT/$tag.source.csv"
  echo "== $tag"; head -16 "$OUT/$tag.stalls.txt"
  grep -E "Duration|Executed Instructions  |Compute \(SM\) Throughput" "$OUT/$tag.details.txt" | head -6
  if [[ "$PEERS" == 1 ]]; then
    # The first iteration's peer kernels (the regex skips the SDPA launches' small helpers).
    ncu --section SpeedOfLight --section WarpStateStats --section InstructionStats --section Occupancy \
      --section LaunchStats -k regex:'flash_fwd|cudnn|sdpa|fmha|fprop' -c 2 \
      python3 tools/profile_fwd.py "$s" "$d" "$causal" > "$OUT/$tag.peers.txt" 2>&1
    grep -E "^  [a-z_].*\(|Duration|Executed Instructions  |Compute \(SM\) Throughput" "$OUT/$tag.peers.txt" | head -12
  fi
done
