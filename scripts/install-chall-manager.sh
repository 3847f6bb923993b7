#!/usr/bin/env bash
# Installs chall-manager v0.6.6's own binaries into .bin/, built from the Go module proxy
# through the tools/chall-manager module (about a minute cold on 2 cores):
#   .bin/chall-manager-cli      the ChallMakers' gRPC client (challenge/instance commands)
#   .bin/chall-manager-janitor  the upstream expiry job (gRPC)
#   .bin/chall-manager          the upstream server, for the benchmark that compares it with challfn
# Nothing is rebuilt when the stamp says the binaries come from the pinned version.
# `go install ...@v0.6.6` is refused (chall-manager's go.mod has replace directives); a module
# that requires it builds the same main packages. Its go.sum is committed, so the checksum
# database is only skipped (GONOSUMDB) for a go.sum refresh, never needed on a clean clone.
set -euo pipefail

CM_VERSION=v0.6.6
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.bin"
stamp="$bin/chall-manager.version"
mkdir -p "$bin"

if [[ -x $bin/chall-manager-cli && -x $bin/chall-manager-janitor && -x $bin/chall-manager &&
	-f $stamp && $(cat "$stamp") == "$CM_VERSION" ]]; then
	echo "chall-manager $CM_VERSION binaries already in $bin" >&2
	exit 0
fi

echo "building chall-manager $CM_VERSION (cli, janitor, server) into $bin" >&2
tmp="$(mktemp -d "$bin/.chall-manager.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(
	cd "$root/tools/chall-manager"
	GONOSUMDB=github.com/ctfer-io CGO_ENABLED=0 go build -trimpath -o "$tmp/" \
		-ldflags "-s -w -X main.Version=$CM_VERSION" \
		github.com/ctfer-io/chall-manager/cmd/chall-manager-cli \
		github.com/ctfer-io/chall-manager/cmd/chall-manager-janitor \
		github.com/ctfer-io/chall-manager/cmd/chall-manager
)
for b in chall-manager-cli chall-manager-janitor chall-manager; do
	mv -f "$tmp/$b" "$bin/$b"
done
echo "$CM_VERSION" >"$stamp"
echo "chall-manager $CM_VERSION built into $bin" >&2
