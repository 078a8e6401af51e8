#!/usr/bin/env bash
# Same-call A/B on a GPU machine: builds ab_base/ (A, from tools/ab_prepare.sh REV), the working
# tree (B) and, when present, ab_c/ and ab_d/ (more variants: tools/ab_prepare.sh REV ab_c, then
# patch it) with the same FLASHGEN_* selection, side by side (the cores split between them), into
# separate --target directories, then runs the same benchmark under each, alternating A, B, ...
# so that clock and thermal drift falls on all. Logs land in $OUT; the last lines compare the
# flashgen column of every row (median over the rounds) against A.
#   FLASHGEN_KERNELS=... BENCH_ARGS="--mode fwd --head-dims 128 --seqlens 2048,8192 --causal no" \
#     ROUNDS=2 tools/gpu_ab.sh
#   PRE_BENCH="python3 -m pytest -q tests/test_forward.py -x"   optional, run under B only
#   SKIP_BUILD=1     reuse the /tmp/ab_* builds of an earlier gpu_ab.sh in the same call (a second
#                    benchmark over the same kernels); TAG=name keeps its logs apart (bench_TAG_*)
#   AB_ENV="FLASHGEN_X=off FLASHGEN_X=auto"   no ab_base/: one build of the working tree, and the
#                    sides are these environment settings (space-separated, A first; a side's
#                    setting may join several with commas: "X=1,Y=2")
#   AB_SIDES="a b"   only these of the sides ab_base / tree / ab_c / ab_d (A and B always run)
#   AB_KEY_COLS=3 AB_VALUE_COLS=3   which table cells name a row and which are compared (0-based;
#                                   the fwd / bwd tables: hdim | seqlen | causal | flashgen; the
#                                   decode table: AB_KEY_COLS=2 AB_VALUE_COLS=2,3,5 for dense,
#                                   paged16 and fp8_paged16)
set -uo pipefail
. "$(dirname "$0")/objcache_env.sh"
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ROUNDS=${ROUNDS:-2}
BENCH_ARGS=${BENCH_ARGS:---mode fwd}
if compgen -G ".whl/nvidia_cutlass-*.whl" >/dev/null; then
  python3 -m pip install -q --no-deps --no-index .whl/nvidia_cutlass-*.whl || exit 1
fi
declare -A src=() env=() lib=()
sides=()
if [[ -n "${AB_ENV:-}" ]]; then  # one build, the sides differ by environment
  src[b]=.
  names=(a b c d)
  read -ra settings <<< "$AB_ENV"
  for i in "${!settings[@]}"; do
    sides+=("${names[$i]}")
    env[${names[$i]}]=${settings[$i]//,/ }
    lib[${names[$i]}]=/tmp/ab_b
  done
  builds=(b)
else
  [[ -d ab_base ]] || { echo "no ab_base/: run tools/ab_prepare.sh REV before the call (or set AB_ENV)"; exit 2; }
  src=([a]=ab_base [b]=.)
  sides=(a b)
  for extra in c d; do
    # AB_SIDES="a b" leaves out ab_c / ab_d where present (e.g. a second benchmark with SKIP_BUILD).
    [[ -n "${AB_SIDES:-}" && " $AB_SIDES " != *" $extra "* ]] && continue
    if [[ -d ab_$extra ]]; then src[$extra]=ab_$extra; sides+=("$extra"); fi
  done
  for s in "${sides[@]}"; do env[$s]=""; lib[$s]=/tmp/ab_$s; done
  builds=("${sides[@]}")
fi
jobs_per=$(( $(nproc) / ${#builds[@]} > 0 ? $(nproc) / ${#builds[@]} : 1 ))
build() {  # source dir, target dir, tag
  local start=$(date +%s)
  (cd "$1" && CMAKE_BUILD_PARALLEL_LEVEL=$jobs_per python3 -m pip install --no-build-isolation --no-deps \
     --target "$2" . > "$OUT/build_$3.log" 2>&1) || { echo "build $3 failed"; tail -30 "$OUT/build_$3.log"; return 1; }
  echo "build $3: $(( $(date +%s) - start )) s"
}
TAG=${TAG:+${TAG}_}
if [[ -z "${SKIP_BUILD:-}" ]]; then
  objcache_mark
  pids=()
  for s in "${builds[@]}"; do
    rm -rf "/tmp/ab_$s"
    build "${src[$s]}" "/tmp/ab_$s" "$s" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
  objcache_report
fi
if [[ -n "${OBJCACHE_FILL:-}" ]]; then  # the copies' build trees must not travel with them
  for s in "${builds[@]}"; do [[ "${src[$s]}" == . ]] || rm -rf "${src[$s]}/build"; done
  exit 0
fi
if [[ -n "${AB_ENV:-}" ]]; then
  echo "one build of the working tree; $(for s in "${sides[@]}"; do printf '%s = %s; ' "${s^^}" "${env[$s]}"; done)"
else
  echo "A = $(cat ab_base/AB_REVISION 2>/dev/null || echo ab_base), B = working tree$(for s in "${sides[@]:2}"; do
    printf ', %s = %s' "${s^^}" "$(cat "ab_$s/AB_REVISION" 2>/dev/null || echo "ab_$s")"; done)"
fi
if [[ -n "${PRE_BENCH:-}" ]]; then
  PYTHONPATH=/tmp/ab_b bash -c "$PRE_BENCH" > "$OUT/pre_bench.log" 2>&1
  echo "pre-bench (B): rc $? ($(grep -E "passed|failed|error" "$OUT/pre_bench.log" | tr '\n' ';'))"
fi
for ((i = 0; i < ROUNDS; ++i)); do
  for side in "${sides[@]}"; do
    # shellcheck disable=SC2086
    env ${env[$side]} PYTHONPATH=${lib[$side]} python3 -m flashgen.bench $BENCH_ARGS 2>&1 | awk '!seen[$0]++' \
      > "$OUT/bench_${TAG}${side}_$i.txt"
  done
done
python3 - "$OUT" "$ROUNDS" "${AB_KEY_COLS:-3}" "${AB_VALUE_COLS:-3}" "$TAG" "${sides[@]}" <<'PY'
import statistics, sys
out, rounds, key_cols, tag, sides = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[5], sys.argv[6:]
value_cols = [int(c) for c in sys.argv[4].split(",")]
def rows(path):
    table = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > max(value_cols) and cells[0].replace("x", "").isdigit():
            try:
                table[tuple(cells[:key_cols])] = ([float(cells[c]) for c in value_cols], cells[5] if len(cells) > 5 else "")
            except ValueError:
                pass
    return table
runs = {s: [rows(f"{out}/bench_{tag}{s}_{i}.txt") for i in range(rounds)] for s in sides}
others = sides[1:]
for v, col in enumerate(value_cols):
    print(f"column {col}: | key | A | " + " | ".join(f"{s.upper()} | {s.upper()} / A" for s in others)
          + (" | 6th column (A; " + "; ".join(s.upper() for s in others) + ") |" if len(value_cols) == 1 else " |"))
    print("| --- " * (3 + 2 * len(others) + (1 if len(value_cols) == 1 else 0)) + "|")
    for key in runs["a"][0]:
        med = {}
        for s in sides:
            vals = [t[key][0][v] for t in runs[s] if key in t]
            if vals:
                med[s] = statistics.median(vals)
        if "a" not in med:
            continue
        cells = [f"{med['a']:.3g}"]
        for s in others:
            cells += [f"{med[s]:.3g}", f"{med[s] / med['a']:.3f}"] if s in med else ["?", "?"]
        sixth = " | " + "; ".join(runs[s][0].get(key, ([], "?"))[1] for s in sides) if len(value_cols) == 1 else ""
        print(f"| {' / '.join(key)} | {' | '.join(cells)}{sixth} |")
PY
# The device returns at most 8 files: the logs and benchmark outputs go back as $OUT/logs.tgz
# (a caller that runs this twice, like gpu_fwd_ab.sh, sets AB_NO_PACK=1 and packs at its end).
[[ -n "${AB_NO_PACK:-}" ]] || OUT="$OUT" "$(dirname "$0")/pack_out.sh"
