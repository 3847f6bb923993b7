#!/usr/bin/env bash
# Figures of the containment of scenario programs (issues 11 and 15), measured with the
# real engine on this machine; nothing is asserted:
#   - the cost of the containment per create and destroy (supervisor + jail vs
#     SCENARIO_SANDBOX=off), median of 5;
#   - peak resident sets (function process, whole tree) with a quiet scenario and with
#     200 MiB of scenario output to stdout and to the engine's log;
#   - how long after kill -9 / SIGTERM of a function every process of its tree is gone.
# The machine's load is printed before and after: the figures are upper bounds on a
# shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-pulumi.sh
scripts/install-providers.sh
export PATH="$PWD/.bin:$PATH" PULUMI_SKIP_UPDATE_CHECK=true

echo "== load before: $(uptime)"
echo "== cost per create and destroy (median of 5)"
go test ./shared/iac -run '^$' -bench BenchmarkSandbox -benchtime=5x | grep -E '^Benchmark'
echo "== peak RSS, quiet vs 200 MiB of scenario output"
go test ./e2e -run '^$' -bench ChattyScenarioRSS -benchtime=1x | grep -E '^Benchmark'
echo "== processes gone after the function is killed during a create"
go test ./e2e -count=1 -run 'TestFaultNothingOutlives' -v | grep -E 'FIGURES' || true
echo "== load after: $(uptime)"
