#!/usr/bin/env bash
# challfn vs chall-manager v0.6.6, side by side on this machine (issue 13): both on
# loopback with the same scenario, OCI registry, Pulumi CLI and language host, driven
# over the same REST contract, every operation interleaved (A B, then B A); nothing is
# asserted. chall-manager's server is built from the Go module proxy by
# scripts/install-chall-manager.sh (a tools module requiring v0.6.6).
#
# Usage: scripts/bench-vs-chall-manager.sh [runs]   (default 2 runs)
#        SIDE_BY_SIDE_N=50 sets the samples of the repeated calls (renew, retrieve, query).
# Prints, per run, the load average before and after and a table of p50, p99 and
# ratio challfn / chall-manager.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-pulumi.sh
scripts/install-providers.sh
scripts/install-chall-manager.sh
export PATH="$PWD/.bin:$PATH" CHALLFN_PULUMI="$PWD/.bin/pulumi" PULUMI_SKIP_UPDATE_CHECK=true

runs=${1:-2}
for run in $(seq 1 "$runs"); do
  echo "== run $run of $runs ($(nproc) CPUs, $(uptime))"
  # -v would print the scenario's logs; the table is the benchmark's log.
  go test ./e2e -count=1 -run '^$' -bench '^BenchmarkSideBySide$' -benchtime=1x -timeout 60m |
    sed -n '/side by side/,/^Benchmark\|^PASS\|^ok/p' | grep -v '^PASS\|^ok' | sed 's/^ *//'
done
