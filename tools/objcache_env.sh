# Sourced by the GPU scripts before they build. Where .objcache/ exists beside tools/ (carried
# to the device: name ".objcache" in carry), nvcc runs through tools/objcache.py and objects
# compiled beforehand on a CPU machine are reused; the build log's tail says how many hit.
# OBJCACHE_FILL=1 (on the CPU machine, before the session's calls): the script only builds,
# into throwaway targets, to fill .objcache with the very compiles its device call will ask for:
#   OBJCACHE_FILL=1 tools/gpu_full_sweep.sh        (or gpu_fwd_ab.sh, gpu_ab.sh, gpu_check.sh)
_objcache_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# From a copy (ab_base/ run on its own), point at the main tree's cache first:
#   export FLASHGEN_OBJCACHE=$PWD/.objcache CMAKE_CUDA_COMPILER_LAUNCHER=$PWD/tools/objcache.py
if [[ -n "${OBJCACHE_FILL:-}" ]]; then
  [[ -n "${FLASHGEN_OBJCACHE:-}" ]] || mkdir -p "$_objcache_root/.objcache"
  export OUT=${OUT:-/tmp/objcache_fill} CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
  mkdir -p "$OUT"
fi
if [[ -d "$_objcache_root/.objcache" && -z "${FLASHGEN_OBJCACHE:-}" ]]; then
  export FLASHGEN_OBJCACHE="$_objcache_root/.objcache" CMAKE_CUDA_COMPILER_LAUNCHER="$_objcache_root/tools/objcache.py"
fi

objcache_mark() {  # remember where the cache's log ends before a build
  _objcache_from=$(wc -l 2>/dev/null < "${FLASHGEN_OBJCACHE:-/nonexistent}/log.txt" || echo 0)
}

objcache_report() {  # one line: hits and misses since objcache_mark; misses' keys go to $OUT
  [[ -n "${FLASHGEN_OBJCACHE:-}" && -f "$FLASHGEN_OBJCACHE/log.txt" ]] || return 0
  local new hits misses
  new=$(tail -n +"$(( ${_objcache_from:-0} + 1 ))" "$FLASHGEN_OBJCACHE/log.txt")
  hits=$(grep -c '^hit' <<< "$new")
  misses=$(grep '^miss' <<< "$new" | awk '{print $2}' | tr '\n' ' ')
  echo "objcache: $hits hit(s); missed: ${misses:-none}"
  if [[ -n "$misses" ]]; then  # what a miss on another machine most often comes down to
    echo "objcache: nvcc $(nvcc --version | grep -o 'V[0-9][0-9.]*'), cmake $(cmake --version | head -1 | grep -o '[0-9][0-9.]*'), $(python3 -c 'import lzma' 2>/dev/null && echo 'lzma ok' || echo 'NO lzma'), xz $(command -v xz || echo missing)"
  fi
  if [[ -n "$misses" && -n "${OUT:-}" ]]; then
    # One file back (the device returns at most 8): the misses' reports (their keys name the host
    # compiler's version, tools/objcache.py) and the cache's log.
    local d; d=$(mktemp -d)
    mkdir -p "$d/objcache_keys"
    grep '^miss' <<< "$new" | while read -r _ name key; do
      cp "$FLASHGEN_OBJCACHE/k/$key.json" "$d/objcache_keys/$name.json" 2>/dev/null
    done
    cp "$FLASHGEN_OBJCACHE/log.txt" "$d/objcache_keys/log.txt" 2>/dev/null
    tar czf "$OUT/objcache_keys.tgz" -C "$d" objcache_keys && rm -rf "$d"
  fi
}
