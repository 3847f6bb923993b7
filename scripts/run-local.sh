#!/usr/bin/env bash
# Installs what is missing and runs challfn locally: embedded etcd (data in
# .run/), an in-process OCI registry with the example scenarios pushed, a
# file:// Pulumi backend, and the three functions behind one address
# (http://127.0.0.1:8080). Extra arguments go to cmd/challfn-local
# (e.g. --addr, --janitor-every, --monitoring).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

command -v go >/dev/null || { echo "Go 1.26+ is required (https://go.dev/dl/)" >&2; exit 1; }
scripts/install-pulumi.sh
scripts/install-providers.sh
if [[ " $* " == *" --monitoring "* ]]; then scripts/install-monitoring.sh; fi

export PATH="$root/.bin:$PATH"
export CHALLFN_PULUMI="$root/.bin/pulumi"
export PULUMI_SKIP_UPDATE_CHECK=true
go build -o .bin/challfn-local ./cmd/challfn-local
go build -o .bin/challfn-scenario ./cmd/challfn-scenario
exec .bin/challfn-local "$@"
