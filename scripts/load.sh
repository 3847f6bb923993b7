#!/usr/bin/env bash
# The load run (reliability issue, item 5): players creating, retrieving,
# renewing and deleting instances concurrently across challenges with pools,
# two janitors firing every 10 s, two processes per function (the real
# function mains) behind an entry address that queues like Knative does.
# Everything runs on loopback. It fails on any 5xx, any lost or duplicated
# instance, or when records, backend stacks, the store's count and the
# `instances` gauge disagree at the end; the report (requests/s, p50/p99 per
# route, outcomes, accounting, peak RSS per process) is printed as LOAD lines.
#
# Usage: scripts/load.sh                 (200 players, 20 challenges, 5 minutes)
#        PLAYERS=50 CHALLENGES=8 DURATION=1m scripts/load.sh
# The test command runs the same test small (e2e TestLoad with its defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/install-pulumi.sh
scripts/install-providers.sh   # example-tcp: one real TCP service per instance
export PATH="$root/.bin:$PATH"
export CHALLFN_PULUMI="$root/.bin/pulumi"
export PULUMI_SKIP_UPDATE_CHECK=true
export CHALLFN_LOAD_PLAYERS="${PLAYERS:-200}"
export CHALLFN_LOAD_CHALLENGES="${CHALLENGES:-20}"
export CHALLFN_LOAD_DURATION="${DURATION:-5m}"
export CHALLFN_LOAD_JANITOR_EVERY="${JANITOR_EVERY:-10s}"

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
go test -count=1 -timeout 60m -run '^TestLoad$' -v ./e2e 2>&1 |
  grep -v -e 'parsing background event body' | tee "${LOAD_LOG:-/tmp/challfn-load.log}"
