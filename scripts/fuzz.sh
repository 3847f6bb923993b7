#!/usr/bin/env bash
# Runs every fuzz target of the project for a bounded time and reports, per
# target, the executions and the corpus growth ("new interesting" inputs).
#
# Usage: scripts/fuzz.sh [seconds]   (default 10 per target)
#   FUZZ_KEEP=1   copy the inputs the fuzzer found (Go's fuzz cache) into the
#                 package's testdata/fuzz/<Target>/, where `go test` replays
#                 them as regression seeds (commit them to keep the corpus)
#   FUZZ_COVER=1  then report each package's statement coverage reached by
#                 replaying its targets' corpora (seeds + testdata/fuzz)
#   FUZZ_ONLY=re  run only the targets whose name matches re
#   FUZZ_MINIMIZE minimization budget of each new or failing input (default
#                 100x: a hundred tries; a time like 10s also works)
# A failing input is written to testdata/fuzz/<Target>/ by `go test` itself and
# makes this script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
only=${FUZZ_ONLY:-.}
cache=$(go env GOCACHE)/fuzz
module=$(go list -m)

# Every Fuzz* function of the main module, as "package-dir target".
mapfile -t targets < <(grep -rl --include='*_test.go' '^func Fuzz' shared functions cmd internal 2>/dev/null |
  xargs grep -H '^func Fuzz' | sed -E 's#^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+)\(.*#\1 \2#' | sort -u)

printf '%-18s %-36s %10s %8s %8s\n' package target execs new corpus
failed=0
declare -A pkgs
for t in "${targets[@]}"; do
  dir=${t% *} name=${t#* }
  [[ $name =~ $only ]] || continue
  pkgs[$dir]+="|^$name\$"
  log=$(mktemp)
  if ! go test -run='^$' -fuzz="^$name\$" -fuzztime="${secs}s" -fuzzminimizetime="${FUZZ_MINIMIZE:-100x}" "./$dir" >"$log" 2>&1; then
    failed=1
    echo "FAIL $dir $name"
    sed -n '1,60p' "$log"
  fi
  line=$(grep -E '^fuzz: elapsed' "$log" | tail -1 || true)
  execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$line")
  new=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$line")
  total=$(sed -nE 's/.*\(total: ([0-9]+)\).*/\1/p' <<<"$line")
  printf '%-18s %-36s %10s %8s %8s\n' "$dir" "$name" "${execs:-?}" "${new:-?}" "${total:-?}"
  rm -f "$log"
  if [[ ${FUZZ_KEEP:-0} == 1 && -d $cache/$module/$dir/$name ]]; then
    mkdir -p "$dir/testdata/fuzz/$name"
    cp -n "$cache/$module/$dir/$name"/* "$dir/testdata/fuzz/$name/" 2>/dev/null || true
  fi
done

if [[ ${FUZZ_COVER:-0} == 1 ]]; then
  echo
  for dir in "${!pkgs[@]}"; do
    cov=$(go test -count=1 -run="${pkgs[$dir]#|}" -cover "./$dir" 2>&1 | sed -nE 's/.*coverage: ([0-9.]+%).*/\1/p')
    printf 'corpus replay coverage of %-18s %s\n' "$dir" "${cov:-?}"
  done
fi
exit $failed
