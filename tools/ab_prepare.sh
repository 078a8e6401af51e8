#!/usr/bin/env bash
# Puts git revision REV's tree in DIR (default ab_base/, git-excluded), the A side of
# tools/gpu_ab.sh, which builds it and the working tree (B) on the GPU machine in one call and
# benchmarks them in turn. DIR ab_c or ab_d adds a third / fourth side (patch it after this).
#   tools/ab_prepare.sh 01ac095      then run tools/gpu_ab.sh with carry ["ab_base", ".whl"]
#   tools/ab_prepare.sh HEAD ab_c && git -C ab_c apply ... (carry "ab_c" as well)
# Remove the directories afterwards (rm -rf ab_base ab_c ab_d).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: tools/ab_prepare.sh REV [ab_base|ab_c|ab_d]}
dir=${2:-ab_base}
case "$dir" in ab_base | ab_c | ab_d) ;; *) echo "DIR must be ab_base, ab_c or ab_d"; exit 2 ;; esac
rm -rf "$dir"
mkdir "$dir"
git archive "$rev" | tar -x -C "$dir"
git rev-parse --short "$rev" > "$dir/AB_REVISION"
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx "/$dir/" "$exclude" 2>/dev/null || echo "/$dir/" >> "$exclude"
echo "$dir/ holds $(cat "$dir/AB_REVISION"); carry it (and .whl) to the GPU machine"
