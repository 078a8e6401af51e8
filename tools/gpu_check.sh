#!/usr/bin/env bash
# Build, test and benchmark on a GPU machine in one go (the device tool's `run`, or any GPU
# box). Logs land in $OUT (default ./out; packed into logs.tgz at the end, bench.md beside
# it). Steps and kernel selection come from the environment:
#   STEPS="build test bench"   which steps to run (also: memcheck, compute-sanitizer over the
#                              pytest arguments MEMCHECK_ARGS, split on spaces; default: sm90
#                              forward tests at odd lengths, GQA, rows without keys, sinks)
#   FLASHGEN_*                 the build selection (default: this GPU, every default kernel)
#   PYTEST_ARGS, BENCH_ARGS    extra arguments; TEST_PATHS the test files or directories
#                              (default tests)
# Offline machines: carry the nvidia-cutlass wheel in .whl/ (see README).
set -uo pipefail
. "$(dirname "$0")/objcache_env.sh"
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
STEPS=${STEPS:-build test bench}

export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
status=0

[[ -n "${OBJCACHE_FILL:-}" ]] || nvidia-smi --query-gpu=name,compute_cap,driver_version,clocks.sm,memory.used --format=csv | tee "$OUT/gpu.txt"

if [[ " $STEPS " == *" build "* ]]; then
  if compgen -G ".whl/nvidia_cutlass-*.whl" >/dev/null; then
    python3 -m pip install -q --no-deps --no-index .whl/nvidia_cutlass-*.whl || exit 1
  fi
  start=$(date +%s)
  objcache_mark
  target=()
  [[ -n "${OBJCACHE_FILL:-}" ]] && target=(--target "$OUT/site")
  if ! python3 -m pip install --no-build-isolation --no-deps -v "${target[@]}" . >"$OUT/build.log" 2>&1; then
    grep -E "error|Error" "$OUT/build.log" | head -40
    tail -40 "$OUT/build.log"
    exit 1
  fi
  echo "build: $(( $(date +%s) - start )) s"
  objcache_report
  [[ -n "${OBJCACHE_FILL:-}" ]] && exit 0
  lib=$(python3 -c "import flashgen, pathlib; print(pathlib.Path(flashgen.__file__).parent / 'libflashgen.so')")
  for sass in HMMA HGMMA QGMMA; do
    echo "SASS $sass instructions: $(cuobjdump --dump-sass "$lib" | grep -c "$sass")"
  done | tee "$OUT/sass.txt"
  cuobjdump --dump-resource-usage "$lib" 2>/dev/null | grep -E "Function|REG" | paste - - | \
    sed -E 's/.*Function ([^ :]+).*REG:([0-9]+).*STACK:([0-9]+).*SHARED:([0-9]+).*/\1 REG=\2 STACK=\3 SHARED=\4/' \
    > "$OUT/resources.txt"
  head -30 "$OUT/resources.txt"
fi

if [[ " $STEPS " == *" test "* ]]; then
  python3 -m pytest ${TEST_PATHS:-tests} -q --maxfail=40 -rs ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/tests.log" | tail -40
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi

if [[ " $STEPS " == *" memcheck "* ]]; then
  if [[ -n "${MEMCHECK_ARGS:-}" ]]; then
    read -ra margs <<< "$MEMCHECK_ARGS"   # pytest arguments, split on spaces
  else
    margs=(tests/test_forward.py -k "sm90 and (sq113 or gqa or causal_rows or sinks)")
  fi
  compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x "${margs[@]}" > "$OUT/memcheck.log" 2>&1
  [[ $? -eq 0 ]] || status=1
  tail -3 "$OUT/memcheck.log"
fi

if [[ " $STEPS " == *" bench "* ]]; then
  python3 -m flashgen.bench --markdown "$OUT/bench.md" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -60
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi
# The device returns at most 8 files: a full run's logs go back as logs.tgz beside bench.md (a
# build-only run, as other scripts make it, leaves its few files to its caller).
[[ "${STEPS:-}" == build ]] || OUT="$OUT" "$(dirname "$0")/pack_out.sh" bench.md
exit $status
