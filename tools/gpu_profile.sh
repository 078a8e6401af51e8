#!/usr/bin/env bash
# ncu profiles of forward calls on standard-sweep shapes (tools/profile_fwd.py), on a machine
# where flashgen is installed (run tools/gpu_check.sh with STEPS=build first). Logs land in $OUT.
#   CASES="2048:128:0 8192:128:0"   seqlen:head_dim:causal, one ncu run each
#   PEERS=1                         also profile torch SDPA's FLASH and CUDNN kernels of each case
#   FLASHGEN_FWD_BACKEND=sm80       profile the SM80-path kernels instead of the sm90 ones
#   MODE=bwd                        the backward instead (tools/profile_bwd.py; FLASHGEN_BWD_BACKEND
#                                   picks the family; the peers are FA2's and cuDNN's backward)
# Per case one file, <tag>.txt: flashgen's kernel's instructions with the most stall samples
# (tools/ncu_source_stalls.py), its ncu details page (speed of light, stalls, instruction mix)
# and the peers'; KEEP_REP=1 also keeps the .ncu-rep (the device tool returns only a few files).
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
CASES=${CASES:-"2048:128:0 8192:128:0"}
PEERS=${PEERS:-1}
MODE=${MODE:-fwd}
if [[ "$MODE" == bwd ]]; then
  script=tools/profile_bwd.py; ours='^bwd_kernel'; peers='flash_bwd_dq|cudnn|bprop|dgrad'; backend=${FLASHGEN_BWD_BACKEND:-auto}
else
  script=tools/profile_fwd.py; ours='^fwd_kernel'; peers='flash_fwd|cudnn|sdpa|fmha|fprop'; backend=${FLASHGEN_FWD_BACKEND:-auto}
fi
for c in $CASES; do
  IFS=: read -r s d causal <<< "$c"
  tag="${MODE}_s${s}_d${d}_c${causal}_${backend}"
  if [[ "$MODE" == bwd ]]; then args=("$s" "$d"); [[ "$causal" == 1 ]] && args+=(causal); else args=("$s" "$d" "$causal"); fi
  # flashgen's kernel is the first launch named fwd_kernel (bwd_kernel); FA2's flash_fwd_kernel.
  ncu --set full --import-source no -k regex:"$ours" -c 1 -o "$OUT/$tag" -f \
    python3 $script "${args[@]}" > "$OUT/$tag.ncu.log" 2>&1
  ncu -i "$OUT/$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/$tag.source.csv" 2>/dev/null
  {
    echo "== $tag: stall samples"; python3 tools/ncu_source_stalls.py "$OUT/$tag.source.csv" 40 2>&1
    echo "== $tag: ncu's log"; cat "$OUT/$tag.ncu.log"
    echo "== $tag: details"; ncu -i "$OUT/$tag.ncu-rep" --page details 2>&1
  } > "$OUT/$tag.txt"
  rm -f "$OUT/$tag.source.csv" "$OUT/$tag.ncu.log"
  [[ "${KEEP_REP:-0}" == 1 ]] || rm -f "$OUT/$tag.ncu-rep"
  echo "== $tag"; sed -n 2,17p "$OUT/$tag.txt"
  grep -E "Duration|Executed Instructions  |Compute \(SM\) Throughput" "$OUT/$tag.txt" | head -6
  if [[ "$PEERS" == 1 ]]; then
    # The first iteration's peer kernels (the regex skips the SDPA launches' small helpers).
    { echo "== $tag: peers"
      ncu --section SpeedOfLight --section WarpStateStats --section InstructionStats --section Occupancy \
        --section LaunchStats -k regex:"$peers" -c 2 \
        python3 $script "${args[@]}" 2>&1; } >> "$OUT/$tag.txt"
    sed -n '/: peers$/,$p' "$OUT/$tag.txt" | grep -E "^  [a-z_].*\(|Duration|Executed Instructions  |Compute \(SM\) Throughput" | head -12
  fi
done
