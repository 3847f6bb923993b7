#!/usr/bin/env bash
# Long runs of the interleaving test (e2e TestInterleavings): players,
# organisers (every mask and strategy, min/max, delete and re-create), janitor
# runs and kill -9 of function processes at random, then the invariants of
# docs/instances.md checked (records = stacks = counts, no unexplained 5xx,
# acknowledged operations visible, blue-green gives new identities). Each seed
# is reproducible; a failing one prints its violations.
#
# Usage: scripts/interleave.sh                  (5 random seeds × 600 operations)
#        SEEDS="7 42" OPS=2000 WORKERS=8 KILLS=6 scripts/interleave.sh
# The test command runs one small seed (the test's defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/install-pulumi.sh
export PATH="$root/.bin:$PATH"
export CHALLFN_PULUMI="$root/.bin/pulumi"
export PULUMI_SKIP_UPDATE_CHECK=true
seeds="${SEEDS:-$(for _ in 1 2 3 4 5; do echo $((RANDOM * 32768 + RANDOM)); done)}"
log="${INTERLEAVE_LOG:-/tmp/challfn-interleave.log}"
: >"$log"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
failed=0
for seed in $seeds; do
	if CHALLFN_INTERLEAVE_SEED=$seed CHALLFN_INTERLEAVE_OPS="${OPS:-600}" \
		CHALLFN_INTERLEAVE_WORKERS="${WORKERS:-6}" CHALLFN_INTERLEAVE_KILLS="${KILLS:-4}" \
		go test -count=1 -timeout 90m -run '^TestInterleavings$' -v ./e2e >>"$log" 2>&1; then
		echo "seed $seed: ok"
	else
		echo "seed $seed: FAILED"
		failed=$((failed + 1))
	fi
	grep -A12 "FIGURES interleave seed=$seed:" "$log" | grep -E 'FIGURES|n=|violation' || true
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); full log: $log"
exit $((failed > 0))
