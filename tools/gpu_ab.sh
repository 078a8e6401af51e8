#!/usr/bin/env bash
# Same-call A/B on a GPU machine: builds ab_base/ (A, from tools/ab_prepare.sh REV) and the working
# tree (B) with the same FLASHGEN_* selection, side by side (half the cores each), into separate
# --target directories, then runs the same benchmark under each, alternating A, B, A, B, ... so
# that clock and thermal drift falls on both. Logs land in $OUT; the last lines compare the
# flashgen column of every row (median over the rounds).
#   FLASHGEN_KERNELS=... BENCH_ARGS="--mode fwd --head-dims 128 --seqlens 2048,8192 --causal no" \
#     ROUNDS=2 tools/gpu_ab.sh
#   PRE_BENCH="python3 -m pytest -q tests/test_forward.py -x"   optional, run under B only
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ROUNDS=${ROUNDS:-2}
BENCH_ARGS=${BENCH_ARGS:---mode fwd}
[[ -d ab_base ]] || { echo "no ab_base/: run tools/ab_prepare.sh REV before the call"; exit 2; }
if compgen -G ".whl/nvidia_cutlass-*.whl" >/dev/null; then
  python3 -m pip install -q --no-deps --no-index .whl/nvidia_cutlass-*.whl || exit 1
fi
half=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
build() {  # source dir, target dir, tag
  local start=$(date +%s)
  (cd "$1" && CMAKE_BUILD_PARALLEL_LEVEL=$half python3 -m pip install --no-build-isolation --no-deps \
     --target "$2" . > "$OUT/build_$3.log" 2>&1) || { echo "build $3 failed"; tail -30 "$OUT/build_$3.log"; return 1; }
  echo "build $3: $(( $(date +%s) - start )) s"
}
rm -rf /tmp/ab_a /tmp/ab_b
build ab_base /tmp/ab_a a & pid_a=$!
build . /tmp/ab_b b & pid_b=$!
wait $pid_a || exit 1
wait $pid_b || exit 1
echo "A = $(cat ab_base/AB_REVISION 2>/dev/null || echo ab_base), B = working tree"
if [[ -n "${PRE_BENCH:-}" ]]; then
  PYTHONPATH=/tmp/ab_b bash -c "$PRE_BENCH" > "$OUT/pre_bench.log" 2>&1
  echo "pre-bench (B): rc $? ($(tail -1 "$OUT/pre_bench.log"))"
fi
for ((i = 0; i < ROUNDS; ++i)); do
  for side in a b; do
    # shellcheck disable=SC2086
    PYTHONPATH=/tmp/ab_$side python3 -m flashgen.bench $BENCH_ARGS 2>&1 | awk '!seen[$0]++' > "$OUT/bench_${side}_$i.txt"
  done
done
python3 - "$OUT" "$ROUNDS" <<'EOF'
import statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def rows(path):
    table = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0].replace("x", "").isdigit():
            try:
                table[tuple(cells[:3])] = (float(cells[3]), cells[5])
            except ValueError:
                pass
    return table
sides = {s: [rows(f"{out}/bench_{s}_{i}.txt") for i in range(rounds)] for s in "ab"}
print("| hdim | seqlen | causal | A | B | B / A | 6th column (A; B) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for key in sides["a"][0]:
    a = [t[key][0] for t in sides["a"] if key in t]
    b = [t[key][0] for t in sides["b"] if key in t]
    if not a or not b:
        continue
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {' | '.join(key)} | {ma:.0f} | {mb:.0f} | {mb / ma:.3f} | {sides['a'][0][key][1]}; "
          f"{sides['b'][0].get(key, ('', '?'))[1]} |")
EOF
