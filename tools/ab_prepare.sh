#!/usr/bin/env bash
# Puts git revision REV's tree in ab_base/ (git-excluded), the A side of tools/gpu_ab.sh, which
# builds it and the working tree (B) on the GPU machine in one call and benchmarks them in turn.
#   tools/ab_prepare.sh 01ac095      then run tools/gpu_ab.sh with carry ["ab_base", ".whl"]
# Remove ab_base/ afterwards (rm -rf ab_base).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: tools/ab_prepare.sh REV}
rm -rf ab_base
mkdir ab_base
git archive "$rev" | tar -x -C ab_base
git rev-parse --short "$rev" > ab_base/AB_REVISION
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/ab_base/' "$exclude" 2>/dev/null || echo '/ab_base/' >> "$exclude"
echo "ab_base/ holds $(cat ab_base/AB_REVISION); carry it (and .whl) to the GPU machine"
