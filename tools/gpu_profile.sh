#!/usr/bin/env bash
# ncu profiles of standard-sweep shapes (tools/profile_fwd.py, tools/profile_bwd.py), on a machine
# where flashgen is installed (run tools/gpu_check.sh with STEPS=build first). Logs land in $OUT.
#   CASES="2048:128:0 8192:128:0"   seqlen:head_dim:causal, one ncu run each; a fourth field
#                                   (block or tensor) profiles flashgen's FP8 forward with those
#                                   scales instead of its bf16 one (the peers stay bf16), e.g.
#                                   CASES="4096:256:0:tensor 16384:256:0:tensor" PEERS=0 for the
#                                   per-tile cost (instructions and time at 4k against 16k)
#   PEERS=1                         also the peers' kernels of each case: speed of light, stalls,
#                                   instruction counts, occupancy (FA2's and cuDNN's forward;
#                                   FA2's backward)
#   PEERS=full                      instead the first peer kernel (FA2's) profiled like ours: its
#                                   own stall table, and ours against it metric by metric
#                                   (tools/ncu_raw_compare.py: L1 / shared-memory wavefronts, bank
#                                   conflicts, instruction classes)
#   FLASHGEN_FWD_BACKEND=sm80       profile the SM80-path kernels instead of the sm90 ones
#   MODE=bwd                        the backward instead (FLASHGEN_BWD_BACKEND picks the family)
# Per case one file, <tag>.txt: flashgen's kernel's instructions with the most stall samples
# (tools/ncu_source_stalls.py), its ncu details page (speed of light, stalls, instruction mix)
# and the peers'; KEEP_REP=1 also keeps the .ncu-rep (the device tool returns only a few files),
# STALL_BY=lg ranks the instructions by another stall reason than MIO's (ncu_source_stalls.py),
# KEEP_CSV=1 the source-page exports (per-instruction stalls and counters, for
# tools/ncu_source_stalls.py CSV N REASON on this side).
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
CASES=${CASES:-"2048:128:0 8192:128:0"}
PEERS=${PEERS:-1}
MODE=${MODE:-fwd}
if [[ "$MODE" == bwd ]]; then
  script=tools/profile_bwd.py; ours='^bwd_kernel'; peers='flash_bwd_dq|cudnn|bprop|dgrad'; fa2='flash_bwd_dq'
  backend=${FLASHGEN_BWD_BACKEND:-auto}
else
  script=tools/profile_fwd.py; ours='^fwd_kernel'; peers='flash_fwd|cudnn|sdpa|fmha|fprop'; fa2='^flash_fwd_kernel'
  backend=${FLASHGEN_FWD_BACKEND:-auto}
fi

# profile REGEX NAME: the first launch matching REGEX under ncu's full set; its stall table, log
# and details page into $OUT/NAME.txt, the report in /tmp/NAME.ncu-rep.
profile() {
  ncu --set full --import-source no --kernel-name-base "${name_base:-function}" -k regex:"$1" -c 1 -o "/tmp/$2" -f \
    python3 $script "${args[@]}" > "/tmp/$2.log" 2>&1
  ncu -i "/tmp/$2.ncu-rep" --page source --csv --print-source sass > "/tmp/$2.source.csv" 2>/dev/null
  {
    echo "== $2: stall samples"; python3 tools/ncu_source_stalls.py "/tmp/$2.source.csv" 40 "${STALL_BY:-mio}" 2>&1
    echo "== $2: ncu's log"; cat "/tmp/$2.log"
    echo "== $2: details"; ncu -i "/tmp/$2.ncu-rep" --page details 2>&1
  } > "$OUT/$2.txt"
  echo "== $2"; sed -n 2,17p "$OUT/$2.txt"
  grep -E "Duration|Executed Instructions  |Compute \(SM\) Throughput" "$OUT/$2.txt" | head -3
}

for c in $CASES; do
  IFS=: read -r s d causal fp8 <<< "$c"
  tag="${MODE}_s${s}_d${d}_c${causal}_${backend}"
  if [[ "$MODE" == bwd ]]; then args=("$s" "$d"); [[ "$causal" == 1 ]] && args+=(causal); else args=("$s" "$d" "$causal"); fi
  name_base=function kernel=$ours
  if [[ -n "${fp8:-}" && "$MODE" == fwd ]]; then
    # The FP8 launch comes after the bf16 one: pick it by its template arguments.
    args+=("$fp8") tag+="_fp8$fp8" name_base=demangled kernel='fwd_kernel<.*float_e4m3'
  fi
  profile "$kernel" "$tag"
  if [[ "$PEERS" == full ]]; then
    profile "$fa2" "${tag}_fa2"
    { echo "== $tag against FA2, raw metrics"
      python3 tools/ncu_raw_compare.py "/tmp/$tag.ncu-rep" "/tmp/${tag}_fa2.ncu-rep"; } > "$OUT/${tag}_raw.txt" 2>&1
    head -40 "$OUT/${tag}_raw.txt"
  elif [[ "$PEERS" == 1 ]]; then
    # The first iteration's peer kernels (the regex skips the SDPA launches' small helpers).
    { echo "== $tag: peers"
      ncu --section SpeedOfLight --section WarpStateStats --section InstructionStats --section Occupancy \
        --section LaunchStats -k regex:"$peers" -c 2 \
        python3 $script "${args[@]}" 2>&1; } >> "$OUT/$tag.txt"
    sed -n '/: peers$/,$p' "$OUT/$tag.txt" | grep -E "^  [a-z_].*\(|Duration|Executed Instructions  |Compute \(SM\) Throughput" | head -12
  fi
  if [[ "${KEEP_REP:-0}" == 1 ]]; then cp /tmp/"$tag"*.ncu-rep "$OUT"/; fi
  if [[ "${KEEP_CSV:-0}" == 1 ]]; then for f in /tmp/"$tag"*.source.csv; do gzip -c "$f" > "$OUT/$(basename "$f").gz"; done; fi
  rm -f /tmp/"$tag"*.ncu-rep /tmp/"$tag"*.source.csv /tmp/"$tag"*.log
done
