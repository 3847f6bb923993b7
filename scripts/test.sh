#!/usr/bin/env bash
# Installs whatever the tests need and runs every test of the project.
# Usage: scripts/test.sh            (what CI runs through .ci/run)
#        scripts/test.sh -short     (extra flags go to `go test` of the main module)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# Tools the tests start for real: the Pulumi CLI and our Go language host, and
# the monitoring fixture (Jaeger, Prometheus) when its installer exists.
scripts/install-pulumi.sh
scripts/install-providers.sh
scripts/install-monitoring.sh
scripts/install-etcd.sh   # Debian etcd-server: the 3-member cluster of the fault tests
scripts/install-chall-manager.sh # chall-manager v0.6.6's CLI, janitor and server: the gRPC tests
# The end-to-end telemetry tests run against the real Jaeger and Prometheus.
export CHALLFN_E2E_MONITORING=1
export PATH="$root/.bin:$PATH"
export CHALLFN_PULUMI="$root/.bin/pulumi"
export PULUMI_SKIP_UPDATE_CHECK=true

echo "== go vet"
go vet ./...

echo "== go test (main module)"
go test -count=1 -timeout 45m "$@" ./...

echo "== fuzz (bounded; corpora kept under testdata/fuzz)"
scripts/fuzz.sh "${FUZZ_SECONDS:-3}"

echo "== function binaries as the images hold them (built and smoke-tested)"
scripts/build-images.sh --binaries-only

# Separate modules (kept apart so the functions' go.mod does not inherit them).
for mod in tools/validate tools/chall-manager providers/challfn-local; do
  if [[ -f $mod/go.mod ]]; then
    echo "== go test ($mod)"
    (cd "$mod" && go test -count=1 -timeout 20m ./...)
  fi
done
