#!/usr/bin/env bash
# Runs tools/bwd_sustained.py for each CASE while nvidia-smi samples the SM clock, the power draw
# and the active clock-event (throttle) reasons every PERIOD_MS, then prints, per contender, the
# clock and power over its window: is the GPU power- or thermally-limited under sustained
# backward calls, and does one contender run at a lower clock than another?
#   CASES="8192:256:0 4096:128:0" CALLS=200 tools/gpu_power_trace.sh    (after a build)
#   SUSTAINED_ARGS=--bench-timing   also each contender under the benchmark's own timer
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
CASES=${CASES:-8192:256:0}
CALLS=${CALLS:-200}
fields=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active
nvidia-smi --query-gpu=$fields --format=csv,noheader,nounits -c 1 >/dev/null 2>&1 ||
  fields=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active
for c in $CASES; do
  trace="$OUT/power_${c//:/_}.csv"
  nvidia-smi --query-gpu=$fields --format=csv,noheader,nounits -lms "${PERIOD_MS:-20}" > "$trace" 2>&1 &
  smi=$!
  sleep 1
  python3 tools/bwd_sustained.py "$c" --calls "$CALLS" --marks "$OUT/marks.txt" ${SUSTAINED_ARGS:-}
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  python3 - "$trace" "$OUT/marks.txt" <<'PY'
import datetime, statistics, sys
samples = []
for line in open(sys.argv[1]):
    cells = [x.strip() for x in line.split(",")]
    try:
        t = datetime.datetime.strptime(cells[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
        samples.append((t, float(cells[1]), float(cells[2]), float(cells[3]), cells[4]))
    except (ValueError, IndexError):
        continue
for line in open(sys.argv[2]):
    name, start, end = line.split()
    inside = [s for s in samples if float(start) <= s[0] <= float(end)]
    if not inside:
        print(f"  {name}: no samples in its window")
        continue
    clocks, power = [s[1] for s in inside], [s[2] for s in inside]
    reasons = sorted({s[4] for s in inside})
    print(f"  {name:8s} SM clock median {statistics.median(clocks):.0f} MHz (min {min(clocks):.0f}, max "
          f"{max(clocks):.0f}), power median {statistics.median(power):.0f} W (max {max(power):.0f}), "
          f"temp max {max(s[3] for s in inside):.0f} C, {len(inside)} samples, reasons {' '.join(reasons)}")
PY
done
