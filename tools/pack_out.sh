#!/usr/bin/env bash
# The device tool returns at most 8 files from $OUT: pack every file under $OUT except those
# named (basenames, globs allowed) into $OUT/logs.tgz (logs_2.tgz, ... when packed again), and
# remove the packed ones.
#   tools/pack_out.sh summary.txt        (run last in a device script)
set -uo pipefail
OUT=${OUT:-$PWD/out}
[[ -d "$OUT" ]] || exit 0
list=$(mktemp)
(cd "$OUT" && find . -type f ! -name 'logs*.tgz' | sed 's|^\./||' | while read -r f; do
  keep=0
  for k in "$@"; do [[ "$(basename "$f")" == $k ]] && keep=1; done  # shellcheck disable=SC2053
  [[ $keep == 0 ]] && echo "$f"
done) > "$list"
if [[ -s "$list" ]]; then
  archive=logs.tgz n=1
  while [[ -e "$OUT/$archive" ]]; do n=$((n + 1)) archive=logs_$n.tgz; done
  tar czf "$OUT/$archive" -C "$OUT" -T "$list" && (cd "$OUT" && xargs -d '\n' rm -f < "$list")
  find "$OUT" -mindepth 1 -type d -empty -delete
fi
rm -f "$list"
