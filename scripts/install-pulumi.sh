#!/usr/bin/env bash
# Installs the pinned Pulumi CLI, challfn's Go language host and challfn-sandbox (the
# supervisor of engine process trees and jail of scenario programs) into .bin/
# (docs/design.md, decision 7; docs/threat-model.md).
#
# .bin/pulumi is built from the tools/pulumi module (a few minutes cold) only when missing or
# not the pinned version. .bin/pulumi-language-go and .bin/challfn-sandbox are rebuilt every
# time: they are small and the Go build cache makes it cheap. The engine finds the language
# host next to its own executable, and shared/iac challfn-sandbox next to the engine, so all
# three must stay side by side. challfn-sandbox is static (CGO_ENABLED=0), as in the images.
set -euo pipefail

PULUMI_VERSION=v3.220.0
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.bin"
mkdir -p "$bin"

if [[ -x "$bin/pulumi" ]] && [[ "$(PULUMI_SKIP_UPDATE_CHECK=true "$bin/pulumi" version 2>/dev/null || true)" == "$PULUMI_VERSION" ]]; then
	echo "pulumi $PULUMI_VERSION already in $bin" >&2
else
	echo "building pulumi $PULUMI_VERSION into $bin (takes a few minutes cold)" >&2
	(
		cd "$root/tools/pulumi"
		go build -o "$bin/pulumi.tmp" \
			-ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
			github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
	)
	mv -f "$bin/pulumi.tmp" "$bin/pulumi"
fi

(
	cd "$root"
	go build -o "$bin/pulumi-language-go.tmp" ./cmd/pulumi-language-go
	CGO_ENABLED=0 go build -o "$bin/challfn-sandbox.tmp" ./cmd/challfn-sandbox
)
mv -f "$bin/pulumi-language-go.tmp" "$bin/pulumi-language-go"
mv -f "$bin/challfn-sandbox.tmp" "$bin/challfn-sandbox"
echo "pulumi-language-go and challfn-sandbox built into $bin" >&2
